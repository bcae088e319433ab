"""`ehrjudge compare`: every way of building a realism judge, side by side on the same held-out records and pairs.

Methods (a row each, per split), scored on test and test_unseen:
    RLVR judge      a trained `ehrjudge train` judge: judge.scoring.judge_score (capped where it reads a cap line,
                    calibrated when it saved a calibration)
    Bradley-Terry   the reward model's scalar on 1..10 by the judge's calibration (train/bradley_terry.py)
    DPO judge       the DPO-trained judge, read as the RLVR judge is (train/dpo.py)
    pairwise judge  A/B verdicts on pairs only (train/pairwise.py): pairwise accuracy and conflict rate, no
                    per-record score, so no Spearman/Pearson/MAE; "pairwise judge (swap-consistent)" is a second one
                    trained with the swap-consistency reward, so the conflict rate is read before and after it;
                    each also gets a "+balanced" row: its two orders' probabilities averaged per pair (judge/pairwise.py,
                    Wang et al. 2023), an order-free verdict (conflict rate 0 by construction) from the same forwards
    formula, regressor  judge/baseline_scorers.py (formula's map fitted on val, regressor on train)
Columns, direction and range: spearman, pearson (higher is better, [-1, 1], 95% paired-bootstrap interval,
judge/agreement.py), mae (lower, [0, 9]), pair_accuracy (higher, [0, 1], 0.5 = chance; the share of evaluation pairs
whose more realistic record scores higher, ties 0.5; for the pairwise judge the mean over both orders; 95%
bootstrap interval over pairs), conflict_rate (lower, [0, 1], 95% Wilson interval over pairs; the pairwise judge
only: a scorer of single records cannot depend on the order), records_per_second (scoring pass only; the pairwise
judge: prompts, two records each, per second), train_seconds (the method's training run as its summary.json records
it; the regressor's fit here; None for the formula, which has no training).
Evaluation pairs per split: `eval_pairs` pairs of records whose scores differ by >= pair_margin, each in a random
(seeded) order, the same pairs for every method.
Not measured here: the leave-one-family-out protocol (train/lofo.py, with the opt-in scorers bradley_terry and dpo
beside formula, regressor and judge; benchmarks/lofo.py runs it).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.cohort.schema import Schema
from ehrjudge.config import save_config
from ehrjudge.errors import InputError
from ehrjudge.io import write_csv, write_json, write_text
from ehrjudge.judge.agreement import agreement
from ehrjudge.judge.baseline_scorers import load_split
from ehrjudge.judge.pairwise import oriented_pairs
from ehrjudge.judge.reference import dataset_reference
from ehrjudge.train.pairs import mean_with_interval, pair_accuracy, preference_pairs, sample_pairs
from ehrjudge.train.preference_config import CompareConfig

log = logging.getLogger(__name__)
RLVR, BRADLEY_TERRY, DPO, PAIRWISE = "RLVR judge", "Bradley-Terry", "DPO judge", "pairwise judge"
PAIRWISE_CONSISTENT = "pairwise judge (swap-consistent)"
FORMULA, REGRESSOR = "formula", "regressor"
FOLDER_OPTION = {RLVR: "judge", BRADLEY_TERRY: "bradley_terry_dir", DPO: "dpo_dir", PAIRWISE: "pairwise_dir",
                 PAIRWISE_CONSISTENT: "pairwise_consistent_dir"}
RUN_FOLDER = {RLVR: "judge", BRADLEY_TERRY: "bradley_terry", DPO: "dpo", PAIRWISE: "pairwise",
              PAIRWISE_CONSISTENT: "pairwise_consistent"}
TRAINED_AS = {"bradley_terry": BRADLEY_TERRY, "dpo": DPO, "pairwise": PAIRWISE,
              "pairwise_consistent": PAIRWISE_CONSISTENT}


def resolve_inputs(config: CompareConfig) -> tuple[Path, dict[str, Path]]:
    """(dataset dir, method -> folder) from the explicit options, else the run folder's conventional names."""
    from ehrjudge.train.data import resolve_dataset

    run = Path(config.run) if config.run else None
    if run is not None and not run.is_dir():
        raise InputError("run folder not found", file=run)
    dataset = config.dataset or (str(run / "dataset") if run is not None and (run / "dataset").is_dir() else None)
    folders = {}
    for method, option_name in FOLDER_OPTION.items():
        given = getattr(config, option_name)
        if given is not None:
            if not Path(given).is_dir():
                raise InputError(f"{method} folder not found (--{option_name.replace('_', '-')})", file=given)
            folders[method] = Path(given)
        elif run is not None and (run / RUN_FOLDER[method]).is_dir():
            folders[method] = run / RUN_FOLDER[method]
    return resolve_dataset(dataset), folders


