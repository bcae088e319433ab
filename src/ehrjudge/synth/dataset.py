"""The judge's training data: scored synthetic records in train / val / test / test_unseen splits.

    reference cohort --split--> reference part (out/reference/) + held-out real patients
    candidate pool  = every generator family x strength grid, scored by the realism scorer (fit on the reference,
                      calibrated on the held-out patients), topped up where a score bin is short
    selection       = stratified by realism_score so every score 1..10 is (near) equally common
    splits          = near-duplicate groups (standardized distance below a threshold) assigned whole to one split;
                      families in `unseen_generators` go only to test_unseen
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse.csgraph import connected_components
from sklearn.neighbors import NearestNeighbors, radius_neighbors_graph

from ehrjudge.cohort.schema import Cohort
from ehrjudge.config import save_config, to_dict
from ehrjudge.io import atomic_dir, write_json, write_parquet
from ehrjudge.scoring.realism import RealismScorer
from ehrjudge.synth.config import SPLITS, DatasetConfig
from ehrjudge.synth.generators import generate

log = logging.getLogger(__name__)

SCORES = list(range(1, 11))


def split_reference(cohort: Cohort, fraction: float, seed: int) -> tuple[Cohort, Cohort]:
    """Randomly keep `fraction` of the patients out of the reference (at least 2 on each side)."""
    n = len(cohort)
    n_holdout = min(max(2, int(round(fraction * n))), n - 2)
    order = np.random.default_rng([seed, 1]).permutation(n)
    pick = lambda rows: Cohort(cohort.vectors.iloc[np.sort(rows)].reset_index(drop=True), cohort.schema)  # noqa: E731
    return pick(order[n_holdout:]), pick(order[:n_holdout])


class Pool:
    """Scored candidate records, generated cell by cell (family x strength)."""

    def __init__(self, reference: Cohort, holdout: Cohort, scorer: RealismScorer, seed: int):
        self.reference, self.holdout, self.scorer, self.seed = reference, holdout, scorer, seed
        self.frames: list[pd.DataFrame] = []
        self.calls = 0

    def add(self, name: str, strength: float, n: int) -> pd.DataFrame:
        self.calls += 1
        frame = generate(name, self.reference, n, strength, seed=self.seed * 1000 + self.calls, holdout=self.holdout)
        scores = self.scorer.score(frame[self.reference.schema.names].to_numpy(dtype=np.float64))
        frame = pd.concat([frame, scores.set_axis(frame.index)], axis=1)
        self.frames.append(frame)
        return frame

    def frame(self) -> pd.DataFrame:
        return pd.concat(self.frames, ignore_index=True)


def build_pool(pool: Pool, families: list[str], strengths: list[float], needed: int, config: DatasetConfig) -> None:
    """Fill the pool over the grid, then top up the score bins that hold less than an even share of `needed`."""
    cells = [(name, s) for name in families for s in (strengths if name != "holdout_real" else [0.0])]
    per_cell = max(10, math.ceil(config.pool_factor * needed / len(cells)))
    for name, strength in cells:  # holdout_real: each held-out patient once (repeats only in top-ups)
        pool.add(name, strength, per_cell if name != "holdout_real" else len(pool.holdout))
    target = math.ceil(config.pool_factor * needed / len(SCORES))
    for round_index in range(config.top_up_rounds):
        frame = pool.frame()
        frame = frame[frame.generator.isin(families)]
        counts = frame.realism_score.value_counts().reindex(SCORES, fill_value=0)
        short = [b for b in SCORES if counts[b] < target]
        if not short:
            return
        rates = pd.crosstab([frame.generator, frame.strength], frame.realism_score, normalize="index")
        rates = rates.reindex(columns=SCORES, fill_value=0.0)
        for score in short:
            cell, rate = rates[score].idxmax(), float(rates[score].max())
            if rate <= 0:
                log.warning("dataset/top_up no family x strength yields score %d", score)
                continue
            n = int(min(4 * per_cell, math.ceil(1.2 * (target - counts[score]) / rate)))
            log.info("dataset/top_up round %d: score %d short by %d, +%d from %s", round_index, score,
                     target - counts[score], n, cell)
            pool.add(cell[0], float(cell[1]), n)


def select_balanced(frame: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Pick `n` rows with realism scores as even as availability allows (water-filling over the 10 bins);
    within a bin, round-robin over generator families so no family crowds a bin."""
    available = frame.realism_score.value_counts().reindex(SCORES, fill_value=0)
    quota = pd.Series(0, index=SCORES)
    remaining = min(n, len(frame))
    while remaining > 0:
        open_bins = [b for b in SCORES if quota[b] < available[b]]
        share = max(1, remaining // len(open_bins))
        for b in open_bins:
            take = min(share, available[b] - quota[b], remaining)
            quota[b] += take
            remaining -= take
            if remaining == 0:
                break
    chosen = []
    for b in SCORES:
        rows = frame[frame.realism_score == b]
        rows = rows.iloc[rng.permutation(len(rows))]
        rank = rows.groupby("generator").cumcount()  # round-robin order across families
        chosen.append(rows.assign(_rank=rank.to_numpy()).sort_values("_rank", kind="stable").head(int(quota[b])))
    return pd.concat(chosen).drop(columns="_rank")


def near_duplicate_groups(matrix: np.ndarray, reference: np.ndarray, fraction: float) -> tuple[np.ndarray, float]:
    """Connected components of the graph 'standardized distance < fraction x median reference NN distance'."""
    mean, std = reference.mean(axis=0), reference.std(axis=0)
    std[std == 0] = 1.0
    ref_std = (reference - mean) / std
    nn = NearestNeighbors(n_neighbors=2).fit(ref_std).kneighbors(ref_std)[0][:, 1]
    radius = float(fraction * np.median(nn))
    if radius <= 0:
        return np.arange(len(matrix)), radius
    graph = radius_neighbors_graph((matrix - mean) / std, radius, mode="connectivity", include_self=False)
    return connected_components(graph, directed=False)[1], radius


def assign_splits(groups: np.ndarray, targets: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    """Whole groups to splits, largest first, each to the split furthest below its target (relative)."""
    labels, sizes = np.unique(groups, return_counts=True)
    order = np.lexsort((rng.random(len(labels)), -sizes))
    filled = dict.fromkeys(targets, 0)
    split_of_group = {}
    for i in order:
        name = min(targets, key=lambda s: (filled[s] + sizes[i]) / max(targets[s], 1e-9))
        split_of_group[labels[i]] = name
        filled[name] += sizes[i]
    return np.array([split_of_group[g] for g in groups])


def histogram(scores: pd.Series) -> dict[int, int]:
    return {int(b): int(c) for b, c in scores.value_counts().reindex(SCORES, fill_value=0).items()}


def build_dataset(reference_dir, out, config: DatasetConfig | None = None) -> Path:
    """Build the judge dataset dir `out` (written atomically) from the real cohort in `reference_dir`."""
    config = config or DatasetConfig()
    out = Path(out)
    cohort = Cohort.load(reference_dir)
    reference, holdout = split_reference(cohort, config.holdout_fraction, config.seed)
    log.info("dataset/split %d reference, %d held-out real patients", len(reference), len(holdout))
    scorer = RealismScorer(config.score, reference.schema).fit(reference.matrix(), holdout.matrix())
    sizes = config.split_sizes()
    seen = [g for g in config.generators if g not in config.unseen_generators]
    unseen = list(config.unseen_generators)
    rng = np.random.default_rng([config.seed, 2])

    pool = Pool(reference, holdout, scorer, config.seed)
    build_pool(pool, seen, config.strengths, sizes["train"] + sizes["val"] + sizes["test"], config)
    if sizes["test_unseen"]:
        build_pool(pool, unseen, config.strengths, sizes["test_unseen"], config)
    candidates = pool.frame()
    if candidates.record_id.duplicated().any():
        raise AssertionError("generator record ids collide")  # ids carry family, strength, call seed and index

    chosen_seen = select_balanced(candidates[candidates.generator.isin(seen)],
                                  sizes["train"] + sizes["val"] + sizes["test"], rng)
    chosen_unseen = select_balanced(candidates[candidates.generator.isin(unseen)], sizes["test_unseen"], rng) \
        if sizes["test_unseen"] else candidates.iloc[:0]
    chosen = pd.concat([chosen_seen, chosen_unseen], ignore_index=True)
    names = reference.schema.names
    groups, radius = near_duplicate_groups(chosen[names].to_numpy(dtype=np.float64), reference.matrix(),
                                           config.near_duplicate_threshold)
    is_unseen = chosen.generator.isin(unseen).to_numpy()
    # A seen record near-identical to an unseen one would leak the unseen family: drop the seen one.
    unseen_groups = set(groups[is_unseen])
    leaking = ~is_unseen & np.isin(groups, list(unseen_groups))
    split = np.full(len(chosen), "test_unseen", dtype=object)
    keep_seen = ~is_unseen & ~leaking
    split[keep_seen] = assign_splits(groups[keep_seen], {k: sizes[k] for k in ("train", "val", "test")}, rng)
    split[leaking] = "dropped"
    chosen["split"] = split

    columns = ["record_id", "generator", "strength", *names, *scorer.columns]
    summary = summarize(candidates, chosen, config, radius, groups, len(reference), len(holdout), leaking)
    with atomic_dir(out) as tmp:
        (tmp / "reference" / "raw").mkdir(parents=True)
        reference.save(tmp / "reference")
        write_json(tmp / "reference" / "raw" / "provenance.json",
                   {"source_cohort": str(Path(reference_dir).resolve()), "role": "reference part of the cohort",
                    "held_out_subject_ids": [str(i) for i in holdout.ids]})
        # The held-out real patients calibrate the score; saved so that later scoring (suite, gate)
        # calibrates exactly as these labels were.
        (tmp / "holdout").mkdir()
        holdout.save(tmp / "holdout")
        for name in SPLITS:
            part = chosen[chosen.split == name]
            write_parquet(tmp / f"{name}.parquet", part[columns].reset_index(drop=True))
        save_config(config, tmp / "config.yaml")
        write_json(tmp / "dataset.json", summary)
    log.info("dataset/written %s", out)
    return out


def summarize(candidates, chosen, config, radius, groups, n_reference, n_holdout, leaking) -> dict:
    """dataset.json: resolved config, split sizes and histograms, the generator x strength score table."""
    table = candidates.groupby(["generator", "strength"]).realism_continuous.agg(["mean", "count"])
    score_table = candidates.groupby(["generator", "strength"]).realism_score.mean()
    splits = {}
    for name in SPLITS:
        part = chosen[chosen.split == name]
        splits[name] = {"n": int(len(part)), "histogram": histogram(part.realism_score),
                        "generators": {str(k): int(v) for k, v in part.generator.value_counts().items()}}
    train = chosen[chosen.split == "train"]
    shares = pd.Series(histogram(train.realism_score)) / max(len(train), 1)
    return {
        "config": to_dict(config),
        "n_reference": n_reference,
        "n_holdout": n_holdout,
        "n_candidates": int(len(candidates)),
        "near_duplicate_radius": radius,
        "n_near_duplicate_groups": int(len(np.unique(groups))),
        "n_dropped_leaking_into_unseen": int(leaking.sum()),
        "min_bin_fraction_met": bool((shares >= config.min_bin_fraction).all()),
        "train_min_bin_fraction": float(shares.min()),
        "splits": splits,
        "pool_histogram": histogram(candidates.realism_score),
        "generator_strength_table": [
            {"generator": g, "strength": float(s), "mean_realism_continuous": float(row["mean"]),
             "mean_realism_score": float(score_table[(g, s)]), "n": int(row["count"])}
            for (g, s), row in table.iterrows()],
    }
