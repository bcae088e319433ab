"""Does the cap-line judge keep the score's holes closed, run after run? And what would enforcing the cap do?

    python benchmarks/cap_enforcement.py --runs runs/default,runs/allrec,runs/allrec660 \
        [--out benchmarks/results/cap_enforcement.json]

For each finished `ehrjudge run` folder whose judge reads the cap line (`prompt.show_caps`): the cap the line states
for every evaluated record (judge/findings.py `line_caps`: the lowest of the hardened caps, 10 when none), and the
judge's expected score beside min(expected score, cap) (its `capped_score`), on test and test_unseen (Spearman with
the verifiable score) and on the run's probes (mean per probe), beside the run's own formula, regressor and facts
scores on the same records. The probe records are rebuilt with the run's seeds
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
BASELINES = ("formula", "regressor", "facts")  # scored by the run itself, shown beside the judge


def split_rows(run: Path, schema, caps) -> dict:
    """caps: judge.scoring.matrix_caps of the run's prompt (records (m, p) in schema order -> the line's caps)."""
    rows = {}
    for split in ("test", "test_unseen"):
        table = pd.read_parquet(run / "evaluation" / f"{split}.parquet")
        records = pd.read_parquet(run / "dataset" / f"{split}.parquet").set_index("record_id").loc[
            table["record_id"]].reset_index()
        cap = caps(records[schema.names].to_numpy(dtype=float))
        judge, truth = table["trained_expected"].to_numpy(float), table["realism_score"].to_numpy(float)
        rows[split] = {"n": len(table), "capped_records": int((cap < 10).sum()),
                       "judge": float(spearmanr(judge, truth)[0]),
                       "judge_capped": float(spearmanr(np.minimum(judge, cap), truth)[0]),
                       **{name: float(spearmanr(table[f"{name}_score"], truth)[0])  # the run's own baselines
                          for name in BASELINES if f"{name}_score" in table}}
    return rows


def probe_rows(run: Path, config: dict, caps) -> dict:
    from ehrjudge.cohort.schema import Cohort
    from ehrjudge.config import config_from_dict
    from ehrjudge.pipeline.run import holdout_cohort
    from ehrjudge.scoring.config import ScoreConfig
    from ehrjudge.scoring.probes import run_probes

    dataset = run / "dataset"
    reference = Cohort.load(dataset / "reference")
    score = config_from_dict(ScoreConfig, config["score"])
    rebuilt, _ = run_probes(reference, holdout_cohort(dataset), score, config["probe_records"],
                            config["dataset"]["seed"], {"cap": caps})
    saved = pd.read_csv(run / "probes" / "probe_records.csv")
    if list(rebuilt["probe"]) != list(saved["probe"]) or not np.allclose(rebuilt["hardened"], saved["hardened"],
                                                                         atol=1e-4):
        raise SystemExit(f"{run}: rebuilt probe records do not match probes/probe_records.csv")
    saved["judge_capped"] = np.minimum(saved["judge"], rebuilt["cap"])
    columns = ["hardened", "judge", "judge_capped", *(name for name in BASELINES if name in saved)]
    means = saved.groupby("probe", sort=False)[columns].mean()
    return {probe: {k: float(v) for k, v in row.items()} for probe, row in means.iterrows()}


def main(argv: list[str]) -> dict:
    from ehrjudge.cohort.schema import Schema
    from ehrjudge.config import config_from_dict
    from ehrjudge.io import write_json
    from ehrjudge.judge.prompt import PromptConfig
    from ehrjudge.judge.reference import dataset_reference
    from ehrjudge.judge.scoring import matrix_caps

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/default")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cap_enforcement.json")
    args = parser.parse_args(argv)
    result = {"machine": {"processor": platform.processor(), "python": platform.python_version()}, "runs": {}}
    for name in args.runs.split(","):
        run = Path(name)
        config = yaml.safe_load((run / "config.yaml").read_text())
        prompt = config_from_dict(PromptConfig, config["train"]["prompt"])
        schema = Schema.load(run / "dataset" / "reference" / "schema.json")
        caps = matrix_caps(schema, prompt, dataset_reference(run / "dataset", prompt.record_format))
        if caps is None:
            raise SystemExit(f"{run}: its judge does not read the cap line (train.prompt.show_caps is off)")
        result["runs"][name] = {"splits": split_rows(run, schema, caps), "probes": probe_rows(run, config, caps)}
    write_json(args.out, result)
    for name, found in result["runs"].items():
        print(f"\n{name}")
        for split, row in found["splits"].items():
            baselines = ", ".join(f"{name} {row[name]:.3f}" for name in BASELINES if name in row)
            print(f"  {split}: judge {row['judge']:.3f}, min(judge, cap) {row['judge_capped']:.3f} "
                  f"({row['capped_records']} of {row['n']} records capped); {baselines}")
        for probe, row in found["probes"].items():
            baselines = "  ".join(f"{name} {row[name]:.2f}" for name in BASELINES if name in row)
            print(f"  {probe:22s} hardened {row['hardened']:.2f}  judge {row['judge']:.2f}  "
                  f"min(judge, cap) {row['judge_capped']:.2f}  {baselines}")
    print(f"-> {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