def train_here(config: CompareConfig, dataset: Path) -> dict[str, Path]:
    """Train the methods named in config.train into OUT/<method> on `dataset`; method -> run dir."""
    from ehrjudge.train.bradley_terry import train_bradley_terry
    from ehrjudge.train.dpo import train_dpo
    from ehrjudge.train.pairwise import train_pairwise

    trainers = {"bradley_terry": train_bradley_terry, "dpo": train_dpo, "pairwise": train_pairwise,
                "pairwise_consistent": train_pairwise}
    trained = {}
    for name in config.train:
        settings = (dataclasses.replace(config.pairwise, swap_consistency=True) if name == "pairwise_consistent"
                    else getattr(config, name))
        out = Path(config.output_dir) / name
        settings = dataclasses.replace(settings, output_dir=str(out),
                                       base=dataclasses.replace(settings.base, dataset=str(dataset)))
        resume = resumable(out, settings)
        log.info("%s %s into %s", "resuming" if resume else "training", name, out)
        trainers[name](settings, resume=resume)
        trained[TRAINED_AS[name]] = out
    return trained


def resumable(out: Path, settings) -> bool:
    """True when OUT holds a checkpoint of a run with exactly these settings (its config.yaml): a killed compare
    continues where it stopped; other settings start over (the trainer rewrites OUT)."""
    import yaml

    from ehrjudge.config import to_dict

    saved = out / "config.yaml"
    if not ((out / "latest.json").is_file() and saved.is_file()):
        return False
    return yaml.safe_load(saved.read_text()) == yaml.safe_load(yaml.safe_dump(to_dict(settings), sort_keys=False))


def judge_folder(folder: Path) -> Path:
    """A training run dir's best/ (else final/); a judge folder as it is."""
    for name in ("best", "final"):
        if (folder / name / "adapter_config.json").exists() or (folder / name / "config.json").exists():
            return folder / name
    return folder


def training_seconds(folder: Path) -> float | None:
    """train_seconds of the run that made `folder` (its summary.json, its run dir's, or an `ehrjudge run`'s
    train/summary.json), None when none is found."""
    import json

    candidates = (folder / "summary.json", folder.parent / "summary.json", folder.parent / "train" / "summary.json")
    for candidate in candidates:
        if candidate.is_file():
            seconds = json.loads(candidate.read_text()).get("train_seconds")
            if seconds is not None:
                return float(seconds)
    return None


def evaluation_pairs(scores: np.ndarray, config: CompareConfig) -> tuple[np.ndarray, np.ndarray]:
    """([first, second] (P, 2), first_is_better (P,)) of one split, the same for every method."""
    pairs = sample_pairs(preference_pairs(scores, config.pair_margin), config.eval_pairs, config.seed)
    return oriented_pairs(pairs, config.seed)


def scorers(folders: dict[str, Path], dataset: Path, schema: Schema, reference: ReferenceStats,
            config: CompareConfig) -> dict:
    """method -> (score(records) -> values per record, train seconds), for every per-record method available."""
    from ehrjudge.judge.baseline_scorers import BaselineScorers, fit_regressor
    from ehrjudge.judge.calibration import saved_calibration
    from ehrjudge.judge.model import load_judge
    from ehrjudge.judge.scoring import judge_records, judge_score
    from ehrjudge.train.bradley_terry import load_reward_model
    from ehrjudge.train.evaluate import training_prompt

    out = {}
    for method in (RLVR, DPO):
        if method in folders:
            folder = judge_folder(folders[method])
            model, tokenizer = load_judge(str(folder))
            prompt, calibration = training_prompt(folder), saved_calibration(folder)

            def score(records, model=model, tokenizer=tokenizer, prompt=prompt, calibration=calibration):
                return judge_score(judge_records(model, tokenizer, records, schema, prompt, config.batch_size,
                                                 reference=reference), calibration)

            out[method] = (score, training_seconds(folder))
    if BRADLEY_TERRY in folders:
        reward_model = load_reward_model(folders[BRADLEY_TERRY])
        out[BRADLEY_TERRY] = (lambda records: reward_model.score(records, schema, reference, config.batch_size)[1],
                              training_seconds(folders[BRADLEY_TERRY]))
    cheap = BaselineScorers.fit(dataset, schema, reference, seed=config.seed)
    train_records, train_scores = load_split(dataset, "train", schema)
    start = time.perf_counter()
    fit_regressor(cheap.regressor_kind, train_records[cheap.names].to_numpy(), train_scores, config.seed)  # timed
    regressor_seconds = time.perf_counter() - start
    out[FORMULA] = (lambda records: cheap.formula.score(records[cheap.names].to_numpy(dtype=np.float64)), None)
    out[REGRESSOR] = (lambda records: cheap.regressor_score(records[cheap.names].to_numpy(dtype=np.float64)),
                      regressor_seconds)
    return out


