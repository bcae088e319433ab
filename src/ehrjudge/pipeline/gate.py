"""Registry gate: a generator's output is registered only if the trained judge finds it realistic enough.

This is the original design's gatekeeping of generator checkpoints. The synthetic set is scored by
the judge (mean expected score must reach `threshold`) and by the verifiable scorer's near-copy flag
(the share of records that sit closer to a real patient than held-out real patients do must stay
under `max_near_copy_rate`: a generator that copies real records leaks privacy however realistic it
looks). An accepted set is logged to MLflow and registered as a new version of model `name`, a
pyfunc that samples records from it; a refused set is logged with the reasons and registers nothing.

A tuned generator (`ehrjudge tune-generator`'s generator/ folder) is gated on `records` completions sampled from
its checkpoint: the completions that do not parse count against it (`max_parse_failure_rate`), the parsed ones are
judged as a set would be, and an accepted checkpoint itself is registered (a pyfunc that samples new records),
not only the records it was judged on.

`register_judge` registers a trained judge folder the same way (pipeline/registry.py), as a pyfunc that scores
records (judge/serving.py).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ehrjudge.config import option, to_dict
from ehrjudge.errors import InputError
from ehrjudge.pipeline.registry import RegistryConfig, register_model

if TYPE_CHECKING:  # GateConfig is read to build `ehrjudge gate --help`, which imports nothing heavy
    import pandas as pd

log = logging.getLogger(__name__)


@dataclasses.dataclass
class GateConfig(RegistryConfig):
    """The gate's acceptance rule and scoring; where it logs and registers is RegistryConfig's (tracking_uri,
    registry_dir, experiment)."""

    threshold: float = option(6.0, "minimum mean judge score (1-10, see `score`) for acceptance")
    score: Literal["auto", "expected", "calibrated", "capped"] = option(
        "auto", "judge score the threshold applies to: auto (capped for a judge whose prompt has a score cap "
                "line, else expected), expected (E_pi[k]), calibrated (the judge's calibration.json, fitted on its "
                "validation split; an error if it has none) or capped (min(expected, the cap the judge's cap line "
                "states); an error for a judge without that line)")
    max_near_copy_rate: float = option(0.05, "maximum share of records flagged as near-copies of real patients")
    reference: str | None = option(None, "reference cohort dir for the near-copy check (default: the judge's dataset reference)")
    batch_size: int = option(16, "judge batch size")
    records: int = option(256, "completions sampled from a --generator checkpoint to gate it")
    seed: int = option(0, "sampling seed of a --generator checkpoint")
    max_parse_failure_rate: float = option(0.05, "maximum share of a --generator's completions that do not parse")


@dataclasses.dataclass
class GateDecision:
    accepted: bool
    reasons: list[str]
    mean_judge_score: float
    near_copy_rate: float
    n_records: int
    version: str | None = None  # registered model version when accepted
    parse_failure_rate: float = 0.0  # a tuned generator's completions that did not parse (0 for a record set)
    score: str = "expected"  # the judge score the threshold applied to (GateConfig.score, auto resolved)


def decide(mean_judge_score: float, near_copy_rate: float, config: GateConfig, n_records: int,
           parse_failure_rate: float = 0.0) -> GateDecision:
    """Pure decision rule, separate from scoring and registration so it can be tested by itself."""
    reasons = []
    if parse_failure_rate > config.max_parse_failure_rate:
        reasons.append(f"parse-failure rate {parse_failure_rate:.3f} exceeds the limit "
                       f"{config.max_parse_failure_rate:.3f}")
    if mean_judge_score < config.threshold:
        reasons.append(f"mean judge score {mean_judge_score:.2f} is below the threshold {config.threshold:.2f}")
    if near_copy_rate > config.max_near_copy_rate:
        reasons.append(f"near-copy rate {near_copy_rate:.3f} exceeds the limit {config.max_near_copy_rate:.3f}")
    return GateDecision(not reasons, reasons, mean_judge_score, near_copy_rate, n_records,
                        parse_failure_rate=parse_failure_rate)


def find_reference(judge_dir: Path, config: GateConfig) -> tuple[Path, Path | None]:
    """(reference, holdout) cohort dirs for the near-copy check: explicit, else the judge's dataset's.

    With the dataset's own held-out patients the near-copy threshold is calibrated exactly as the
    judge's training labels were; an explicit --reference calibrates on a split of itself. The judge folder
    records its dataset (judge/artifact.recorded_reference), a hint that no longer resolves once the folder is
    moved: then --reference is needed.
    """
    from ehrjudge.judge.artifact import recorded_reference

    if config.reference:
        return Path(config.reference), None
    return recorded_reference(judge_dir)


def score_synthetic(judge: str, synthetic: Path, config: GateConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Judge scores and verifiable scores (with near-copy flags) of every record in `synthetic`."""
    from ehrjudge.api import Judge
    from ehrjudge.cohort.schema import Cohort
    from ehrjudge.judge.artifact import holds_reference
    from ehrjudge.scoring.config import dataset_score_config
    from ehrjudge.scoring.realism import ScoreConfig, read_unscored_records, score_records

    judge_dir = Path(judge)
    reference_dir, holdout_dir = find_reference(judge_dir, config)
    reference = Cohort.load(reference_dir)
    holdout = Cohort.load(holdout_dir) if holdout_dir else None
    records, ignored = read_unscored_records(synthetic, reference.schema)
    if ignored:  # a labelled file (e.g. a judge dataset split): gated on its records, as `ehrjudge judge` does
        log.warning("gate: ignoring %d score column(s) of %s: %s", len(ignored), synthetic, ", ".join(ignored))
    if "record_id" not in records.columns:
        records.insert(0, "record_id", [f"record-{i}" for i in range(len(records))])
    # The judge's own prompt and statistics (it refuses a folder without its prompt); the reference given for the
    # near-copy check stands in for the statistics of an older folder that does not hold them. fp32, so that a
    # registration decision is the same on every machine.
    scorer = Judge.load(judge_dir, reference=None if holds_reference(judge_dir) else reference_dir,
                        batch_size=config.batch_size, precision="float32", holdout=holdout_dir)
    judged = scorer.score(records)
    verifiable = score_records(reference, records, dataset_score_config(reference_dir) or ScoreConfig(), holdout)
    return judged, verifiable


