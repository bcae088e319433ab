"""A judge prompt longer than the model's context is refused before any forward pass, naming the record's row and
the setting that bounds it (the 3,000-column csv text of benchmarks/scale.py is ~4x SmolLM2's 8,192)."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ehrjudge.cli import app
from ehrjudge.cohort.schema import Cohort, FeatureSpec, Schema
from ehrjudge.errors import InputError
from ehrjudge.judge.labels import LabelScorer
from ehrjudge.judge.scoring import check_context
from ehrjudge.judge.tiny import save_tiny_judge, smollm2_tokenizer

FEATURES = [FeatureSpec("gender", "demographics", "binary", "gender"),
            FeatureSpec("age", "demographics", "continuous", "age"),
            FeatureSpec("is_dead", "demographics", "binary", "died")]
FEATURES += [FeatureSpec(f"dx_d{j:02d}", "diagnoses", "count", f"Diagnosis {j}", code=f"D{j:02d}") for j in range(40)]


def records(n, seed, id_column):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.poisson(1.0, (n, len(FEATURES))).astype(float), columns=[f.name for f in FEATURES])
    frame["gender"] = rng.integers(0, 2, n).astype(float)
    frame.insert(0, id_column, [f"{id_column[0]}{i}" for i in range(n)])
    return frame


def test_prompt_over_the_context_is_refused_naming_row_and_setting(tmp_path, one_torch_thread):
    # Setup: a tiny judge whose context (256 positions) the csv table of 43 columns overruns untruncated
    model = save_tiny_judge(tmp_path / "tiny", seed=0)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 256}))
    Cohort(records(30, 0, "subject_id"), Schema(FEATURES, source="test")).save(tmp_path / "ref")
    records(5, 1, "record_id").to_parquet(tmp_path / "synthetic.parquet", index=False)
    common = ["judge", "--reference", str(tmp_path / "ref"), "--synthetic", str(tmp_path / "synthetic.parquet"),
              "--model", str(model), "--prompt.record-format", "csv"]
    # Run
    refused = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "full.csv"),
                                       "--prompt.max-record-tokens", "none"])
    budgeted = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "budget.csv"),
                                        "--prompt.max-record-tokens", "96"])
    # Assert
    assert isinstance(refused.exception, InputError)
    assert "over the model's context of 256" in str(refused.exception)
    assert "--prompt.max-record-tokens" in str(refused.exception) and "row " in str(refused.exception)
    assert not (tmp_path / "full.csv").exists()
    assert budgeted.exit_code == 0, budgeted.output


def test_check_context_counts_the_answer_positions():
    # Setup: SmolLM2's labels: "10" is two tokens, so the trie feeds 2 positions after the prompt
    scorer = LabelScorer(smollm2_tokenizer())
    depth = max(scorer.trie.node_depths)
    # Run / Assert: a prompt of context - depth tokens fits exactly; one more token does not, and names its row
    check_context([10, 100 - depth], 100, scorer)
    with pytest.raises(InputError, match="over the model's context of 100") as error:
        check_context([10, 20, 101 - depth], 100, scorer)
    assert error.value.row == 2
