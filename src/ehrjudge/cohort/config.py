"""`FeatureConfig`: which codes become columns. Kept apart from featurize.py so `--help` reads it without pandas."""

from __future__ import annotations

import dataclasses

from ehrjudge.config import option

# The built-in clinosim cohort: its size (patients with records) and simulator seed, for `ehrjudge cohort` and the run.
DEFAULT_PATIENTS = 500
DEFAULT_SEED = 42


@dataclasses.dataclass
class FeatureConfig:
    """Which codes become columns, and how DuckDB may use the machine."""

    dx_top_k: int = option(500, "Diagnosis code columns: the K most prevalent codes (0 = none)")
    px_top_k: int = option(300, "Procedure code columns: the K most prevalent codes (0 = none)")
    rx_top_k: int = option(300, "Drug columns: the K most prevalent drug names (0 = none)")
    lab_top_k: int = option(300, "Lab item columns: the K most prevalent lab items (0 = none)")
    min_patients: int = option(2, "A code becomes a column only if at least this many patients have it")
    strict_codes: bool = option(True, "Codes missing from a source's own dictionary (d_icd_*, d_labitems) are errors")
    strict: bool = option(True, "Orphan rows (events of a patient id the source's patients lack), negative "
                                "lengths of stay and negative ages are errors; false: they are counted in a "
                                "warning and left out (the stay's length, the patient)")
    threads: int = option(2, "DuckDB worker threads")
    memory_limit: str = option("3GB", "DuckDB memory limit; larger work spills to disk")

    def top_k(self, group: str) -> int:
        return {"diagnoses": self.dx_top_k, "procedures": self.px_top_k,
                "prescriptions": self.rx_top_k, "labs": self.lab_top_k}[group]
