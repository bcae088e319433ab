"""`AblateConfig`: the ablation grid's axes and the per-cell base settings of train/ablate.py.

Kept apart from ablate.py so `ehrjudge ablate --help` reads it without importing torch or pandas.
"""

from __future__ import annotations

import dataclasses

from ehrjudge.config import option
from ehrjudge.scoring.config import ScoreConfig
from ehrjudge.train.config import TrainConfig

_SEED = ScoreConfig(definition="seed")
SEED_WEIGHTS = f"{_SEED.w_maha:g}/{_SEED.w_knn:g}"  # the seed score's own w_maha/w_knn: "0.85/0.15"
SWAPPED_WEIGHTS = f"{_SEED.w_knn:g}/{_SEED.w_maha:g}"


def _small_base() -> TrainConfig:
    return TrainConfig(max_steps=40, train_records=320, val_records=96, eval_every=20, checkpoint_every=1000,
                       tracking="none")


@dataclasses.dataclass
class AblateConfig:
    output_dir: str = option("runs/ablate", "where cells, re-scored datasets and the table go")
    base: TrainConfig = option(_small_base(), "settings shared by every cell (the per-cell budget lives here)")
    methods: list[str] = option(["expected", "reinforce", "grpo"], "trainers to compare")
    kl_coefs: list[float] = option([0.0, 0.01, 0.1], "KL weights beta")
    weights: list[str] = option([SEED_WEIGHTS, SWAPPED_WEIGHTS], "realism score weights w_maha/w_knn (of the seed "
                                                                 "score; default: ScoreConfig's and swapped)")
    rewards: list[str] = option(["quadratic", "absolute", "exact"], "reward shapes")
    advantages: list[str] = option(["raw", "batch_mean"], "advantages (reinforce: raw, batch_mean, normalized; "
                                                         "expected: raw, normalized; grpo has none)")
    record_formats: list[str] = option(["findings_dcr"], "record text formats (prompt.record_format)")
    max_cells: int = option(0, "run only the first N cells of the grid (0 = all)")
