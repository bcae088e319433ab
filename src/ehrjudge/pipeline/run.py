"""`ehrjudge run`: cohort -> dataset -> evaluation suite -> zero-shot judge -> RLVR training -> evaluation -> report.

Each stage writes one folder of the run directory atomically and is skipped when its settings and
the outputs it reads are unchanged (see stages.py). Training checkpoints live in `.work/train` until
the stage finishes, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ehrjudge.config import to_dict
from ehrjudge.errors import InputError
from ehrjudge.io import atomic_dir, write_csv, write_json, write_parquet, write_text
from ehrjudge.pipeline.config import RunConfig, run_settings
from ehrjudge.pipeline.provenance import provenance
from ehrjudge.pipeline.stages import StageRunner

log = logging.getLogger(__name__)
STAGES = ("cohort", "dataset", "suite", "zero_shot", "train", "evaluation", "probes")
EVAL_SPLITS = ("test", "test_unseen")
LAYER_INPUTS = "layer_inputs.pt"  # the zero-shot pass's inputs of the first trained layer (judge.layer_inputs)
FULL_MODEL_SAMPLE = 64  # records of the first split the evaluation stage also judges through the whole model (timing)


def source_fingerprint(path: str | None) -> str | None:
    """Content key of a user-supplied source folder: every file's relative path, size and mtime."""
    if path is None:
        return None
    root = Path(path)
    if not root.exists():
        raise InputError("cohort source path not found", file=root)
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(root.parent)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def build_cohort_stage(cfg: RunConfig, out: Path) -> None:
    from ehrjudge.cohort.build import build_cohort

    c = cfg.cohort
    build_cohort(c.source, out, Path(c.path) if c.path else None, c.patients, c.seed, c.features)


def build_dataset_stage(cfg: RunConfig, cohort_dir: Path, out: Path) -> None:
    from ehrjudge.synth.dataset import build_dataset

    build_dataset(cohort_dir, out, cfg.dataset_config())


def holdout_cohort(dataset: Path):
    """The real patients kept out of the reference, which calibrated the dataset's scores."""
    from ehrjudge.cohort.schema import Cohort

    return Cohort.load(dataset / "holdout")


def build_suite_stage(cfg: RunConfig, dataset: Path, out: Path) -> None:
    from ehrjudge.cohort.schema import Cohort
    from ehrjudge.errors import EhrJudgeError
    from ehrjudge.scoring.suite import evaluate

    reference, holdout = Cohort.load(dataset / "reference"), holdout_cohort(dataset)
    records = pd.concat([pd.read_parquet(dataset / f"{s}.parquet") for s in EVAL_SPLITS], ignore_index=True)
    table = {}
    for generator, group in records.groupby("generator", sort=True):
        sample = group.sample(n=min(len(group), cfg.suite_records), random_state=0)
        sample = sample[["record_id", *reference.schema.names]]  # the suite reads features, not our score columns
        try:
            report = evaluate(reference, sample, holdout, cfg.suite_config())
        except EhrJudgeError as exc:  # recorded, not hidden: the report shows the reason in place of values
            log.warning("suite on %s failed: %s", generator, exc)
            table[generator] = {"error": {"error": str(exc)}}
            continue
        write_json(out / f"{generator}.json", report)
        table[generator] = {m["name"]: ({"value": m["value"], "goal": m["goal"], "range": m["range"]}
                                        if m.get("value") is not None else
                                        {"error": m.get("reason"), "goal": m["goal"], "range": m["range"]})
                            for m in report["metrics"]}
    write_json(out / "suite.json", table)


def _judge_config(cfg: RunConfig, model: str | None, batch_size: int):
    return dataclasses.replace(cfg.baseline.judge, model=model, prompt=cfg.train.prompt, batch_size=batch_size)


