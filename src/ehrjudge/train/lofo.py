"""Leave-one-family-out: does a scorer trained on some generator families rank records of a family it never saw?

For each held-out family F of a judge dataset (one fold each):
    train  = the train split without F's records    (the regressor's fit; the judge's training records)
    val    = the val split without F's records       (the formula's 1..10 map; the judge's best step and calibration)
    test   = F's records in val, test and test_unseen (never in train or in the fold's val; near-duplicate groups
                                                       go whole to one split, so no near-copy of them is trained on;
                                                       F's train-split records are not used: a record of another
                                                       family in their group could have leaked them)
Scorers: `formula` (judge.baseline_scorers, no training, its map fitted on the fold's val), `regressor`
(judge.baseline_scorers.fit_regressor on the fold's train), opt-in `facts` (the same regressor on the judge's
findings text's numbers, judge.baseline_scorers.facts_matrix, with the closest-patient ratio when the judge's record
format reads the patients) and `judge` (train.loop.train with `judge.max_steps` steps on the fold's records, scored
by judge.scoring.judge_score: capped where it reads a cap line, calibrated when fitted); opt-in, the
preference methods at the judge's settings and budget (docs/preference.md): `bradley_terry` (its calibrated reward)
and `dpo` (kl_coef 0, scored as the judge is).
Per fold: Spearman and Pearson with the verifiable score (higher is better, [-1, 1]), MAE (lower is better), and
95% percentile-bootstrap intervals over paired resamples of the fold's records (judge.agreement); a small fold's
resamples can be constant, and those are left out of its interval (their share is reported). The mean over folds
gets a stratified interval: each resample redraws every fold's test records within that fold and averages the
folds' correlations (folds whose correlation is undefined, e.g. a constant verifiable score, are left out of the
mean and named).
The judge's training subset is drawn once (`judge_train_records` of the train split, seeded) and each fold drops F's
records from it, so the folds share most records and the frozen lower-layer pass is run once per record
(train.loop's prompt_cache).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.cohort.schema import Schema
from ehrjudge.config import option, save_config, to_dict
from ehrjudge.errors import ConfigError, InputError, MetricUndefinedError
from ehrjudge.io import atomic_dir, write_json, write_parquet
from ehrjudge.judge.agreement import CORRELATIONS, correlation, resampled_correlations
from ehrjudge.judge.baseline_scorers import FACTS, FORMULA, REGRESSOR, TRUE_SCORE, FormulaScorer
from ehrjudge.judge.reference import dataset_reference
from ehrjudge.train.config import TrainConfig
from ehrjudge.train.data import load_frame

log = logging.getLogger(__name__)
JUDGE, BRADLEY_TERRY, DPO = "judge", "bradley_terry", "dpo"
SCORERS = (FORMULA, REGRESSOR, FACTS, JUDGE, BRADLEY_TERRY, DPO)
TRAINED = (JUDGE, BRADLEY_TERRY, DPO)  # scorers trained per fold on the judge's record pool
NOT_A_FAMILY = ("holdout_real",)  # real held-out patients: the ceiling, always in training, never a fold


def _fold_judge() -> TrainConfig:
    return TrainConfig(max_steps=60, eval_every=60, checkpoint_every=1000, val_records=0, train_records=0,
                       tracking="none", warmup_steps=5)  # lr, kl: TrainConfig's measured defaults


@dataclasses.dataclass
class LofoConfig:
    """Leave-one-family-out settings; the judge's per-fold budget is `judge.max_steps` optimizer steps."""

    dataset: str | None = option(None, "judge dataset dir (train/val/test/test_unseen.parquet, reference/); None = "
                                       "the default dataset")
    output_dir: str = option("runs/lofo", "fold datasets, judge runs and lofo.json")
    families: list[str] = option([], "families to hold out, one fold each; [] = every family in the dataset "
                                     "except holdout_real")
    scorers: list[str] = option([FORMULA, REGRESSOR, JUDGE], "formula, regressor, judge (judge = one short training "
                                                            "per fold); facts (the regressor on the findings text's "
                                                            "numbers); bradley_terry and dpo train per fold too, at "
                                                            "the judge's settings and budget")
    regressor: str = option("hist_gradient_boosting", "regressor kind (judge.baseline_scorers.fit_regressor)")
    judge: TrainConfig = option(_fold_judge(), "judge training per fold (dataset and output_dir are set per fold)")
    judge_train_records: int = option(256, "seeded subset of the train split the judge trains on (0 = all); each "
                                           "fold drops the held-out family's records from it")
    judge_val_records: int = option(64, "seeded subset of the val split the judge validates on (0 = all)")
    preference_margin: int = option(2, "bradley_terry: pairs' score gap >= this; dpo: rejected label >= this far")
    dpo_beta: float = option(0.1, "dpo: beta (train/preference_config.py DPOConfig.beta)")
    test_records: int = option(0, "score at most this many held-out records per fold, seeded (0 = all)")
    batch_size: int = option(8, "records per forward pass when the judge scores held-out records")
    n_bootstrap: int = option(1000, "bootstrap resamples of every interval")
    seed: int = option(0, "seed of the subsets and the bootstrap")

    def __post_init__(self):
        unknown = [s for s in self.scorers if s not in SCORERS]
        if unknown:
            raise ConfigError(f"LofoConfig: unknown scorers {unknown}; choose from {list(SCORERS)}")


