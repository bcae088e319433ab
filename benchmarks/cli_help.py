"""CLI start-up: wall time and peak memory of `ehrjudge --help` and every `ehrjudge COMMAND --help` beside
`python -c pass` (target: each help under 1 s).

    python benchmarks/cli_help.py [--repeats 5] [--out benchmarks/results/cli_help.json]

Each command runs --repeats times in a fresh interpreter; the median and the minimum wall time are reported (the
minimum is the least disturbed by other jobs on the machine), with the child's peak RSS. A command's --help builds
its settings list from its config dataclass, so each command is timed. The load average before and after is saved
with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 1.0
# Runs one command and prints its wall seconds and peak RSS (MiB), so each command gets its own rusage.
TIMED = """
import resource, subprocess, sys, time
start = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
wall = time.perf_counter() - start
print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def ehrjudge_command() -> list[str]:
    """The installed `ehrjudge` script beside this interpreter, else `python -m ehrjudge.cli`."""
    script = Path(sys.executable).parent / "ehrjudge"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ehrjudge.cli"]


def command_names() -> list[str]:
    """Every registered command (importing the CLI here is cheap: that is what is measured)."""
    from typer.main import get_command

    from ehrjudge.cli import app

    return sorted(get_command(app).commands)


def measure(command: list[str], repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", TIMED, *command], check=True, capture_output=True, text=True)
        wall, rss = map(float, out.stdout.split())
        runs.append((wall, rss))
    walls = [wall for wall, _ in runs]
    return {"median_seconds": statistics.median(walls), "min_seconds": min(walls),
            "peak_rss_mib": max(rss for _, rss in runs), "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cli_help.json")
    args = parser.parse_args()

    load_before = os.getloadavg()
    cli = ehrjudge_command()
    rows = {"python -c pass": measure([sys.executable, "-c", "pass"], args.repeats),
            "ehrjudge --help": measure([*cli, "--help"], args.repeats)}
    for name in command_names():
        rows[f"ehrjudge {name} --help"] = measure([*cli, name, "--help"], args.repeats)
    helps = {name: row for name, row in rows.items() if name != "python -c pass"}
    slowest = max(helps, key=lambda name: helps[name]["median_seconds"])
    result = {"rows": rows, "target_seconds": TARGET_SECONDS, "slowest_help": slowest,
              "help_under_target": rows["ehrjudge --help"]["median_seconds"] < TARGET_SECONDS,
              "every_help_under_target": helps[slowest]["median_seconds"] < TARGET_SECONDS,
              "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps(result, indent=2))
    print(f"\n{'command':<36} {'median s':>9} {'min s':>7} {'peak RSS MiB':>13}")
    for name, row in rows.items():
        print(f"{name:<36} {row['median_seconds']:9.3f} {row['min_seconds']:7.3f} {row['peak_rss_mib']:13.1f}")
    print(f"`ehrjudge --help` under {TARGET_SECONDS:g} s: {'met' if result['help_under_target'] else 'NOT met'}; "
          f"slowest command help {slowest} {helps[slowest]['median_seconds']:.3f} s: "
          f"{'met' if result['every_help_under_target'] else 'NOT met'}; load average {load_before[0]:.1f} -> "
          f"{os.getloadavg()[0]:.1f} -> {args.out}")


if __name__ == "__main__":
    main()