def build_zero_shot_stage(cfg: RunConfig, dataset: Path, out: Path) -> None:
    """One zero-shot baseline report over test + test_unseen together (798 records on the default dataset, the
    >= 500 the baseline report is meant for), then each split's rows in SPLIT/judge_scores.csv.

    When training adapts only the top `train_layers` layers, the pass also keeps the input of the first of them
    (LAYER_INPUTS), so that the evaluation stage runs only those layers for the trained judge.
    """
    from ehrjudge.judge.baseline import run_baseline
    from ehrjudge.judge.layer_inputs import LayerCapture

    baseline = dataclasses.replace(cfg.baseline, split="+".join(EVAL_SPLITS),
                                   judge=_judge_config(cfg, cfg.train.model, cfg.baseline.judge.batch_size))
    capture = LayerCapture(-cfg.train.train_layers) if cfg.train.train_layers > 0 else None
    run_baseline(dataset, out / "report", baseline, capture)
    if capture is not None:
        capture.result.save(out / LAYER_INPUTS)
    scores = pd.read_csv(out / "report" / "judge_scores.csv", dtype={"record_id": str})
    for split in EVAL_SPLITS:
        ids = pd.read_parquet(dataset / f"{split}.parquet", columns=["record_id"])["record_id"].astype(str)
        (out / split).mkdir(parents=True, exist_ok=True)
        write_csv(out / split / "judge_scores.csv", scores[scores["record_id"].isin(ids)], float_format="%.10g")


def build_train_stage(cfg: RunConfig, dataset: Path, work: Path, out: Path) -> None:
    from ehrjudge.judge.artifact import training_data, update_judge
    from ehrjudge.tracking import STORE_DIR, resolve_tracking_uri, tracking_store
    from ehrjudge.train.loop import train

    train_cfg = dataclasses.replace(cfg.train, dataset=str(dataset), output_dir=str(work),
                                    tracking=cfg.train.tracking if cfg.tracking != "none" else "none")
    resume = any((work / "checkpoints").glob("step-*")) if (work / "checkpoints").exists() else False
    if resume:
        log.info("resuming training from %s", work / "checkpoints")
    # Training metrics go to the run's own MLflow store; `tracking: none` keeps training from tracking at all.
    store = (contextlib.nullcontext() if cfg.tracking == "none" else
             tracking_store(resolve_tracking_uri(work.parent.parent / STORE_DIR, cfg.tracking_uri)))
    with store:
        summary = train(train_cfg, resume=resume)
    chosen = work / "best" if (work / "best").exists() else work / "final"
    shutil.copytree(chosen, out / "judge")  # self-contained (judge/artifact.py); only its dataset hint moves
    update_judge(out / "judge", training_data=training_data(dataset, out / "judge"))
    for name in ("summary.json", "metrics.jsonl", "config.yaml"):
        if (work / name).exists():
            shutil.copy2(work / name, out / name)
    write_json(out / "summary.json", summary)