@dataclasses.dataclass
class Fold:
    family: str
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame


def seeded_subset(frame: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    if not limit or limit >= len(frame):
        return frame
    chosen = np.sort(np.random.default_rng(seed).choice(len(frame), limit, replace=False))
    return frame.iloc[chosen].reset_index(drop=True)


def make_fold(splits: dict[str, pd.DataFrame], family: str) -> Fold:
    """The fold that holds `family` out; refuses to return one whose training records hold it."""
    train = splits["train"][splits["train"]["generator"] != family].reset_index(drop=True)
    val = splits["val"][splits["val"]["generator"] != family].reset_index(drop=True)
    test = pd.concat([splits[s][splits[s]["generator"] == family] for s in ("val", "test", "test_unseen")],
                     ignore_index=True)
    if family in set(train["generator"]) | set(val["generator"]):
        raise AssertionError(f"held-out family {family} in the fold's training records")
    if len(test) < 3:
        raise InputError(f"family {family!r} has {len(test)} records in val + test + test_unseen; a fold needs >= 3")
    return Fold(family, train, val, test)


def optional_split(dataset: Path, split: str, like: pd.DataFrame) -> pd.DataFrame:
    """A split that a dataset without unseen-only families leaves empty (or absent): then no rows."""
    path = dataset / f"{split}.parquet"
    if not path.exists() or len(pd.read_parquet(path, columns=["record_id"])) == 0:
        log.info("lofo: %s has no %s records", dataset, split)
        return like.iloc[:0]
    return load_frame(dataset, split)


def fold_families(splits: dict[str, pd.DataFrame], requested: list[str]) -> list[str]:
    present = sorted(set().union(*(set(frame["generator"]) for frame in splits.values())))
    if not requested:
        return [f for f in present if f not in NOT_A_FAMILY]
    missing = [f for f in requested if f not in present]
    if missing:
        raise InputError(f"families {missing} have no records in the dataset (it holds {present})")
    return list(requested)


def write_fold_dataset(dataset: Path, fold: Fold, out: Path) -> Path:
    """A judge dataset dir for one fold's training: the dataset's reference/ (and holdout/ and config.yaml, which the
    `findings_dcr` text reads), the fold's train and val."""
    with atomic_dir(out) as tmp:
        shutil.copytree(dataset / "reference", tmp / "reference")
        if (dataset / "holdout").is_dir():
            shutil.copytree(dataset / "holdout", tmp / "holdout")
        if (dataset / "config.yaml").exists():
            shutil.copy2(dataset / "config.yaml", tmp / "config.yaml")
        write_parquet(tmp / "train.parquet", fold.train)
        write_parquet(tmp / "val.parquet", fold.val)
    return out


def judge_fold(config: LofoConfig, fold_dataset: Path, fold: Fold, schema: Schema, reference: ReferenceStats,
               prompt_cache: dict, model_and_tokenizer=None) -> tuple[np.ndarray, dict]:
    """Train the judge on the fold, then score its held-out records -> (scores, training summary)."""
    from ehrjudge.train.loop import train

    root = fold_dataset.parent
    run_config = dataclasses.replace(config.judge, dataset=str(fold_dataset), output_dir=str(root / "run"))
    summary = train(run_config, model_and_tokenizer=model_and_tokenizer() if model_and_tokenizer else None,
                    show_progress=False, prompt_cache=prompt_cache)
    scores, calibrated = judge_folder_scores(root / "run" / "best", fold.test, schema, reference, config)
    return scores, {"steps": summary["steps"], "train_seconds": summary["train_seconds"],
                    "train_records": summary["train_records"], "val_records": summary["val_records"],
                    "best_step": summary["best_step"], "calibrated": calibrated}


def judge_folder_scores(folder: Path, records: pd.DataFrame, schema: Schema, reference: ReferenceStats,
                        config: LofoConfig) -> tuple[np.ndarray, bool]:
    """(the judge's score, judge.scoring.judge_score: capped where it reads a cap line, calibrated when it saved a
    calibration; whether calibrated) of a judge folder."""
    from ehrjudge.judge.calibration import saved_calibration
    from ehrjudge.judge.model import load_judge
    from ehrjudge.judge.scoring import judge_records, judge_score

    model, tokenizer = load_judge(str(folder), config.judge.device, config.judge.dtype)
    judged = judge_records(model, tokenizer, records, schema, config.judge.prompt, config.batch_size,
                           reference=reference)
    calibration = saved_calibration(folder)
    return judge_score(judged, calibration), calibration is not None


def preference_fold(scorer: str, config: LofoConfig, fold_dataset: Path, fold: Fold, schema: Schema,
                    reference: ReferenceStats, dpo_prompt_cache: dict) -> tuple[np.ndarray, dict]:
    """Train a Bradley-Terry model or a DPO judge on the fold (the judge's settings, budget and record pool), score
    its held-out records -> (scores, training summary)."""
    from ehrjudge.train.bradley_terry import load_reward_model, train_bradley_terry
    from ehrjudge.train.dpo import DPOMethod
    from ehrjudge.train.loop import train
    from ehrjudge.train.preference_config import BradleyTerryConfig, DPOConfig

    out = fold_dataset.parent / scorer
    base = dataclasses.replace(config.judge, dataset=str(fold_dataset), output_dir=str(out))
    if scorer == BRADLEY_TERRY:
        summary = train_bradley_terry(BradleyTerryConfig(output_dir=str(out), base=base,
                                                         margin=config.preference_margin))
        scores = load_reward_model(out, config.judge.device).score(fold.test, schema, reference, config.batch_size)[1]
        return scores, {"steps": summary["steps"], "train_seconds": summary["train_seconds"],
                        "calibrated": summary["calibration"] is not None}
    # DPO: beta ties it to the reference, so no extra KL term; its own prompt cache (the judge's is keyed on kl > 0).
    method = DPOMethod(DPOConfig(beta=config.dpo_beta, margin=config.preference_margin))
    summary = train(dataclasses.replace(base, kl_coef=0.0), show_progress=False, prompt_cache=dpo_prompt_cache,
                    method_module=method)
    scores, calibrated = judge_folder_scores(out / "best", fold.test, schema, reference, config)
    return scores, {"steps": summary["steps"], "train_seconds": summary["train_seconds"], "calibrated": calibrated}


def correlations(values: np.ndarray, truth: np.ndarray, config: LofoConfig) -> dict:
    """Spearman and Pearson with their intervals (constant resamples left out), and the MAE, of one fold."""
    rng = np.random.default_rng([config.seed, 16])
    out: dict = {"mae": float(np.mean(np.abs(values - truth))), "undefined": {}}
    for kind in CORRELATIONS:
        try:
            out[kind] = correlation(kind, values, truth)
        except MetricUndefinedError as error:
            out[kind], out[f"{kind}_ci"], out["undefined"][kind] = None, None, str(error)
            continue
        resamples = resampled_correlations(kind, values, truth, rng, config.n_bootstrap)
        out[f"{kind}_ci"] = [float(np.nanpercentile(resamples, 2.5)), float(np.nanpercentile(resamples, 97.5))]
        out[f"{kind}_constant_resamples"] = float(np.isnan(resamples).mean())
    return out


def mean_over_folds(per_fold: dict[str, dict], scores: dict[str, np.ndarray], truths: dict[str, np.ndarray],
                    config: LofoConfig) -> dict:
    """Mean over folds of each correlation (`per_fold`: family -> its correlations), with the stratified bootstrap
    interval of the module docstring."""
    out = {}
    rng = np.random.default_rng([config.seed, 15])
    for kind in CORRELATIONS:
        values, resamples, left_out = [], [], []
        for family, truth in truths.items():
            if per_fold[family].get(kind) is None:
                left_out.append(family)
                continue
            values.append(per_fold[family][kind])
            resamples.append(resampled_correlations(kind, scores[family], truth, rng, config.n_bootstrap))
        if not values:
            out[kind], out[f"{kind}_ci"] = None, None
            continue
        means = np.nanmean(np.stack(resamples), axis=0)  # (B,) mean over folds of each resample
        out[kind] = float(np.mean(values))
        out[f"{kind}_ci"] = [float(np.nanpercentile(means, 2.5)), float(np.nanpercentile(means, 97.5))]
        out[f"{kind}_left_out"] = left_out  # folds whose correlation is undefined
    out["n_folds"] = len(truths)
    return out


def run_lofo(config: LofoConfig, model_and_tokenizer=None) -> dict:
    """Every fold, every scorer; writes OUTPUT_DIR/lofo.json and returns it.

    model_and_tokenizer: a callable returning a fresh (model, tokenizer) per fold (tests inject a tiny judge).
    """
    from ehrjudge.judge.baseline_scorers import facts_matrix, fit_regressor
    from ehrjudge.train.data import resolve_dataset

    dataset = resolve_dataset(config.dataset)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    schema = Schema.load(dataset / "reference" / "schema.json")
    reference = dataset_reference(dataset, config.judge.prompt.record_format)
    splits = {s: load_frame(dataset, s) for s in ("train", "val", "test")}
    splits["test_unseen"] = optional_split(dataset, "test_unseen", splits["test"])
    judge_pool = {"train": seeded_subset(splits["train"], config.judge_train_records, config.seed),
                  "val": seeded_subset(splits["val"], config.judge_val_records, config.seed)}
    names = schema.names
    prompt_cache: dict = {}
    dpo_prompt_cache: dict = {}
    folds, scores, truths = [], {s: {} for s in config.scorers}, {}
    for family in fold_families(splits, config.families):
        fold = make_fold(splits, family)
        fold.test = seeded_subset(fold.test, config.test_records, config.seed)
        truth = fold.test[TRUE_SCORE].to_numpy(dtype=float)
        truths[family] = truth
        row = {"family": family, "n_train": len(fold.train), "n_val": len(fold.val), "n_test": len(fold.test),
               "score_mean": float(truth.mean()), "score_std": float(truth.std(ddof=1)), "scorers": {}}
        start = time.perf_counter()
        test_matrix = fold.test[names].to_numpy(dtype=np.float64)
        if FORMULA in config.scorers:
            formula = FormulaScorer.fit(reference, fold.val[names].to_numpy(dtype=np.float64),
                                        fold.val[TRUE_SCORE].to_numpy(dtype=float))
            scores[FORMULA][family] = formula.score(test_matrix)
        if REGRESSOR in config.scorers:
            regressor = fit_regressor(config.regressor, fold.train[names].to_numpy(),
                                      fold.train[TRUE_SCORE].to_numpy(dtype=float), config.seed)
            scores[REGRESSOR][family] = np.clip(np.rint(regressor.predict(test_matrix)), 1, 10)
        if FACTS in config.scorers:
            facts = fit_regressor(config.regressor, facts_matrix(fold.train, schema, reference),
                                  fold.train[TRUE_SCORE].to_numpy(dtype=float), config.seed)
            scores[FACTS][family] = np.clip(np.rint(facts.predict(facts_matrix(fold.test, schema, reference))), 1, 10)
        if any(scorer in config.scorers for scorer in TRAINED):
            judge_fold_data = make_fold({**splits, **judge_pool}, family)
            judge_fold_data.test = fold.test
            fold_dataset = write_fold_dataset(dataset, judge_fold_data,
                                              Path(config.output_dir) / "folds" / family / "dataset")
        if JUDGE in config.scorers:
            scores[JUDGE][family], row["judge_training"] = judge_fold(
                config, fold_dataset, judge_fold_data, schema, reference, prompt_cache, model_and_tokenizer)
        for scorer in (BRADLEY_TERRY, DPO):
            if scorer in config.scorers:
                scores[scorer][family], row[f"{scorer}_training"] = preference_fold(
                    scorer, config, fold_dataset, judge_fold_data, schema, reference, dpo_prompt_cache)
        for scorer in config.scorers:
            row["scorers"][scorer] = correlations(scores[scorer][family], truth, config)
        row["seconds"] = time.perf_counter() - start
        folds.append(row)
        log.info("lofo/fold %s: %s", family, {s: row["scorers"][s].get("spearman") for s in config.scorers})
    result = {"dataset": str(dataset), "budget": budget_text(config), "folds": folds,
              "mean": {s: mean_over_folds({f["family"]: f["scorers"][s] for f in folds}, scores[s], truths, config)
                       for s in config.scorers},
              "config": to_dict(config)}
    write_json(out / "lofo.json", result)
    return result


def budget_text(config: LofoConfig) -> str:
    if not any(scorer in config.scorers for scorer in TRAINED):
        return f"{', '.join(config.scorers)} only (no judge training)"
    j = config.judge
    return (f"judge: {j.max_steps} optimizer steps of {j.batch_size} records per fold ({j.method}, lr {j.learning_rate}, "
            f"kl {j.kl_coef}, LoRA r {j.lora_r} on the top {j.train_layers} layers, model "
            f"{j.model or 'SmolLM2-135M-Instruct'}), on <= {config.judge_train_records or 'all'} train records "
            f"and <= {config.judge_val_records or 'all'} val records minus the held-out family")


def table_text(result: dict) -> str:
    """One row per fold plus the mean, Spearman and Pearson with 95% intervals per scorer."""
    scorers = list(result["mean"])

    def cell(metrics: dict, kind: str) -> str:
        value, ci = metrics.get(kind), metrics.get(f"{kind}_ci")
        return "n/a" if value is None else f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"

    header = f"{'family':24s} {'n_test':>6s} {'score':>10s} " + " ".join(
        f"{s + ' ' + k:>26s}" for s in scorers for k in ("spearman", "pearson"))
    lines = [f"Leave-one-family-out ({result['budget']})", header]
    for fold in result["folds"]:
        lines.append(f"{fold['family']:24s} {fold['n_test']:6d} {fold['score_mean']:5.2f}±{fold['score_std']:4.2f} "
                     + " ".join(f"{cell(fold['scorers'][s], k):>26s}" for s in scorers
                                for k in ("spearman", "pearson")))
    lines.append(f"{'mean over folds':24s} {'':6s} {'':10s} " + " ".join(
        f"{cell(result['mean'][s], k):>26s}" for s in scorers for k in ("spearman", "pearson")))
    return "\n".join(lines)