def score_row(method: str, split: str, values: np.ndarray, true: np.ndarray, pairs: np.ndarray,
              first_better: np.ndarray, seconds: float, train_seconds: float | None, config: CompareConfig) -> dict:
    """One table row of a per-record scorer."""
    agreed = agreement(values, true, seed=config.seed, n_bootstrap=config.n_bootstrap)
    chosen = np.where(first_better, pairs[:, 0], pairs[:, 1])
    rejected = np.where(first_better, pairs[:, 1], pairs[:, 0])
    accuracy, interval = mean_with_interval(pair_accuracy(values[chosen], values[rejected]), config.seed,
                                            config.n_bootstrap)
    return {"method": method, "split": split, "n_records": int(len(values)), "n_pairs": int(len(pairs)),
            "spearman": agreed["spearman"], "spearman_ci": agreed["spearman_ci"], "pearson": agreed["pearson"],
            "pearson_ci": agreed["pearson_ci"], "mae": agreed["mae"], "pair_accuracy": accuracy,
            "pair_accuracy_ci": interval, "conflict_rate": None,
            "records_per_second": len(values) / max(seconds, 1e-9), "train_seconds": train_seconds,
            "undefined": agreed["undefined"]}


def pairwise_row(method: str, split: str, folder: Path, records: pd.DataFrame, schema: Schema,
                 reference: ReferenceStats, pairs: np.ndarray, first_better: np.ndarray, loaded,
                 config: CompareConfig) -> list[dict]:
    """The pairwise judge's two rows: its plain verdicts (accuracy over both orders, the interval over pairs, the
    conflict rate) and its balanced verdicts (`METHOD+balanced`: the two orders' probabilities averaged, so the
    conflict rate is 0 by construction; judge/pairwise.py), from the same two forwards per pair."""
    from ehrjudge.judge.pairwise import balanced_right, judge_pairs, swap_metrics, swap_outcomes, wilson_interval
    from ehrjudge.judge.scoring import record_texts

    model, tokenizer, prompt = loaded
    texts = record_texts(records, schema, tokenizer, prompt, reference)
    start = time.perf_counter()
    p_forward, p_swapped = judge_pairs(model, tokenizer, texts, pairs, prompt, config.batch_size)
    seconds = time.perf_counter() - start
    metrics = swap_metrics(p_forward, p_swapped, first_better)
    outcome = swap_outcomes(p_forward, p_swapped, first_better)
    per_pair = (outcome["right_forward"].astype(float) + outcome["right_swapped"]) / 2  # (P,)
    accuracy, interval = mean_with_interval(per_pair, config.seed, config.n_bootstrap)
    balanced, balanced_interval = mean_with_interval(
        balanced_right(p_forward, p_swapped, first_better).astype(float), config.seed, config.n_bootstrap)
    common = {"split": split, "n_records": int(len(records)), "n_pairs": int(len(pairs)), "spearman": None,
              "spearman_ci": None, "pearson": None, "pearson_ci": None, "mae": None,
              "train_seconds": training_seconds(folder), "undefined": {}}
    plain = {"method": method, **common, "pair_accuracy": accuracy, "pair_accuracy_ci": interval,
             "conflict_rate": metrics["conflict_rate"],
             "conflict_rate_ci": wilson_interval(int(outcome["conflict"].sum()), len(pairs)),
             "consistent_accuracy": metrics["consistent_accuracy"],
             "records_per_second": 2 * len(pairs) / max(seconds, 1e-9)}  # one presentation per record shown
    swap_averaged = {"method": f"{method}+balanced", **common, "pair_accuracy": balanced,
                     "pair_accuracy_ci": balanced_interval, "conflict_rate": 0.0, "consistent_accuracy": balanced,
                     "records_per_second": 2 * len(pairs) / max(seconds, 1e-9)}
    return [plain, swap_averaged]


