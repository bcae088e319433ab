"""Build a cohort directory from one source: load into DuckDB, featurize, write atomically.

The cache of simulated cohorts lives here too: `default_cohort(patients, seed)` builds one folder per
(patients, seed) under $EHRJUDGE_CACHE/cohorts, and a clinosim build of the same (patients, seed) elsewhere (the
pipeline's cohort stage) reuses that folder's simulator output instead of simulating again.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import tempfile
from pathlib import Path

from ehrjudge.cohort.config import DEFAULT_PATIENTS, DEFAULT_SEED
from ehrjudge.cohort.featurize import FeatureConfig, featurize
from ehrjudge.cohort.schema import Cohort, Schema
from ehrjudge.cohort.tables import connect, create_event_tables
from ehrjudge.config import save_config
from ehrjudge.errors import InputError
from ehrjudge.io import atomic_dir, write_json
from ehrjudge.paths import cache_dir

log = logging.getLogger(__name__)

SOURCES = ("clinosim", "mimic", "fhir")
RAW_COPY_LIMIT = 200 * 2**20  # source files larger than this in total are listed in raw/manifest.json, not copied


def simulated_cohort_dir(patients: int, seed: int) -> Path:
    """The cache folder of the clinosim cohort of (patients, seed)."""
    return cache_dir("cohorts") / f"clinosim-n{patients}-s{seed}"


def default_cohort(patients: int = DEFAULT_PATIENTS, seed: int = DEFAULT_SEED) -> Path:
    """The cached clinosim cohort dir for (patients, seed); built on first use (~30 s for 500)."""
    target = simulated_cohort_dir(patients, seed)
    if (target / "vectors.parquet").exists() and (target / "schema.json").exists():
        return target
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same cohort
        if not (target / "vectors.parquet").exists():
            build_cohort("clinosim", target, patients=patients, seed=seed)
    return target


def build_cohort(source: str, out: Path, path: Path | None = None, patients: int | None = DEFAULT_PATIENTS,
                 seed: int = DEFAULT_SEED, config: FeatureConfig | None = None, schema: Schema | None = None) -> Cohort:
    """Load `source` (clinosim: simulate N patients, or read `path`; mimic/fhir: read `path`), featurize, write `out`.

    `patients` is the number of patients with records for clinosim; for mimic/fhir it keeps the first N
    subject ids (None keeps all). `schema` re-applies an existing cohort's columns exactly.
    """
    config = config or FeatureConfig()
    if source not in SOURCES:
        raise InputError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if source != "clinosim" and path is None:
        raise InputError(f"--path is required for source {source!r}")
    if path is not None and not Path(path).exists():
        raise InputError("source path not found", file=path)
    # DuckDB spills inside the output's temporary folder, so a killed build leaves one folder, which the next
    # build of `out` removes (io.remove_stale).
    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(prefix=".duckdb-spill-", dir=tmp) as spill:
        raw = tmp / "raw"
        raw.mkdir()
        con = connect(config.threads, config.memory_limit, temp_directory=Path(spill))
        try:
            create_event_tables(con)
            origins = load_source(con, source, path, patients, seed, raw)
            cohort = featurize(con, source, config=config, schema=schema, origins=origins)
        finally:
            con.close()
        cohort.schema.settings.update({"patients": patients, "seed": seed, "path": str(path) if path else None})
        cohort.save(tmp)
        save_config(config, tmp / "feature_config.yaml")
    log.info("wrote cohort %s: %d patients x %d features", out, len(cohort), len(cohort.schema.features))
    return cohort


def load_source(con, source: str, path, patients, seed: int, raw: Path):
    if source == "clinosim":
        from ehrjudge.cohort.clinosim import build_simulated, copy_raw, load_clinosim

        if path is None:
            cached = simulated_cohort_dir(patients or DEFAULT_PATIENTS, seed) / "raw" / "csv"
            if (cached / "patients.csv").exists():  # same simulator run as default_cohort(patients, seed)
                log.info("reusing the cached simulation %s", cached)
                origins = load_clinosim(con, cached, patients=patients or DEFAULT_PATIENTS)
                copy_raw(cached, raw)
                return origins
            return build_simulated(con, raw, patients or DEFAULT_PATIENTS, seed)
        origins = load_clinosim(con, Path(path), patients=patients)
        copy_raw(Path(path) / "csv" if (Path(path) / "csv").is_dir() else Path(path), raw)
        return origins
    if source == "mimic":
        from ehrjudge.cohort.mimic import load_mimic

        origins, files = load_mimic(con, Path(path), patients=patients)
    else:
        from ehrjudge.cohort.fhir import load_fhir

        origins, files = load_fhir(con, Path(path), patients=patients)
    keep_raw(files, Path(path), raw)
    return origins


def keep_raw(files: list[Path], root: Path, raw: Path) -> None:
    """Copy the files read into raw/ when small; always write raw/manifest.json (path, size) for tracing."""
    files = sorted(set(files))
    total = sum(f.stat().st_size for f in files)
    copied = total <= RAW_COPY_LIMIT
    manifest = []
    for f in files:
        rel = f.relative_to(root) if root.is_dir() and f.is_relative_to(root) else Path(f.name)
        manifest.append({"file": str(f.resolve()), "bytes": f.stat().st_size,
                         "copied_as": str(rel) if copied else None})
        if copied:
            (raw / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, raw / rel)
    write_json(raw / "manifest.json", {"source_root": str(root.resolve()), "copied": copied, "files": manifest})
