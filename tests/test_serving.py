"""Serving a trained judge: merged weights that plain transformers loads, and `mlflow models serve` answering a real
scoring request over loopback with Judge.score's numbers."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ehrjudge import Judge
from ehrjudge.judge.artifact import read_info
from ehrjudge.judge.labels import LabelScorer
from ehrjudge.judge.prompt import build_prompt
from ehrjudge.judge.scoring import record_texts

pytestmark = pytest.mark.usefixtures("one_torch_thread")
# The server runs torch on its own thread count: matmul sums may then be reduced in another order, so its numbers
# can differ from this process's in the last bits (~1e-7 of a probability), never more.
ACROSS_PROCESSES = 1e-6


def test_merged_judge_loads_in_plain_transformers_with_the_same_scores(tiny_trained_judge, tmp_path):
    # Setup
    from transformers import AutoModelForCausalLM, AutoTokenizer

    judge = Judge.load(tiny_trained_judge / "run" / "best")
    records = pd.read_parquet(tiny_trained_judge / "dataset" / "test.parquet")
    expected = judge.score(records)
    # Run
    merged = judge.export_merged(tmp_path / "merged")
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged)
    # Assert: plain transformers (no peft, no ehrjudge loader) gives the judge's label probabilities
    assert not (merged / "adapter_config.json").exists() and read_info(merged)["weights"] == "merged"
    tokenizer.padding_side = "left"
    prompts = [build_prompt(text, tokenizer, judge.prompt)
               for text in record_texts(records, judge.schema, tokenizer, judge.prompt, judge.reference)]
    with torch.no_grad():
        probs = LabelScorer(tokenizer).log_probs(plain, prompts).exp().numpy()  # (n, 10)
    columns = [f"p_{k}" for k in range(1, 11)]
    np.testing.assert_allclose(probs, expected[columns].to_numpy(), atol=1e-5)
    # and it is a judge folder itself: same scores through Judge.load, calibration included
    again = Judge.load(merged).score(records)
    np.testing.assert_allclose(again["calibrated_score"], expected["calibrated_score"], atol=1e-4)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mlflow models serve exited with {server.returncode}:\n{server.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    raise AssertionError(f"no answer from {url} within {seconds} s")


def test_mlflow_models_serve_scores_records_over_http(tiny_trained_judge, tmp_path):
    # Setup: the judge as an MLflow model folder, served on a free loopback port by the real CLI
    from ehrjudge.judge.serving import save_judge_model

    judge_dir = tiny_trained_judge / "run" / "best"
    records = pd.read_parquet(tiny_trained_judge / "dataset" / "test.parquet")
    expected = Judge.load(judge_dir).score(records)
    model = save_judge_model(judge_dir, tmp_path / "mlflow-judge")
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(sys.path)}  # this checkout's ehrjudge; the test's $EHRJUDGE_CACHE
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model), "--env-manager",
                               "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", server, seconds=60)
        body = {"dataframe_split": records.drop(columns=["realism_score"]).to_dict(orient="split")}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        # Run
        with urllib.request.urlopen(request, timeout=60) as answer:
            served = pd.DataFrame(json.loads(answer.read())["predictions"])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    # Assert: the same columns, records and numbers as Judge.score in this process
    assert list(served.columns) == list(expected.columns)
    assert served["record_id"].tolist() == records["record_id"].tolist()
    assert (served["judge_score"].to_numpy() == expected["judge_score"].to_numpy()).all()
    numbers = [c for c in expected.columns if c not in ("record_id", "judge_score")]
    np.testing.assert_allclose(served[numbers].to_numpy(float), expected[numbers].to_numpy(float),
                               atol=ACROSS_PROCESSES)
