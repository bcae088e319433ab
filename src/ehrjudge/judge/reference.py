"""What a judge's record texts read of the reference cohort: its statistics, and for the `findings_dcr` text the
patients themselves (the reference patients, with the near-copy threshold fitted on held-out real patients at the
score setting the judge's dataset was labelled with, so the text shows exactly the ratio its labels' privacy cap
used). No judge folder stores patients: they come from cohort folders the user holds when judging."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.cohort.schema import Cohort
from ehrjudge.errors import InputError
from ehrjudge.judge.prompt import PATIENT_FORMAT, needs_patients
from ehrjudge.scoring.config import ScoreConfig, dataset_score_config
from ehrjudge.scoring.hardened.privacy import ClosestPatient
from ehrjudge.scoring.hardened.typicality import Typicality


def reference_for(reference_dir, record_format: str, holdout_dir=None,
                  score: ScoreConfig | None = None) -> ReferenceStats:
    """ReferenceStats of the cohort folder `reference_dir`, with its patients attached when `record_format` needs
    them; their held-out patients are `holdout_dir`, else the holdout/ beside a judge dataset's reference/, and the
    near-copy percentile is `score`'s, else that dataset's (config.yaml), else the default."""
    reference_dir = Path(reference_dir)
    if not needs_patients(record_format):
        return ReferenceStats.from_dir(reference_dir)
    if holdout_dir is None and reference_dir.name == "reference":
        holdout_dir = reference_dir.parent / "holdout"
    if holdout_dir is None or not (Path(holdout_dir) / "vectors.parquet").exists():
        raise InputError(f"record format '{record_format}' needs held-out real patients (a cohort folder, "
                         "--holdout), which calibrate the near-copy distance", file=holdout_dir or reference_dir)
    score = score or dataset_score_config(reference_dir) or ScoreConfig()
    return cohort_reference(Cohort.load(reference_dir), Cohort.load(holdout_dir), score)


def cohort_reference(reference: Cohort, holdout: Cohort, score: ScoreConfig) -> ReferenceStats:
    """Statistics of `reference` with its patients attached, fitted at the hardened score's `score` settings: a
    ClosestPatient (its near-copy threshold on `holdout`, as the privacy cap) and a Typicality (its scale, the
    median distance of `holdout`, as s_typicality)."""
    reference.schema.check_same(holdout.schema)
    matrix, held = reference.matrix(), holdout.matrix()
    patients = ClosestPatient(score.near_copy_percentile, score.chunk_size, score.near_copy_free_cells,
                              score.near_copy_linkage_percentile).fit(matrix, held)
    typicality = Typicality(score.covariance, score.chunk_size, score.mahalanobis_precision).fit(matrix, held)
    return dataclasses.replace(ReferenceStats.from_cohort(reference), patients=patients, typicality=typicality)


def dataset_reference(dataset, record_format: str | None) -> ReferenceStats:
    """reference_for a judge dataset folder (its reference/ and holdout/). `record_format` None, for callers that
    judge with several prompts: the patients attached whenever the dataset holds its held-out ones."""
    dataset = Path(dataset)
    if record_format is None:
        return reference_for(dataset / "reference", PATIENT_FORMAT if (dataset / "holdout").is_dir() else "findings")
    return reference_for(dataset / "reference", record_format)
