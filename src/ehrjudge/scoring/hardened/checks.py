"""The hardened score's record checks that need no reference patient: validity, the clinical rubric, code sparsity.

    validity  value domains of the reference (validity.py): n_invalid hard violations, n_unusual soft ones
    rubric    the weighted clinical checklist (rubric.py): rubric_pass, essential_violated, rule_violations
    sparsity  sparsity_z = max over tables |normal score| of the record's number of distinct codes in that table
              against the reference's distribution of it (normal_scores.py); too dense and too empty both count

Everything is built from a ReferenceStats (marginal statistics only: minima, maxima, share at the minimum, code-count
histograms), so the HardenedScorer fitted on a cohort and a judge reading its folder's reference_stats.json run the
same checks (the `findings` record text of judge/findings.py shows them).
"""

from __future__ import annotations

import numpy as np

from ehrjudge.cohort.reference_stats import ReferenceStats, code_groups
from ehrjudge.cohort.schema import Schema
from ehrjudge.errors import InputError
from ehrjudge.scoring.hardened.normal_scores import NormalScores
from ehrjudge.scoring.hardened.rubric import Rubric
from ehrjudge.scoring.hardened.validity import Validity
from ehrjudge.scoring.single_table.rules import load_rules


class RecordChecks:
    """`RecordChecks(score_config, schema, reference_stats).check(records)`; score_config is a ScoreConfig."""

    def __init__(self, config, schema: Schema, stats: ReferenceStats):
        if not stats.has_domains:
            raise InputError("these reference statistics hold no value domains (written by an ehrjudge before "
                             "they existed); rebuild them from the reference cohort (ReferenceStats.from_cohort)")
        stats.check_schema(schema)
        self.validity = Validity(schema, config.range_margin, config.floor_mass).fit_domains(
            stats.minimum, stats.maximum, stats.floor_share)
        self.rubric = Rubric(load_rules(config.rules_file), schema)
        self.groups = code_groups(schema)  # table -> its code columns
        missing = sorted(set(self.groups) - set(stats.code_counts))
        if missing:
            raise InputError(f"the reference statistics hold no code counts of table(s) {missing}")
        histograms = [stats.code_counts[group] for group in self.groups]
        self.sparsity = NormalScores().fit_histograms([h["levels"] for h in histograms],
                                                      [h["patients"] for h in histograms],
                                                      [h["std"] for h in histograms]) if self.groups else None

    def code_counts(self, records: np.ndarray) -> np.ndarray:
        """(n, tables) number of distinct codes a record has in each table of `groups`; (n, 0) without code columns."""
        if not self.groups:
            return np.zeros((len(records), 0))
        return np.stack([(records[:, columns] != 0).sum(axis=1) for columns in self.groups.values()],
                        axis=1).astype(float)

    def sparsity_scores(self, counts: np.ndarray) -> np.ndarray:
        """(n, tables) normal score of each table's number of distinct codes (`code_counts`)."""
        return self.sparsity.transform(counts) if self.sparsity is not None else counts

    def check(self, records: np.ndarray) -> dict[str, np.ndarray]:
        """(n,) arrays: n_invalid, n_unusual, invalid_columns, rubric_pass, essential_violated, rule_violations,
        sparsity_z (0 when the schema has no code columns)."""
        return self.check_with_counts(records)[0]

    def check_with_counts(self, records: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """`check`'s arrays, and the (n, tables) code counts and their normal scores it read them from."""
        counts = self.code_counts(records)
        scores = self.sparsity_scores(counts)
        sparsity_z = np.abs(scores).max(axis=1) if scores.shape[1] else np.zeros(len(records))
        found = {**self.validity.check(records), **self.rubric.check(records), "sparsity_z": sparsity_z}
        return found, counts, scores