def register(decision: GateDecision, synthetic: Path, name: str, config: GateConfig, details: dict,
             generator: Path | None = None) -> GateDecision:
    """Log the decision to MLflow; if accepted, register a new model version: the tuned `generator` checkpoint
    when given (its pyfunc samples new records), else the synthetic set (its pyfunc resamples the set)."""
    import mlflow

    from ehrjudge.judge.serving import requirements
    from ehrjudge.pipeline.sampler import SyntheticSampler, TunedGeneratorModel
    from ehrjudge.tracking import setup_mlflow

    setup_mlflow(config.registry_dir, config.experiment, config.tracking_uri)
    with mlflow.start_run(run_name=f"gate-{name}") as run:
        mlflow.log_params({f"gate/{k}": v for k, v in to_dict(config).items() if v is not None})
        mlflow.log_metrics({"gate/mean_judge_score": decision.mean_judge_score,
                            "gate/near_copy_rate": decision.near_copy_rate,
                            "gate/n_records": decision.n_records,
                         "gate/parse_failure_rate": decision.parse_failure_rate,
                            "gate/accepted": float(decision.accepted)})
        mlflow.set_tags({"gate.name": name, "gate.accepted": str(decision.accepted),
                         "gate.reasons": "; ".join(decision.reasons) or "none"})
        mlflow.log_dict({**dataclasses.asdict(decision), **details}, "gate_decision.json")
        if not decision.accepted:
            return decision
        if generator is not None:
            version = register_model(generator, TunedGeneratorModel(), name, artifact_key="generator",
                                     logged_as="generator", tags={"gate.run_id": run.info.run_id},
                                     pip_requirements=requirements())
            return dataclasses.replace(decision, version=version)
        staging = Path(tempfile.mkdtemp(prefix="ehrjudge-gate-"))
        try:
            data = staging / synthetic.name
            shutil.copy2(synthetic, data)
            version = register_model(data, SyntheticSampler(), name, artifact_key="records", logged_as="generator",
                                     tags={"gate.run_id": run.info.run_id},
                                     pip_requirements=requirements(("ehrjudge", "pandas", "pyarrow")))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return dataclasses.replace(decision, version=version)


def register_judge(judge: str | Path, name: str, config: RegistryConfig) -> str:
    """Register a self-contained judge folder as a new version of MLflow model `name` (judge/serving.py's pyfunc:
    records in, scores out), with its base model, validation and held-out agreement on the run; returns the
    version."""
    import mlflow

    from ehrjudge.judge.artifact import FORMAT, read_info
    from ehrjudge.judge.prompt import needs_patients
    from ehrjudge.judge.serving import ARTIFACT, JudgeModel, requirements
    from ehrjudge.tracking import setup_mlflow

    judge = Path(judge)
    info = read_info(judge)
    if info.get("format") != FORMAT:
        raise InputError("only a self-contained judge folder can be registered (ehrjudge train and ehrjudge run "
                         "write one; this one depends on paths outside it)", file=judge)
    record_format = (info.get("prompt") or {}).get("record_format")
    if needs_patients(record_format or ""):
        raise InputError(f"a judge of the '{record_format}' text reads the reference patients when it judges, and a "
                         "served model carries none: register a judge trained with --prompt.record-format findings",
                         file=judge)
    setup_mlflow(config.registry_dir, config.experiment, config.tracking_uri)
    with mlflow.start_run(run_name=f"judge-{name}") as run:
        base = info["base_model"]
        mlflow.set_tags({"judge.base_model": base["id"], "judge.base_sha256": str(base.get("sha256")),
                         "judge.weights": info.get("weights", "adapter"),
                         "judge.checkpoint": str((info.get("training") or {}).get("checkpoint"))})
        mlflow.log_metrics(judge_metrics(info))
        mlflow.log_dict(info, "ehrjudge.json")
        return register_model(judge, JudgeModel(), name, artifact_key=ARTIFACT, logged_as="judge",
                              tags={"judge.run_id": run.info.run_id}, pip_requirements=requirements())


