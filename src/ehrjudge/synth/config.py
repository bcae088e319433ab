"""`DatasetConfig`: the judge dataset's settings, and the generator family names it is checked against.

Kept apart from dataset.py and generators.py so `--help` and the run config read them without numpy or scikit-learn.
"""

from __future__ import annotations

import dataclasses

from ehrjudge.config import option
from ehrjudge.errors import ConfigError
from ehrjudge.scoring.config import ScoreConfig

SPLITS = ("train", "val", "test", "test_unseen")  # a judge dataset's files: DATASET/<split>.parquet
# The names of synth.generators.GENERATORS, in its order (which fixes each family's seed); a test keeps them equal.
FAMILIES = ("gaussian_copula", "independent_marginals", "noisy_copy", "interpolation", "mode_collapse",
            "clinical_inconsistency", "sparsity_distortion", "holdout_real",
            "patient_splice", "independent_tables", "smote", "cooccurrence_shuffle", "isolated_defects",
            "memorized_copy")
# The judge dataset's default candidate pool: the first eight, and memorized_copy (graded copies, which teach the
# default findings_dcr judge what its closest-patient line means); the others are opt-in, each measured
# (docs/synth.md says why).
DEFAULT_POOL = ["gaussian_copula", "independent_marginals", "noisy_copy", "interpolation", "mode_collapse",
                "clinical_inconsistency", "sparsity_distortion", "holdout_real", "memorized_copy"]


@dataclasses.dataclass
class DatasetConfig:
    """Settings of `ehrjudge dataset`; every field is a `--key value` flag."""

    size: int = option(3000, "records over all four splits; train gets what val, test and test_unseen leave")
    val_fraction: float = option(0.0667, "share of `size` in val")
    test_fraction: float = option(0.1667, "share of `size` in test")
    unseen_fraction: float = option(0.1, "share of `size` in test_unseen (held-out families only)")
    holdout_fraction: float = option(0.2, "share of the real cohort's patients kept out of the reference "
                                          "(calibration and the holdout_real family)")
    generators: list[str] = option(list(DEFAULT_POOL), "generator families in the candidate pool")
    unseen_generators: list[str] = option(["interpolation", "sparsity_distortion"],
                                          "families that appear only in test_unseen")
    strengths: list[float] = option([0.0, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0], "strength grid of every family")
    pool_factor: float = option(3.0, "candidate pool size as a multiple of the records to select")
    top_up_rounds: int = option(3, "extra generation rounds aimed at score bins the pool lacks")
    min_bin_fraction: float = option(0.03, "every realism_score 1..10 should hold at least this share of train")
    near_duplicate_threshold: float = option(0.25, "records closer than this fraction of the reference's median "
                                                   "nearest-neighbour distance (standardized) form one group")
    seed: int = option(42, "seed of the holdout split, generators, selection and split assignment")
    score: ScoreConfig = option(ScoreConfig(), "realism score settings (see `ehrjudge score --help`)")

    def __post_init__(self):
        unknown = [g for g in [*self.generators, *self.unseen_generators] if g not in FAMILIES]
        checks = [
            (self.size >= 20, "size must be >= 20"),
            (all(0 <= f < 1 for f in (self.val_fraction, self.test_fraction, self.unseen_fraction)),
             "split fractions must lie in [0, 1)"),
            (self.val_fraction + self.test_fraction + self.unseen_fraction < 0.9, "train would get < 10%"),
            (0 < self.holdout_fraction < 0.9, "holdout_fraction must lie in (0, 0.9)"),
            (not unknown, f"unknown generators {unknown}; choose from {list(FAMILIES)}"),
            (set(self.unseen_generators) <= set(self.generators), "unseen_generators must be among generators"),
            (bool(set(self.generators) - set(self.unseen_generators)), "no family left for train/val/test"),
            (not self.unseen_fraction or bool(self.unseen_generators), "unseen_fraction > 0 needs unseen_generators"),
            (bool(self.strengths) and all(0 <= s <= 1 for s in self.strengths), "strengths must lie in [0, 1]"),
            (self.pool_factor >= 1, "pool_factor must be >= 1"),
            (0 <= self.min_bin_fraction <= 0.1, "min_bin_fraction must lie in [0, 0.1]"),
            (self.near_duplicate_threshold >= 0, "near_duplicate_threshold must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"DatasetConfig: {message}")

    def split_sizes(self) -> dict[str, int]:
        val, test = round(self.size * self.val_fraction), round(self.size * self.test_fraction)
        unseen = round(self.size * self.unseen_fraction)
        return {"train": self.size - val - test - unseen, "val": val, "test": test, "test_unseen": unseen}