def run_compare(config: CompareConfig) -> dict:
    """Train what config.train asks, score every available method on each split, write OUT/compare.{json,csv,md}."""
    from ehrjudge.train.pairwise import load_pairwise_judge

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    dataset, folders = resolve_inputs(config)
    folders.update(train_here(config, dataset))
    schema = Schema.load(dataset / "reference" / "schema.json")
    reference = dataset_reference(dataset, None)  # every method's prompt reads it, findings_dcr's with the patients
    per_record = scorers(folders, dataset, schema, reference, config)
    pairwise = {method: load_pairwise_judge(judge_folder(folders[method]))
                for method in (PAIRWISE, PAIRWISE_CONSISTENT) if method in folders}
    rows = []
    for split in config.splits:
        records, true = load_split(dataset, split, schema)
        if config.limit and config.limit < len(records):
            chosen = np.sort(np.random.default_rng(config.seed).choice(len(records), config.limit, replace=False))
            records, true = records.iloc[chosen].reset_index(drop=True), true[chosen]
        pairs, first_better = evaluation_pairs(true, config)
        for method, (score, train_seconds) in per_record.items():
            start = time.perf_counter()
            values = np.asarray(score(records), dtype=float)
            rows.append(score_row(method, split, values, true, pairs, first_better, time.perf_counter() - start,
                                  train_seconds, config))
        for method, loaded in pairwise.items():
            rows.extend(pairwise_row(method, split, folders[method], records, schema, reference, pairs,
                                     first_better, loaded, config))
    result = {"dataset": str(dataset), "methods": {name: str(path) for name, path in folders.items()},
              "splits": list(config.splits), "rows": rows}
    write_json(out / "compare.json", result)
    table = comparison_table(rows)
    write_csv(out / "compare.csv", table)
    write_text(out / "compare.md", markdown(table) + "\n")
    return result


def comparison_table(rows: list[dict]) -> pd.DataFrame:
    """The rows as one flat table, intervals as low/high columns."""
    flat = []
    for row in rows:
        entry = {key: value for key, value in row.items() if not key.endswith("_ci") and key != "undefined"}
        for key in ("spearman", "pearson", "pair_accuracy", "conflict_rate"):
            interval = row.get(f"{key}_ci")
            entry[f"{key}_low"], entry[f"{key}_high"] = (interval if interval else (None, None))
        flat.append(entry)
    columns = ["method", "split", "n_records", "n_pairs", "spearman", "spearman_low", "spearman_high", "pearson",
               "pearson_low", "pearson_high", "mae", "pair_accuracy", "pair_accuracy_low", "pair_accuracy_high",
               "conflict_rate", "conflict_rate_low", "conflict_rate_high", "consistent_accuracy", "records_per_second",
               "train_seconds"]
    return pd.DataFrame(flat).reindex(columns=columns)


def markdown(table: pd.DataFrame) -> str:
    """The table for people: value [95% interval], '-' where a metric does not apply."""

    def number(value, digits=3):
        return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"

    def with_interval(row, key):
        low, high = row[f"{key}_low"], row[f"{key}_high"]
        value = number(row[key])
        return value if value == "-" or low is None or pd.isna(low) else f"{value} [{number(low)}, {number(high)}]"

    header = ["method", "split", "n", "Spearman [95% CI]", "Pearson [95% CI]", "MAE", "pair accuracy [95% CI]",
              "conflict rate [95% CI]", "records/s", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [row["method"], row["split"], str(row["n_records"]), with_interval(row, "spearman"),
                 with_interval(row, "pearson"), number(row["mae"]), with_interval(row, "pair_accuracy"),
                 with_interval(row, "conflict_rate"), number(row["records_per_second"], 1),
                 number(row["train_seconds"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
