"""The HTML report: built from a small run folder, it has every section, and renders in Chromium."""

import json

import numpy as np
import pandas as pd
import pytest

from ehrjudge.pipeline.browser_check import find_chromium, inspect_report, screenshot
from ehrjudge.pipeline.report import render_report, write_report


def make_run(root):
    """A miniature run folder in the layout `ehrjudge run` writes (seeded random contents)."""
    rng = np.random.default_rng(0)
    (root / "cohort").mkdir(parents=True)
    features = [{"name": n, "group": g, "kind": k, "description": n, "code": None}
                for n, g, k in [("gender", "demographics", "binary"), ("age", "demographics", "continuous"),
                                ("dx_E11", "diagnoses", "count"), ("lab_K", "labs", "count")]]
    (root / "cohort" / "schema.json").write_text(json.dumps({"source": "test", "settings": {}, "features": features}))
    vectors = pd.DataFrame({"subject_id": range(20), "gender": rng.integers(0, 2, 20), "age": rng.uniform(20, 90, 20),
                            "dx_E11": rng.poisson(0.5, 20), "lab_K": rng.poisson(2, 20)}).astype(float)
    vectors.to_parquet(root / "cohort" / "vectors.parquet")
    (root / "dataset").mkdir()
    (root / "evaluation").mkdir()
    summary = {"splits": {}, "verifiable": {}, "training": {"wall_seconds": 90.0},
               "provenance": {"version": "0.1.0", "commit": "0123456789abcdef", "config_hash": "feedc0ffee123456"},
               "calibration": {"slope": 1.3, "intercept": -1.2, "n": 40, "fitted_on": "val (40 records) at step 15"}}
    for split in ("train", "val", "test", "test_unseen"):
        scores = rng.integers(1, 11, 40)
        frame = pd.DataFrame({"record_id": [f"{split}-{i}" for i in range(40)],
                              "generator": rng.choice(["copula", "noisy_copy"], 40),
                              "strength": rng.choice([0.0, 0.5], 40), "realism_score": scores})
        frame.to_parquet(root / "dataset" / f"{split}.parquet")
        if split.startswith("test"):
            trained = np.clip(scores + rng.integers(-1, 2, 40), 1, 10)
            frame.assign(trained_score=trained, trained_expected=trained + 0.1, zero_shot_score=5,
                         zero_shot_expected=5.2, formula_score=np.clip(scores + rng.normal(0, 0.7, 40), 1, 10),
                         regressor_score=trained, summary="record text").to_parquet(
                root / "evaluation" / f"{split}.parquet")
            metrics = {"mean": 5.0, "std": 2.0, "pearson": 0.9, "pearson_ci": [0.8, 0.95], "spearman": 0.88,
                       "spearman_ci": [0.8, 0.93], "mae": 0.6, "within_1": 0.9}
            summary["splits"][split] = {"zero_shot": {**metrics, "pearson": 0.01}, "trained": metrics,
                                        "trained_calibrated": {**metrics, "mean": 5.4},
                                        "formula": {**metrics, "records_per_second": 1234567.0},
                                        "regressor": {**metrics, "records_per_second": 45678.0}}
            summary["verifiable"][split] = {"mean": float(scores.mean()), "std": float(scores.std()),
                                            "records_per_second": 61234.5}
    (root / "summary.json").write_text(json.dumps(summary))
    (root / "suite").mkdir()
    (root / "suite" / "suite.json").write_text(json.dumps(
        {"copula": {"correlation_distance": {"value": 0.1, "goal": "minimize", "range": [0, 1]}},
         "noisy_copy": {"correlation_distance": {"value": 0.3, "goal": "minimize", "range": [0, 1]}}}))
    (root / "train").mkdir()
    (root / "train" / "metrics.jsonl").write_text("\n".join(json.dumps(
        {"step": s, "reward/expected": 0.5 + s / 100, "train/kl": 0.01 * s, **({"eval/spearman": s / 20} if s % 5 == 0 else {})})
        for s in range(1, 16)))
    return root