def build_evaluation_stage(cfg: RunConfig, dataset: Path, zero_shot: Path, judge_dir: Path, out: Path) -> None:
    from ehrjudge.cohort.real_patients import dataset_patients, real_rows, withhold
    from ehrjudge.cohort.schema import Schema
    from ehrjudge.judge.calibration import saved_calibration
    from ehrjudge.judge.layer_inputs import LayerInputs
    from ehrjudge.judge.model import load_judge
    from ehrjudge.judge.prompt import build_prompt
    from ehrjudge.judge.reference import dataset_reference
    from ehrjudge.judge.scoring import (judge_from_layer_inputs, judge_prompts, record_caps, record_texts,
                                        summarize_distribution)

    splits = {}
    for split in EVAL_SPLITS:  # checked before any model is loaded
        records = pd.read_parquet(dataset / f"{split}.parquet")
        zero = pd.read_csv(zero_shot / split / "judge_scores.csv", dtype={"record_id": str})
        records = records[records["record_id"].isin(zero["record_id"])].reset_index(drop=True)
        if len(records) == 0:
            raise InputError(f"no {split} record was judged by the zero-shot stage",
                             file=zero_shot / split / "judge_scores.csv")
        splits[split] = records, zero
    schema = Schema.load(dataset / "reference" / "schema.json")
    reference = dataset_reference(dataset, cfg.train.prompt.record_format)
    model, tokenizer = load_judge(str(judge_dir), cfg.baseline.judge.device, cfg.baseline.judge.dtype)
    calibration = saved_calibration(judge_dir)
    saved = LayerInputs.load(zero_shot / LAYER_INPUTS) if (zero_shot / LAYER_INPUTS).exists() else None
    if saved is None:
        log.info("no %s in %s: the trained judge runs the whole model", LAYER_INPUTS, zero_shot)
    judging, first_prompts = {}, None
    for split, (records, zero) in splits.items():
        texts = record_texts(records, schema, tokenizer, cfg.train.prompt, reference)
        prompts = [build_prompt(text, tokenizer, cfg.train.prompt) for text in texts]
        first_prompts = prompts if first_prompts is None else first_prompts
        start = time.perf_counter()
        # The trained judge equals the zero-shot model below its first trained layer: reuse that pass's inputs.
        log_probs = None if saved is None else judge_from_layer_inputs(model, tokenizer, prompts, saved,
                                                                       cfg.eval_batch_size)
        judging[split] = {"records": len(records), "from_layer": None if log_probs is None else saved.layer}
        if log_probs is None:
            log_probs = judge_prompts(model, tokenizer, prompts, cfg.eval_batch_size)
        judging[split]["seconds"] = time.perf_counter() - start
        trained = summarize_distribution(log_probs)
        table = records[["record_id", "generator", "strength", "realism_score"]].copy()
        table["trained_score"] = trained["judge_score"].to_numpy()
        table["trained_expected"] = trained["expected_score"].to_numpy()
        caps = record_caps(records, schema, cfg.train.prompt, reference)
        if caps is not None:  # the judge reads a cap line: min(its score, that cap), judge.scoring.with_capped_score
            table["trained_capped_score"] = np.minimum(table["trained_score"].to_numpy(), caps)
            table["trained_capped_expected"] = np.minimum(table["trained_expected"].to_numpy(), caps)
        if calibration is not None:  # fitted on val by the training stage, of the capped score where there is one
            table["trained_calibrated_expected"] = calibration(table.get("trained_capped_expected",
                                                                         table["trained_expected"]).to_numpy())
        zero = zero.set_index("record_id").loc[table["record_id"]]
        table["zero_shot_score"] = zero["judge_score"].to_numpy()
        table["zero_shot_expected"] = zero["expected_score"].to_numpy()
        for column in ("formula_distance", "formula_score", "regressor_score"):  # judge.baseline_scorers
            table[column] = zero[column].to_numpy()
        if "facts_score" in zero:
            table["facts_score"] = zero["facts_score"].to_numpy()
        else:
            log.warning("evaluation: %s has no facts_score (a zero-shot stage from before the facts regressor, or "
                        "statistics without value domains): that baseline is left out",
                        zero_shot / split / "judge_scores.csv")
        real = real_rows(records, schema.names, dataset_patients(dataset))  # no real patient's text in a report
        table["summary"] = withhold([t[:400] for t in texts], real)
        write_parquet(out / f"{split}.parquet", table)
    if saved is not None:  # the passes above skipped the frozen layers: time the whole model on a sample too
        sample = first_prompts[:FULL_MODEL_SAMPLE]
        start = time.perf_counter()
        judge_prompts(model, tokenizer, sample, cfg.eval_batch_size)
        judging["full_model"] = {"records": len(sample), "split": EVAL_SPLITS[0],
                                 "seconds": time.perf_counter() - start}
    write_json(out / "judging.json", judging)  # which pass judged each split, and how long it took


