"""`ehrjudge run --profile quick` end to end through the real CLI, its cache, and the gate on its judge.

One module-scoped run (a few minutes on 2 cores) feeds every test here.
"""

import json
from pathlib import Path
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def feature_columns(run):
    """The patient-vector columns of a run's reference cohort (what the judge and the gate read)."""
    reference = pd.read_parquet(run / "dataset" / "reference" / "vectors.parquet")
    return reference, [c for c in reference.columns if c != "subject_id"]


def ehrjudge(*args, cwd, check=True):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-m", "ehrjudge.cli.__main__", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"ehrjudge {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    first = ehrjudge("run", "--profile", "quick", "--out", str(root / "run"), cwd=root)
    return root, first


def test_quick_run_writes_summary_and_report(quick_run):
    # Setup
    root, first = quick_run
    run = root / "run"
    # Run
    summary = json.loads((run / "summary.json").read_text())
    # Assert
    for split in ("test", "test_unseen"):
        for scorer in ("zero_shot", "trained", "formula", "regressor"):
            metrics = summary["splits"][split][scorer]
            assert set(metrics) >= {"pearson", "pearson_ci", "spearman", "spearman_ci", "mae", "within_1", "mean", "std",
                                    "records_per_second"}
            assert 1.0 <= metrics["mean"] <= 10.0 and 0.0 <= metrics["within_1"] <= 1.0
            assert metrics["records_per_second"] > 0
        assert summary["verifiable"][split]["records_per_second"] > 0
    # the formula needs no model: it scores orders of magnitude faster than the judge on the same records
    assert summary["splits"]["test"]["formula"]["records_per_second"] > 100 * summary["splits"]["test"]["trained"][
        "records_per_second"]
    assert summary["training"]["wall_seconds"] > 0 and summary["training"]["steps"] == 8
    # the calibrated row is there exactly when the training stage saved an (increasing) calibration with the judge
    assert ("trained_calibrated" in summary["splits"]["test"]) == (summary["calibration"] is not None)
    assert (summary["calibration"] is not None) == (run / "train" / "judge" / "calibration.json").exists()
    assert summary["config"]["train"]["max_steps"] == 8
    # the trained judge (LoRA on the top 4 of SmolLM2's 30 layers) ran only those, on the zero-shot pass's inputs
    judging = json.loads((run / "evaluation" / "judging.json").read_text())
    assert {split: judging[split]["from_layer"] for split in ("test", "test_unseen")} == {"test": 26,
                                                                                          "test_unseen": 26}
    # ... so its records/s is the whole model's, timed on a sample, not the faster pass from layer 26
    sample = judging["full_model"]
    assert sample["split"] == "test" and 0 < sample["records"] <= 64
    assert summary["splits"]["test"]["trained"]["records_per_second"] == pytest.approx(
        sample["records"] / sample["seconds"])
    page = (run / "report.html").read_text()
    assert "Zero-shot judge vs trained judge" in page and page.count("data:image/png;base64,") >= 4
    assert "<td>formula</td>" in page and "<td>regressor</td>" in page and "records/s" in page
    assert (run / "mlruns" / "mlflow.db").exists()
    assert "trained" in first.stdout and "report:" in first.stdout
    # the probes stage scored every probe with the hardened and seed scores and the trained judge, and the report shows it
    probes = {row["probe"]: row for row in json.loads((run / "probes" / "probes.json").read_text())["probes"]}
    assert {"exact_copy", "mean_patient", "all_zero", "holdout_real"} <= set(probes)
    assert all(1.0 <= row["judge_mean"] <= 10.0 for row in probes.values())
    # the judge reads the cap line (the training default): its capped score is reported beside it, never above it
    assert all(row["judge_capped_max"] <= row["judge_max"] for row in probes.values())
    assert probes["exact_copy"]["judge_capped_max"] <= 2.0
    capped, trained = (summary["splits"]["test"][name] for name in ("trained_capped", "trained"))
    assert capped["mean"] <= trained["mean"] and capped["records_per_second"] == trained["records_per_second"]
    assert probes["exact_copy"]["hardened_max"] <= 2.0 < probes["exact_copy"]["seed_mean"]
    assert "Reward probes" in page


def test_rerun_with_unchanged_inputs_skips_every_stage(quick_run):
    root, _ = quick_run
    again = ehrjudge("run", "--profile", "quick", "--out", str(root / "run"), cwd=root)
    stage_lines = [line.split() for line in again.stdout.splitlines() if line.startswith("  ")]
    assert [s[0] for s in stage_lines] == ["cohort", "dataset", "suite", "zero_shot", "train", "evaluation",
                                           "probes"]
    assert all(s[1] == "cached" for s in stage_lines)


def test_evaluation_on_saved_layer_inputs_equals_the_whole_trained_judge(quick_run):
    # Setup: the records the evaluation stage judged from the zero-shot pass's layer-26 inputs
    root, _ = quick_run
    run = root / "run"
    evaluated = pd.read_parquet(run / "evaluation" / "test.parquet")
    _, features = feature_columns(run)
    records = pd.read_parquet(run / "dataset" / "test.parquet").set_index("record_id").loc[evaluated["record_id"]]
    records.reset_index()[["record_id", *features]].to_parquet(root / "evaluated.parquet")
    # Run: `ehrjudge judge` runs the whole trained judge (all 30 layers) with the prompt saved beside it, in fp32 as
    # the evaluation stage does (precision auto would take bf16 matmuls on a CPU with native bf16)
    ehrjudge("judge", "--reference", str(run / "dataset" / "reference"), "--synthetic", str(root / "evaluated.parquet"),
             "--model", str(run / "train" / "judge"), "--out", str(root / "whole.csv"), "--precision", "float32",
             cwd=root)
    whole = pd.read_csv(root / "whole.csv", dtype={"record_id": str}).set_index("record_id").loc[evaluated["record_id"]]
    # Assert
    assert len(evaluated) > 0
    assert np.abs(whole["expected_score"].to_numpy() - evaluated["trained_expected"].to_numpy()).max() < 1e-4
    # the same argmax label, except that two labels tied to float rounding (two execution paths, other batches and
    # thread counts) may be picked either way: the evaluation's label must be one of the whole judge's top labels
    probabilities = whole[[f"p_{k}" for k in range(1, 11)]].to_numpy()
    picked = probabilities[np.arange(len(whole)), evaluated["trained_score"].to_numpy() - 1]
    assert (picked >= probabilities.max(axis=1) - 1e-5).all()
    tied = np.sort(probabilities, axis=1)[:, -1] - np.sort(probabilities, axis=1)[:, -2] < 1e-5
    assert (whole["judge_score"].to_numpy() == evaluated["trained_score"].to_numpy())[~tied].all()


def test_gate_accepts_good_and_refuses_copies(quick_run):
    # Setup: a good set (held-out real patients, less the few that sit as close to a reference patient as a copy
    # would: 5 % of the holdout by the threshold's definition, and a balanced test split favours their low labels)
    # and a bad one (exact copies of reference patients)
    root, _ = quick_run
    run = root / "run"
    test = pd.read_parquet(run / "dataset" / "test.parquet")
    reference, features = feature_columns(run)
    good = test[(test["generator"] == "holdout_real") & ~test["near_copy"]][["record_id", *features]]
    assert len(good) >= 5
    copies = reference.head(len(good)).rename(columns={"subject_id": "record_id"})[["record_id", *features]]
    good.to_parquet(root / "good.parquet")
    copies.to_parquet(root / "copies.parquet")
    judge = run / "train" / "judge"
    common = ["--judge", str(judge), "--registry-dir", str(root / "registry")]
    # Run
    accepted = ehrjudge("gate", *common, "--synthetic", str(root / "good.parquet"), "--name", "gen-good",
                        "--threshold", "1.0", cwd=root, check=False)
    copied = ehrjudge("gate", *common, "--synthetic", str(root / "copies.parquet"), "--name", "gen-copies",
                      "--threshold", "1.0", cwd=root, check=False)
    strict = ehrjudge("gate", *common, "--synthetic", str(root / "good.parquet"), "--name", "gen-good",
                      "--threshold", "10.0", cwd=root, check=False)
    on_calibrated = ehrjudge("gate", *common, "--synthetic", str(root / "good.parquet"), "--name", "gen-cal",
                             "--threshold", "1.0", "--score", "calibrated", cwd=root, check=False)
    # a labelled split (its score columns kept) on the capped score: gated on its records, the columns named
    labelled_copies = test[test["near_copy"]]
    assert len(labelled_copies) >= 1
    labelled_copies.to_parquet(root / "labelled_copies.parquet")
    labelled = ehrjudge("gate", *common, "--synthetic", str(root / "labelled_copies.parquet"), "--name", "gen-lab",
                        "--threshold", "1.0", "--score", "capped", cwd=root, check=False)
    # Assert
    if (judge / "calibration.json").exists():
        assert on_calibrated.returncode == 0 and "ACCEPTED" in on_calibrated.stdout
    else:  # no silent fallback to the expected score
        assert on_calibrated.returncode == 2 and "calibration.json" in on_calibrated.stdout + on_calibrated.stderr
    assert accepted.returncode == 0 and "ACCEPTED: registered gen-good version 1" in accepted.stdout
    assert "(capped;" in accepted.stdout  # score auto: a judge with a cap line is gated on its capped score
    assert copied.returncode == 1 and "near-copy rate" in copied.stdout and "REFUSED" in copied.stdout
    assert strict.returncode == 1 and "below the threshold" in strict.stdout
    assert labelled.returncode == 1 and "(capped;" in labelled.stdout and "near-copy rate" in labelled.stdout
    assert "ignoring" in labelled.stderr and "realism_score" in labelled.stderr


def test_no_real_patient_record_in_reports_or_logs(quick_run):
    # Setup: every real patient's record text, as the reports would render it (the run's prompt and tokenizer)
    import html

    from transformers import AutoTokenizer

    from ehrjudge.cohort.real_patients import dataset_patients, real_rows
    from ehrjudge.cohort.schema import Cohort
    from ehrjudge.config import config_from_dict
    from ehrjudge.judge.prompt import PromptConfig
    from ehrjudge.judge.reference import dataset_reference
    from ehrjudge.judge.scoring import record_texts

    root, first = quick_run
    run = root / "run"
    config = json.loads((run / "summary.json").read_text())["config"]
    prompt = config_from_dict(PromptConfig, config["train"]["prompt"])
    tokenizer = AutoTokenizer.from_pretrained(run / "train" / "judge")
    patients = Cohort.load(run / "cohort")
    reference = dataset_reference(run / "dataset", prompt.record_format)  # with the patients its text reads
    texts = record_texts(patients.vectors.drop(columns=["subject_id"]), patients.schema, tokenizer, prompt, reference)
    needles = {form for text in texts for form in (text, text[:400], html.escape(text[:400]), json.dumps(text)[1:-1])}
    # Run: the reports, summaries and logs of the run (the cohort/ and dataset/ folders are the data itself)
    outputs = {"stdout": first.stdout, "stderr": first.stderr}
    for path in run.rglob("*"):
        relative = path.relative_to(run).parts
        if path.is_file() and relative[0] not in ("cohort", "dataset") and path.suffix in (
                ".md", ".json", ".jsonl", ".html", ".csv", ".yaml", ".txt", ".log"):
            outputs[str(path.relative_to(run))] = path.read_text(errors="replace")
    # Assert
    assert "zero_shot/report/report.md" in outputs and "report.html" in outputs
    leaks = [(name, needle[:60]) for name, text in outputs.items() for needle in needles if needle in text]
    assert leaks == []
    # the needles are rendered as the report renders record texts: the synthetic excerpts are found this way
    listed = [row["record_id"] for row in json.loads(outputs["zero_shot/report/report.json"])["largest_disagreements"]]
    judged = pd.concat([pd.read_parquet(run / "dataset" / f"{s}.parquet") for s in ("test", "test_unseen")])
    judged = judged.set_index("record_id").loc[listed].reset_index()
    shown = record_texts(judged, patients.schema, tokenizer, prompt, reference)
    real = real_rows(judged, patients.schema.names, dataset_patients(run / "dataset"))
    assert len(shown) == 5 and (~real).any()
    assert all((text in outputs["zero_shot/report/report.md"]) != hidden for text, hidden in zip(shown, real))


def test_readme_python_example_runs_on_the_quick_run(quick_run, capsys):
    # Setup: the README's example with runs/default replaced by the quick run's folder
    import re

    root, _ = quick_run
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = re.search(r"## Python API\n\n```python\n(.*?)```", readme, re.S).group(1)
    namespace: dict = {}
    # Run
    with pd.option_context("display.width", 250, "display.max_columns", 20):  # a terminal wide enough to print all
        exec(example.replace("runs/default", str(root / "run")), namespace)
    # Assert: the verifiable score reproduces the dataset's labels; the judge equals the evaluation stage's pass
    records, truth, judged = namespace["records"], namespace["truth"], namespace["judged"]
    assert truth["record_id"].tolist() == records["record_id"].tolist() == judged["record_id"].tolist()
    assert (truth["realism_score"].to_numpy() == records["realism_score"].to_numpy()).all()
    evaluated = pd.read_parquet(root / "run" / "evaluation" / "test.parquet").set_index("record_id")
    shared = judged.set_index("record_id").loc[evaluated.index]
    # Judge.load's precision auto: fp32 (equal to float rounding) unless this CPU multiplies bf16 natively, where the
    # frozen MLPs run bf16 matmuls, within the drift limit of judge/precision.py (0.05 on the expected score)
    from ehrjudge.judge.precision import native_bf16

    np.testing.assert_allclose(shared["expected_score"], evaluated["trained_expected"],
                               atol=0.05 if native_bf16() else 1e-4)
    printed = capsys.readouterr().out
    assert "realism_score" in printed and "capped_score" in printed  # the quick run's judge reads the cap line