def test_report_has_every_section(tmp_path):
    # Setup
    run = make_run(tmp_path / "run")
    # Run
    page = render_report(run)
    # Assert
    for heading in ("Reference cohort", "Synthetic records and score histograms", "Dataset-level evaluation suite",
                    "Zero-shot judge vs trained judge", "Training curves", "Largest disagreements"):
        assert heading in page
    assert page.count("data:image/png;base64,") == 4  # histograms, 2 scatter+confusion grids, training curves
    assert "trained_calibrated" in page and "clip(1.300 &times; trained expected score -1.200, 1, 10)" in page
    assert "<td>formula</td>" in page and "<td>regressor</td>" in page and "records/s" in page
    assert "1,234,567.0" in page and "61,234.5" in page  # the formula's and the verifiable score's records/s
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "ehrjudge 0.1.0 · commit 0123456789abcdef · config feedc0ffee123456" in page  # what produced it
    assert "safety stop" not in page


def test_report_says_when_the_wall_cap_ended_training(tmp_path):
    # Setup
    run = make_run(tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    summary["training"].update({"wall_cap_fired": True, "steps": 143})
    (run / "summary.json").write_text(json.dumps(summary))
    # Run
    page = render_report(run)
    # Assert
    assert "max_wall_minutes safety stop at step 143" in page


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize(("method", "reward"), [("expected", "reward/expected"), ("grpo", "reward/sampled")])
def test_report_draws_the_logged_reward_curve_under_its_provenance(tmp_path, method, reward):
    # Setup: a real tiny training's metrics.jsonl (regression: the report looked for reward/mean, never logged) in
    # a run folder whose summary carries the real provenance of a default run config
    from ehrjudge.config import to_dict
    from ehrjudge.judge.tiny import tiny_judge
    from ehrjudge.pipeline.config import RunConfig
    from ehrjudge.pipeline.provenance import provenance
    from ehrjudge.train.config import TrainConfig
    from ehrjudge.train.loop import train
    from ehrjudge.train.tiny import TINY_PROMPT, tiny_dataset

    dataset = tiny_dataset(tmp_path / "data", n_train=8, n_eval=4, seed=0)
    config = TrainConfig(dataset=str(dataset), output_dir=str(tmp_path / "train"), method=method, tracking="none",
                         train_layers=1, lora_r=4, batch_size=4, max_steps=2, log_every=1, eval_every=2,
                         train_records=0, prompt=TINY_PROMPT)
    train(config, model_and_tokenizer=tiny_judge(seed=0), show_progress=False)
    run = make_run(tmp_path / "run")
    (run / "train" / "metrics.jsonl").write_bytes((tmp_path / "train" / "metrics.jsonl").read_bytes())
    made = provenance(to_dict(RunConfig()))
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "provenance": made}))
    # Run
    page = render_report(run)
    # Assert: the curves image names the logged reward first; the header names version, commit and config hash
    section = page[page.index("<h2>Training curves</h2>"):]
    assert section.startswith(f'<h2>Training curves</h2><img alt="training curves: {reward}, train/kl, '
                              'eval/spearman" src="data:image/png;base64,')
    assert (f"ehrjudge {made['version']} · commit {made['commit'] or 'unknown'} · config {made['config_hash']}"
            in page)


@pytest.mark.skipif(find_chromium() is None, reason="Debian's chromium is not installed")
def test_report_renders_in_chromium(tmp_path):
    # Setup
    run = make_run(tmp_path / "run")
    report = write_report(run)
    # Run
    seen = inspect_report(report)
    png = screenshot(report, tmp_path / "report.png", height=900)
    # Assert
    assert "ehrjudge run report" in seen["headings"] and "Training curves" in seen["headings"]
    assert seen["tables"] >= 5
    assert len(seen["images"]) == 4 and all(w > 100 and h > 100 for w, h in seen["images"])
    assert png.stat().st_size > 10_000