def build_probes_stage(cfg: RunConfig, dataset: Path, judge_dir: Path, out: Path) -> None:
    """The adversarial probes (scoring/probes.py) under the run's score definition, the seed one, the trained
    judge and the cheap baselines (formula, regressor): probes.json, probes.md, probe_records.csv."""
    from ehrjudge.cohort.schema import Cohort
    from ehrjudge.judge.baseline_scorers import BaselineScorers
    from ehrjudge.judge.calibration import saved_calibration
    from ehrjudge.judge.model import load_judge
    from ehrjudge.judge.reference import dataset_reference
    from ehrjudge.judge.scoring import matrix_caps, matrix_scorer
    from ehrjudge.scoring.probes import markdown_table, run_probes

    reference = Cohort.load(dataset / "reference")
    stats = dataset_reference(dataset, cfg.train.prompt.record_format)
    model, tokenizer = load_judge(str(judge_dir), cfg.baseline.judge.device, cfg.baseline.judge.dtype)
    judge = matrix_scorer(model, tokenizer, reference.schema, cfg.train.prompt, stats, cfg.eval_batch_size,
                          saved_calibration(judge_dir))
    cheap = BaselineScorers.fit(dataset, reference.schema, stats, cfg.baseline.regressor, cfg.baseline.seed)
    scorers = {"judge": judge, "formula": cheap.formula.score, "regressor": cheap.regressor_score,
               **({"facts": cheap.facts_score} if cheap.facts is not None else {})}
    records, table = run_probes(reference, holdout_cohort(dataset), cfg.score, cfg.probe_records,
                                cfg.dataset.seed, scorers, matrix_caps(reference.schema, cfg.train.prompt, stats))
    write_json(out / "probes.json", {"probes": table.to_dict(orient="records"), "n": cfg.probe_records})
    write_text(out / "probes.md", markdown_table(table) + "\n")
    write_csv(out / "probe_records.csv", records, float_format="%.6g")  # scores and reasons, no record values


CHEAP_SCORERS = ("formula", "regressor", "facts")  # judge.baseline_scorers, scored by the zero-shot stage


def scorer_values(table: pd.DataFrame, scorer: str, prediction: str) -> np.ndarray:
    """The score a scorer is judged by: the expected label (default) or the argmax label; formula, regressor as is."""
    if scorer in CHEAP_SCORERS:
        return table[f"{scorer}_score"].to_numpy(dtype=float)
    column = f"{scorer}_expected" if prediction == "expected" else f"{scorer}_score"
    return table[column].to_numpy(dtype=float)


def records_per_second(out: Path, split: str) -> dict[str, float | None]:
    """Records/s of each scorer on `split`: the trained judge's whole model (the evaluation stage's pass when it ran
    the whole model, else its timed sample of FULL_MODEL_SAMPLE records; a pass from saved layer inputs skips the
    frozen layers and is not what a user judging new records gets); the zero-shot judge, formula, regressor and
    verifiable score as timed by the zero-shot stage on test + test_unseen together."""
    zero_shot = json.loads((out / "zero_shot" / "report" / "report.json").read_text())["records_per_second"]
    judging = json.loads((out / "evaluation" / "judging.json").read_text())
    timed = judging[split] if judging[split]["from_layer"] is None else judging.get("full_model")
    trained = None if timed is None else timed["records"] / max(timed["seconds"], 1e-9)
    if timed is None:
        log.warning("%s: the trained judge's records/s is unknown (an evaluation stage from before the whole-model "
                    "sample; its pass from layer %s skipped the frozen layers)", out / "evaluation" / "judging.json",
                    judging[split]["from_layer"])
    return {"zero_shot": zero_shot["judge"], "trained": trained, "trained_calibrated": trained,
            "trained_capped": trained,
            "formula": zero_shot["formula"], "regressor": zero_shot["regressor"], "facts": zero_shot.get("facts"),
            "verifiable": zero_shot.get("verifiable")}


