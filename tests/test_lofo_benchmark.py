"""benchmarks/lofo.py's dataset cache: a dataset labelled under other settings (the score's included) is never
reused; nor is one built from another cohort."""

import dataclasses
import importlib.util
from pathlib import Path

from ehrjudge.scoring.config import ScoreConfig
from ehrjudge.synth.dataset import DatasetConfig

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "lofo.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("lofo_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cache_name_follows_every_setting_the_labels_depend_on():
    lofo = load_benchmark()
    config = DatasetConfig(size=6000, generators=["gaussian_copula", "smote"], unseen_generators=[],
                           unseen_fraction=0.0)
    name = lofo.cache_name(config)
    assert name == lofo.cache_name(dataclasses.replace(config))  # deterministic
    assert name.startswith(f"{lofo.DATASET_NAME}-2f-")
    other_score = dataclasses.replace(config, score=ScoreConfig(near_copy_free_cells=0))
    assert lofo.cache_name(other_score) != name
    assert lofo.cache_name(dataclasses.replace(config, size=5000)) != name
    assert lofo.cache_name(config, Path("some/other/cohort")) != name  # another cohort: another dataset
