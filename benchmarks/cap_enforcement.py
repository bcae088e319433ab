"""Does the cap-line judge keep the score's holes closed, run after run? And what would enforcing the cap do?

    python benchmarks/cap_enforcement.py --runs runs/default,runs/allrec,runs/allrec660 \
        [--out benchmarks/results/cap_enforcement.json]

For each finished `ehrjudge run` folder whose judge reads the cap line (`prompt.show_caps`): the cap the line states
for every evaluated record (judge/findings.py `line_caps`: the lowest of the hardened caps, 10 when none), and the
judge's expected score beside min(expected score, cap) (its `capped_score`), on test and test_unseen (Spearman with
the verifiable score) and on the run's probes (mean per probe). The probe records are rebuilt with the run's seeds
(scoring/probes.py is deterministic) and matched to probes/probe_records.csv row by row, checked on the hardened
score. Nothing is retrained or re-judged: the judge's numbers are the run's own.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
import yaml

ROOT = Path(__file__).resolve().parents[1]


def line_caps(records: pd.DataFrame, dataset: Path, schema) -> np.ndarray:
    """(n,) the cap the judge's cap line states for each record (10 when none)."""
    from ehrjudge.judge.findings import line_caps
    from ehrjudge.judge.reference import dataset_reference

    return line_caps(records, schema, dataset_reference(dataset, "findings_dcr"), closest=True)


def split_rows(run: Path, schema) -> dict:
    rows = {}
    for split in ("test", "test_unseen"):
        table = pd.read_parquet(run / "evaluation" / f"{split}.parquet")
        records = pd.read_parquet(run / "dataset" / f"{split}.parquet").set_index("record_id").loc[
            table["record_id"]].reset_index()
        cap = line_caps(records, run / "dataset", schema)
        judge, truth = table["trained_expected"].to_numpy(float), table["realism_score"].to_numpy(float)
        rows[split] = {"n": len(table), "capped_records": int((cap < 10).sum()),
                       "judge": float(spearmanr(judge, truth)[0]),
                       "judge_capped": float(spearmanr(np.minimum(judge, cap), truth)[0])}
    return rows


def probe_rows(run: Path, config: dict) -> dict:
    from ehrjudge.cohort.schema import Cohort
    from ehrjudge.config import config_from_dict
    from ehrjudge.pipeline.run import holdout_cohort
    from ehrjudge.scoring.config import ScoreConfig
    from ehrjudge.scoring.probes import run_probes

    dataset = run / "dataset"
    reference = Cohort.load(dataset / "reference")
    score = config_from_dict(ScoreConfig, config["score"])
    caps = {"cap": lambda matrix: line_caps(pd.DataFrame(matrix, columns=reference.schema.names), dataset,
                                            reference.schema)}
    rebuilt, _ = run_probes(reference, holdout_cohort(dataset), score, config["probe_records"],
                            config["dataset"]["seed"], caps)
    saved = pd.read_csv(run / "probes" / "probe_records.csv")
    if list(rebuilt["probe"]) != list(saved["probe"]) or not np.allclose(rebuilt["hardened"], saved["hardened"],
                                                                         atol=1e-4):
        raise SystemExit(f"{run}: rebuilt probe records do not match probes/probe_records.csv")
    saved["judge_capped"] = np.minimum(saved["judge"], rebuilt["cap"])
    means = saved.groupby("probe", sort=False)[["hardened", "judge", "judge_capped"]].mean()
    return {probe: {k: float(v) for k, v in row.items()} for probe, row in means.iterrows()}


def main(argv: list[str]) -> dict:
    from ehrjudge.cohort.schema import Schema
    from ehrjudge.io import write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/default")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cap_enforcement.json")
    args = parser.parse_args(argv)
    result = {"machine": {"processor": platform.processor(), "python": platform.python_version()}, "runs": {}}
    for name in args.runs.split(","):
        run = Path(name)
        config = yaml.safe_load((run / "config.yaml").read_text())
        if not config["train"]["prompt"].get("show_caps"):
            raise SystemExit(f"{run}: its judge does not read the cap line (train.prompt.show_caps is off)")
        schema = Schema.load(run / "dataset" / "reference" / "schema.json")
        result["runs"][name] = {"splits": split_rows(run, schema), "probes": probe_rows(run, config)}
    write_json(args.out, result)
    for name, found in result["runs"].items():
        print(f"\n{name}")
        for split, row in found["splits"].items():
            print(f"  {split}: judge {row['judge']:.3f}, min(judge, cap) {row['judge_capped']:.3f} "
                  f"({row['capped_records']} of {row['n']} records capped)")
        for probe, row in found["probes"].items():
            print(f"  {probe:22s} hardened {row['hardened']:.2f}  judge {row['judge']:.2f}  "
                  f"min(judge, cap) {row['judge_capped']:.2f}")
    print(f"-> {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