def summarize(cfg: RunConfig, out: Path, runner: StageRunner) -> dict:
    from ehrjudge.judge.agreement import agreement
    from ehrjudge.judge.calibration import saved_calibration

    summary: dict = {"splits": {}, "verifiable": {}, "prediction": cfg.train.prediction}
    for split in EVAL_SPLITS:
        table = pd.read_parquet(out / "evaluation" / f"{split}.parquet")
        truth = table["realism_score"].to_numpy(dtype=float)
        speed = records_per_second(out, split)
        summary["verifiable"][split] = {"mean": float(truth.mean()), "std": float(truth.std()), "n": len(truth),
                                        "records_per_second": speed.get("verifiable")}
        summary["splits"][split] = {}
        scorers = ["zero_shot", "trained", *(s for s in CHEAP_SCORERS if f"{s}_score" in table)]
        if cfg.train.prediction == "expected" and "trained_calibrated_expected" in table:
            scorers.insert(2, "trained_calibrated")
        if "trained_capped_expected" in table:
            scorers.insert(scorers.index("trained") + 1, "trained_capped")
        for scorer in scorers:
            a = agreement(scorer_values(table, scorer, cfg.train.prediction), truth, seed=0,
                          n_bootstrap=cfg.baseline.n_bootstrap)
            summary["splits"][split][scorer] = {
                "pearson": a["pearson"], "pearson_ci": a["pearson_ci"], "spearman": a["spearman"],
                "spearman_ci": a["spearman_ci"], "mae": a["mae"], "within_1": a["within_1"], "exact": a["exact"],
                "mean": a["judge_mean"], "std": a["judge_std"], "n": a["n"], "undefined": a.get("undefined", {}),
                "records_per_second": speed[scorer]}
    train_summary = json.loads((out / "train" / "summary.json").read_text())
    summary["training"] = {"wall_seconds": train_summary.get("train_seconds"), "steps": train_summary.get("steps"),
                           "best_step": train_summary.get("best_step"),
                           "best_val_spearman": train_summary.get("best_val_spearman"),
                           "seconds_per_step_median": train_summary.get("seconds_per_step_median"),
                           "stopped_by": train_summary.get("stopped_by"),
                           "wall_cap_fired": train_summary.get("wall_cap_fired", False)}
    calibration = saved_calibration(out / "train" / "judge")
    summary["calibration"] = dataclasses.asdict(calibration) if calibration else None
    summary["stages"] = [dataclasses.asdict(r) for r in runner.records]
    summary["config"] = run_settings(cfg)
    return summary


def publish_judge(out: Path, summary: dict) -> None:
    """<out>/judge: the trained judge with its held-out agreement and baselines in its info and model card, the
    folder to ship (the train stage's own train/judge stays as that stage wrote it, for its cache)."""
    from ehrjudge.judge.artifact import training_data, update_judge

    kept = ("n", "spearman", "spearman_ci", "pearson", "pearson_ci", "mae", "within_1", "mean")
    splits = {split: {scorer: {key: metrics.get(key) for key in kept} for scorer, metrics in scorers.items()}
              for split, scorers in summary["splits"].items()}
    with atomic_dir(out / "judge") as tmp:
        shutil.copytree(out / "train" / "judge", tmp, dirs_exist_ok=True)
        update_judge(tmp, evaluation={"splits": splits, "prediction": summary["prediction"]},
                     training_data=training_data(out / "dataset", out / "judge"))


def log_to_mlflow(cfg: RunConfig, out: Path, summary: dict) -> None:
    import mlflow

    from ehrjudge.tracking import STORE_DIR, flatten_params, setup_mlflow

    setup_mlflow(out / STORE_DIR, cfg.experiment, cfg.tracking_uri)
    with mlflow.start_run(run_name=out.name):
        mlflow.set_tags({f"ehrjudge.{k}": str(v) for k, v in summary["provenance"].items()})
        mlflow.log_params({k: str(v)[:250] for k, v in flatten_params(summary["config"]).items()})
        for split, scorers in summary["splits"].items():
            for scorer, metrics in scorers.items():
                mlflow.log_metrics({f"eval/{split}/{scorer}/{k}": float(v) for k, v in metrics.items()
                                    if isinstance(v, (int, float)) and v is not None})
        if summary["training"]["wall_seconds"] is not None:
            mlflow.log_metric("train/wall_seconds", float(summary["training"]["wall_seconds"]))
        for name in ("summary.json", "report.html", "config.yaml"):
            mlflow.log_artifact(str(out / name))