def judge_metrics(info: dict) -> dict[str, float]:
    """val/<metric> of the saved checkpoint and eval/<split>/<scorer>/<metric> of `ehrjudge run`, where recorded."""
    metrics = {f"val/{key}": float(value) for key, value in (info.get("validation") or {}).items()
               if key in ("spearman", "pearson", "mae") and value is not None}
    for split, scorers in ((info.get("evaluation") or {}).get("splits") or {}).items():
        for scorer, values in scorers.items():
            metrics.update({f"eval/{split}/{scorer}/{key}": float(values[key]) for key in ("spearman", "pearson", "mae")
                            if values.get(key) is not None})
    return metrics


def sample_generator(generator: Path, out: Path, config: GateConfig) -> float:
    """Sample `config.records` completions of a tuned generator checkpoint into OUT (parquet, parsed records);
    the share that did not parse."""
    from ehrjudge.generator.model import TunedGenerator
    from ehrjudge.io import write_parquet

    samples = TunedGenerator.load(generator).sample(config.records, seed=config.seed, name="gated")
    if samples.parsed.sum() == 0:
        raise InputError(f"none of the {config.records} sampled completions parses as a record "
                         f"(first reason: {samples.failures[0]})", file=generator)
    write_parquet(out, samples.records)
    return samples.failure_rate


def run_gate(judge: str, synthetic: str | None, name: str, config: GateConfig,
             generator: str | None = None) -> GateDecision:
    """Gate a record set (`synthetic`, parquet) or a tuned generator checkpoint (`generator`, a folder)."""
    if (synthetic is None) == (generator is None):
        raise InputError("gate takes one of --synthetic (records) or --generator (a tuned generator folder)")
    from ehrjudge.judge.calibration import saved_calibration

    calibration = saved_calibration(judge)  # before judging every record: a missing one fails at once
    if config.score == "calibrated" and calibration is None:
        raise InputError("score: calibrated, but the judge has no calibration.json", file=Path(judge))
    if config.score == "capped":
        from ehrjudge.judge.prompt import saved_prompt
        from ehrjudge.judge.scoring import reads_cap_line

        prompt = saved_prompt(judge)
        if prompt is None or not reads_cap_line(prompt):
            raise InputError("score: capped, but the judge's prompt shows no score cap line (prompt.show_caps)",
                             file=Path(judge))
    if generator is None:
        return _gate_records(judge, Path(synthetic), name, config, calibration)
    with tempfile.TemporaryDirectory(prefix="ehrjudge-gate-") as staging:
        records = Path(staging) / "sampled.parquet"
        failure_rate = sample_generator(Path(generator), records, config)
        return _gate_records(judge, records, name, config, calibration, Path(generator), failure_rate)


def _gate_records(judge: str, synthetic_path: Path, name: str, config: GateConfig, calibration,
                  generator: Path | None = None, parse_failure_rate: float = 0.0) -> GateDecision:
    judged, verifiable = score_synthetic(judge, synthetic_path, config)
    from ehrjudge.judge.scoring import judge_score

    calibrated = judge_score(judged, calibration) if calibration is not None else None
    capped = judged["capped_score"].to_numpy() if "capped_score" in judged else None
    score = config.score if config.score != "auto" else "capped" if capped is not None else "expected"
    mean_score = float({"expected": judged["expected_score"], "calibrated": calibrated,
                        "capped": capped}[score].mean())
    near_copy_rate = float(verifiable["near_copy"].mean())
    decision = dataclasses.replace(decide(mean_score, near_copy_rate, config, len(judged), parse_failure_rate),
                                   score=score)
    details = {"judge": str(judge), "synthetic": str(generator or synthetic_path),
               "mean_realism_score": float(verifiable["realism_score"].mean()), "score": score,
               "mean_expected_score": float(judged["expected_score"].mean()),
               "mean_calibrated_score": None if calibrated is None else float(calibrated.mean()),
               "mean_capped_score": None if capped is None else float(capped.mean())}
    return register(decision, synthetic_path, name, config, details, generator)
