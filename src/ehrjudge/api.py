"""The Python API: a trained judge and the verifiable realism score, each loaded once and scoring DataFrames.

    from ehrjudge import Judge, RealismScorer
    truth = RealismScorer.from_cohorts("runs/default/dataset/reference", "runs/default/dataset/holdout").score(records)
    judged = Judge.load("runs/default/judge").score(records)

`records` is a DataFrame with the reference schema's columns (and, optionally, record_id; other metadata or score
columns are ignored). A trained judge folder carries the prompt it was trained with, its schema, reference statistics
and calibration (judge/artifact.py); a folder without a saved prompt is refused unless `prompt=` is given, so no judge
silently scores with a prompt it never saw.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from ehrjudge.cohort.schema import Schema, schema_records
from ehrjudge.errors import InputError


@dataclasses.dataclass
class Judge:
    """A trained (or zero-shot) LLM judge with its prompt, reference statistics and calibration."""

    model: object
    tokenizer: object
    schema: Schema
    prompt: object  # judge.prompt.PromptConfig
    reference: object  # cohort.reference_stats.ReferenceStats
    calibration: object | None = None  # judge.calibration.Calibration
    batch_size: int = 8
    reuse_prefix: bool = True  # run the prompt prefix shared by all records once (judge.scoring.judge_prompts)
    folder: Path | None = None  # the judge folder it was loaded from

    @classmethod
    def load(cls, path, reference=None, prompt=None, device: str = "auto", dtype: str = "auto",
             batch_size: int = 8, precision: str = "float32", holdout=None) -> "Judge":
        """The judge in folder `path` (ehrjudge run's judge/, ehrjudge train's best/ or final/), with the prompt,
        schema, reference statistics and calibration saved in it (judge/artifact.py). `reference` (a reference
        cohort folder) is needed only by older folders that do not hold their statistics, and (with `holdout`, the
        held-out real patients' cohort folder) by a judge of the `findings_dcr` text, which reads the patients;
        `prompt` overrides the saved prompt, and a folder without one is refused. `precision` (judge/precision.py): float32 keeps every
        operation fp32; auto runs the frozen layers' MLP matmuls in bf16 on CPUs with native bf16 (logged), within
        the drift limit for a deviations judge, not for a findings judge (docs/judge.md)."""
        from ehrjudge.judge.artifact import read_judge
        from ehrjudge.judge.model import load_judge

        saved = read_judge(path, reference, prompt, holdout)  # every check before the weights load
        model, tokenizer = load_judge(str(path), device, dtype, precision=precision)
        return cls(model, tokenizer, saved.schema, saved.prompt, saved.reference, saved.calibration, batch_size,
                   folder=Path(path))

    def score(self, records: pd.DataFrame) -> pd.DataFrame:
        """One row per record, in input order: record_id, judge_score (argmax label), expected_score (sum k p_k),
        capped_score (a judge reading the cap line: min(expected_score, that cap), its score: to reward, rank and gate
        with; a judge trained with reward_after_caps, the default, leaves capping to it),
        calibrated_score (when the judge saved a calibration), entropy (nats), p_1..p_10."""
        from ehrjudge.judge.scoring import judge_records, with_calibrated_score

        frame = schema_records(records, self.schema)
        scores = judge_records(self.model, self.tokenizer, frame, self.schema, self.prompt, self.batch_size,
                               self.reuse_prefix, reference=self.reference)
        return with_calibrated_score(scores, self.calibration)

    def export_merged(self, out) -> Path:
        """Write the judge with its adapter merged into the base weights to `out`: loadable by plain transformers
        (AutoModelForCausalLM.from_pretrained) and by Judge.load."""
        from ehrjudge.judge.artifact import export_merged

        if self.folder is None:
            raise InputError("export_merged needs a judge loaded from a folder (Judge.load)")
        return export_merged(self.folder, out)
