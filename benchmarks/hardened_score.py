"""The hardened realism score against issue 14's targets, beside the seed score, on one cohort.

    python benchmarks/hardened_score.py [--cohort DIR | --patients 500] [--out benchmarks/results/hardened_score.json]

Builds (or reads) a clinosim cohort, splits it as `ehrjudge dataset` does (20 % held out), then prints and saves:
- the probe table (scoring/probes.py, cross-fitted): every hack probe should score <= 3 (mean), held-out real
  patients median >= 9, rule violators >= 3 points below their clean originals;
- the generator ladder: mean hardened and seed score per family x strength (150 records a cell);
- agreement with the seed score on records that are neither copies nor invalid (no near copy, no invalid value,
  no essential rule broken): Spearman per record and over cells (mean per family x strength, cells with >= 20 such
  records), target >= 0.9; on the dataset's default pool of families and on all families (the newer ones have
  defects the seed score cannot see, so disagreeing there is the point);
- the noisy-copy spread: mean hardened score at the first strength whose records are not copies minus at strength 1,
  target >= 5 points (strength 0 of noisy_copy is an exact copy, capped by design); beside it the same over the
  records that are not near copies (at strength 0.1 some keep nearly all their patient's codes and link to it);
- copies edited in k cells (k codes the patient lacks added once; k = 1, 2, 3, 5, 8, 16), copies with 3 codes
  removed, near copies (noise of 1 % of an SD on the continuous cells, as the near_copy probe) with one or five codes
  added, and copies with the age moved by 10 years, at near_copy_free_cells 0 (the plain distance), 1 (the default of
  2026-12-07 evening) and at the default's, each without record linkage, and at the default (record linkage on): mean
  score and the share <= 3; beside them the share of held-out real patients the privacy cap lowers (cross-fitted,
  from the probe records), the price of counting edited copies as copies (scoring/hardened/privacy.py, linkage.py);
- scoring speed, records/s, hardened vs seed on the same records.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ehrjudge.cohort.schema import Cohort
from ehrjudge.io import write_json
from ehrjudge.scoring.probes import add_codes, markdown_table, run_probes
from ehrjudge.scoring.realism import RealismScorer, ScoreConfig
from ehrjudge.synth.dataset import split_reference
from ehrjudge.synth.config import DEFAULT_POOL
from ehrjudge.synth.generators import GENERATORS, generate

RESULTS = Path(__file__).resolve().parent / "results" / "hardened_score.json"
STRENGTHS = (0.0, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0)


def load_cohort(args) -> Cohort:
    if args.cohort is not None:
        return Cohort.load(args.cohort)
    from ehrjudge.cohort.build import build_cohort  # noqa: PLC0415 - only when simulating

    out = Path(args.work) / f"clinosim_{args.patients}_{args.seed}"
    if not (out / "vectors.parquet").exists():
        build_cohort("clinosim", out, patients=args.patients, seed=args.seed)
    return Cohort.load(out)


def ladder(reference: Cohort, holdout: Cohort, hardened: RealismScorer, seed: RealismScorer, n: int) -> pd.DataFrame:
    frames = []
    for name in GENERATORS:
        for strength in ([0.0] if name == "holdout_real" else STRENGTHS):
            records = generate(name, reference, n, strength, seed=1, holdout=holdout)
            matrix = records[reference.schema.names].to_numpy(dtype=np.float64)
            scores = hardened.score(matrix)
            scores["seed"] = seed.score(matrix)["realism_continuous"].to_numpy()
            scores["generator"], scores["strength"] = name, strength
            frames.append(scores)
    return pd.concat(frames, ignore_index=True)


def edited_copies(reference: Cohort, holdout: Cohort, config: ScoreConfig, probe_records: int, seed: int) -> dict:
    """Copies of reference patients edited in a few cells, at free_cells 0 and at config's (module docstring)."""
    rng = np.random.default_rng([seed, 11])
    matrix, schema = reference.matrix(), reference.schema
    codes = np.array([f.code is not None and f.kind != "continuous" for f in schema.features])
    copies = matrix[rng.choice(len(matrix), size=min(200, len(matrix)), replace=False)]
    attacks = {}
    present = codes & (matrix.max(axis=0) > 0)  # codes some reference patient has
    for k in (1, 2, 3, 5, 8, 16):
        attacks[f"{k}_codes_added"] = add_codes(copies, present, k, rng)
    continuous = np.array([f.kind == "continuous" for f in schema.features]) & (matrix.std(axis=0) > 0)
    noisy = copies.copy()  # the near_copy probe's noise (1 % of an SD, continuous cells), then one code added
    noisy[:, continuous] += rng.normal(0.0, 0.01, size=(len(noisy), int(continuous.sum()))) * matrix.std(axis=0)[
        continuous]
    noisy = np.where(matrix.min(axis=0) >= 0, np.maximum(noisy, 0.0), noisy)
    noisy_edited = noisy.copy()
    for record in noisy_edited:
        absent = np.flatnonzero(codes & (record == 0) & (matrix.max(axis=0) > 0))
        record[rng.choice(absent)] += 1.0
    attacks["noise_plus_1_code_added"] = noisy_edited
    attacks["noise_plus_5_codes_added"] = add_codes(noisy, present, 5, rng)
    removed = copies.copy()
    for record in removed:
        present = np.flatnonzero(codes & (record > 0))
        record[rng.choice(present, size=min(3, len(present)), replace=False)] = 0.0
    attacks["3_codes_removed"] = removed
    if "age" in schema.names:
        aged = copies.copy()
        aged[:, schema.names.index("age")] += 10.0
        attacks["age_plus_10_years"] = aged
    result = {}
    variants = [(free_cells, 0.0) for free_cells in sorted({0, 1, config.near_copy_free_cells})]
    variants.append((config.near_copy_free_cells, config.near_copy_linkage_percentile))  # the default
    for free_cells, linkage in variants:
        cfg = dataclasses.replace(config, near_copy_free_cells=free_cells, near_copy_linkage_percentile=linkage)
        scorer = RealismScorer(cfg, schema).fit(matrix, holdout.matrix())
        row = {name: {"mean": float(scored["realism_continuous"].mean()),
                      "share_le_3": float((scored["realism_continuous"] <= 3).mean())}
               for name, scored in ((name, scorer.score(records)) for name, records in attacks.items())}
        probes = run_probes(reference, holdout, cfg, probe_records, seed)[0]
        real = probes[probes.probe == "holdout_real"]
        row["holdout_real_privacy_capped_share"] = float(real["caps"].str.contains("near_copy").mean())
        row["holdout_real_median"] = float(real["hardened"].median())
        result[f"free_cells_{free_cells}_linkage_{linkage:g}"] = row
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, default=None, help="cohort dir (default: simulate one)")
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--per-cell", type=int, default=150)
    parser.add_argument("--probe-records", type=int, default=200)
    parser.add_argument("--work", type=Path, default=Path(".cache/bench"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    cohort = load_cohort(args)
    reference, holdout = split_reference(cohort, 0.2, args.seed)
    config = ScoreConfig()
    hardened = RealismScorer(config, reference.schema).fit(reference.matrix(), holdout.matrix())
    seed = RealismScorer(ScoreConfig(definition="seed"), reference.schema).fit(reference.matrix(), holdout.matrix())

    records, table = run_probes(reference, holdout, config, args.probe_records, args.seed)
    print(markdown_table(table))
    by_probe = table.set_index("probe")
    hack = by_probe[by_probe.kind == "hack"]

    scores = ladder(reference, holdout, hardened, seed, args.per_cell)
    cells = scores.groupby(["generator", "strength"]).agg(
        hardened=("realism_continuous", "mean"), seed=("seed", "mean"), near_copy=("near_copy", "mean"),
        invalid=("n_invalid", lambda x: float((x > 0).mean())),
        essential=("caps", lambda x: float(x.str.contains("essential_rule").mean())),
        rule_broken=("rule_violations", lambda x: float((x != "").mean()))).reset_index()
    print(cells.round(2).to_string(index=False))
    clean = scores[(scores.n_invalid == 0) & ~scores.near_copy & ~scores.caps.str.contains("essential_rule")]
    agreement = {}
    for families, name in ((DEFAULT_POOL, "default_pool"), (list(GENERATORS), "all_families")):
        part = clean[clean.generator.isin(families)]
        part_cells = part.groupby(["generator", "strength"]).agg(
            hardened=("realism_continuous", "mean"), seed=("seed", "mean"), n=("seed", "size")).reset_index()
        part_cells = part_cells[part_cells.n >= 20]
        agreement[name] = {"per_record": float(spearmanr(part.realism_continuous, part.seed)[0]),
                           "per_cell": float(spearmanr(part_cells.hardened, part_cells.seed)[0]),
                           "clean_records": int(len(part)), "cells": int(len(part_cells))}
    noisy = cells[(cells.generator == "noisy_copy")].set_index("strength")
    first_non_copy = float(noisy[noisy.near_copy < 0.5].index.min())
    spread = float(noisy.loc[first_non_copy, "hardened"] - noisy.loc[1.0, "hardened"])
    noisy_records = scores[(scores.generator == "noisy_copy") & ~scores.near_copy]  # the same, copies left out
    spread_non_copies = float(noisy_records[noisy_records.strength == first_non_copy].realism_continuous.mean()
                              - noisy_records[noisy_records.strength == 1.0].realism_continuous.mean())

    edits = edited_copies(reference, holdout, config, args.probe_records, args.seed)
    for name, row in edits.items():
        print(name, {key: value if isinstance(value, float) else {k: round(v, 2) for k, v in value.items()}
                     for key, value in row.items()})

    matrix = generate("gaussian_copula", reference, 5000, 0.2, seed=9)[reference.schema.names].to_numpy(float)
    speed = {}
    for name, scorer in (("hardened", hardened), ("seed", seed)):
        start = time.perf_counter()
        scorer.score(matrix)
        speed[name] = len(matrix) / (time.perf_counter() - start)

    targets = {
        "hack_probes_mean_max": float(hack["hardened_mean"].max()),
        "hack_probes_all_mean_le_3": bool((hack["hardened_mean"] <= 3).all()),
        "holdout_real_median": float(by_probe.loc["holdout_real", "hardened_median"]),
        "rule_violator_gap": float(by_probe.loc["clean_original", "hardened_mean"]
                                   - by_probe.loc["rule_violator", "hardened_mean"]),
        "spearman_vs_seed_clean_per_record_default_pool": agreement["default_pool"]["per_record"],
        "spearman_vs_seed_clean_per_cell_default_pool": agreement["default_pool"]["per_cell"],
        "spearman_vs_seed_clean_per_record_all_families": agreement["all_families"]["per_record"],
        "spearman_vs_seed_clean_per_cell_all_families": agreement["all_families"]["per_cell"],
        "clean_share": float(len(clean) / len(scores)),
        "noisy_copy_first_non_copy_strength": first_non_copy, "noisy_copy_spread": spread,
        "noisy_copy_spread_non_copies": spread_non_copies,
    }
    result = {"machine": platform.processor() or platform.machine(), "n_reference": len(reference),
              "n_holdout": len(holdout), "features": len(reference.schema.names), "config": config.__dict__ | {
                  "rules_file": str(config.rules_file)},
              "targets": targets, "agreement_with_seed": agreement, "edited_copies": edits,
              "records_per_second": speed, "probes": table.to_dict(orient="records"),
              "ladder": cells.to_dict(orient="records")}
    write_json(args.out, result)
    for key, value in targets.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    print(f"records/s: hardened {speed['hardened']:.0f}, seed {speed['seed']:.0f} -> {args.out}")


if __name__ == "__main__":
    main()