def run_pipeline(cfg: RunConfig, out: str | Path, force: set[str] | None = None, until: str | None = None) -> dict:
    """Run every stage (skipping cached ones) up to `until`; write summary.json and report.html."""
    from ehrjudge.pipeline.report import write_report

    out = Path(out)
    unknown = set(force or ()) - set(STAGES)
    if unknown or (until is not None and until not in STAGES):
        raise InputError(f"unknown stage(s) {sorted(unknown | ({until} - set(STAGES) if until else set()))}; "
                         f"stages are {list(STAGES)}")
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", yaml.safe_dump(run_settings(cfg), sort_keys=False))
    runner = StageRunner(out, frozenset(force or ()))
    started = time.perf_counter()
    dataset, h = out / "dataset", {}
    train_settings = {k: v for k, v in to_dict(cfg.train).items() if k not in ("dataset", "output_dir")}
    # (stage, its inputs: settings + the output hashes of the stages it reads, how to build it)
    plan = [
        ("cohort", lambda: {"cohort": to_dict(cfg.cohort), "source": source_fingerprint(cfg.cohort.path)},
         lambda tmp: build_cohort_stage(cfg, tmp)),
        ("dataset", lambda: {"dataset": to_dict(cfg.dataset_config()), "cohort": h["cohort"]},
         lambda tmp: build_dataset_stage(cfg, out / "cohort", tmp)),
        ("suite", lambda: {"suite": to_dict(cfg.suite_config()), "n": cfg.suite_records, "dataset": h["dataset"]},
         lambda tmp: build_suite_stage(cfg, dataset, tmp)),
        ("zero_shot", lambda: {"baseline": to_dict(cfg.baseline), "prompt": to_dict(cfg.train.prompt),
                               "model": cfg.train.model, "dataset": h["dataset"],
                               "kept_layer": -cfg.train.train_layers,  # which layer's inputs it keeps
                               "cheap_scorers": CHEAP_SCORERS},  # a run cached before they existed is redone
         lambda tmp: build_zero_shot_stage(cfg, dataset, tmp)),
        ("train", lambda: {"train": train_settings, "dataset": h["dataset"]},
         lambda tmp: build_train_stage(cfg, dataset, runner.work_dir("train"), tmp)),
        ("evaluation", lambda: {"train": h["train"], "zero_shot": h["zero_shot"], "dataset": h["dataset"],
                                "batch": cfg.eval_batch_size, "judge": to_dict(cfg.baseline.judge)},
         lambda tmp: build_evaluation_stage(cfg, dataset, out / "zero_shot", out / "train" / "judge", tmp)),
        ("probes", lambda: {"train": h["train"], "dataset": h["dataset"], "n": cfg.probe_records,
                            "prompt": to_dict(cfg.train.prompt), "baseline": to_dict(cfg.baseline),
                            "cheap_scorers": CHEAP_SCORERS},
         lambda tmp: build_probes_stage(cfg, dataset, out / "train" / "judge", tmp)),
    ]
    for name, inputs, build in plan:
        h[name] = runner.run(name, inputs(), build)
        if name == until:
            return {"stages": [dataclasses.asdict(r) for r in runner.records]}
    summary = summarize(cfg, out, runner)
    summary["wall_seconds"] = time.perf_counter() - started
    summary["provenance"] = provenance(summary["config"])  # version, commit, config hash: the report's header
    write_json(out / "summary.json", summary)
    publish_judge(out, summary)
    write_report(out)
    if cfg.tracking == "mlflow":
        log_to_mlflow(cfg, out, summary)
    return summary
