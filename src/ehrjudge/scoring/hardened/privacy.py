"""The hardened score's privacy input: each record's distance to its closest reference patient (DCR) against the
distance at which held-out real patients sit from the reference, with copies edited in a few cells counted as copies.

    DCR(x)    = min_r ||z(x) - z(r)||_2        z: reference z-scores on the reference's varying columns
    DCR_t(x)  = min_r ||z(x) - z(r)||_(t)      ||v||_(t): the 2-norm of v without its t largest |v_j| (t = free_cells)
    DCR_q, DCR_t,q = the `percentile`-th percentile of each over held-out real patients (the near-copy distances)
    ratio     = DCR / DCR_q, lowered to DCR_t / DCR_t,q where that is below 1, and to the record-linkage ratio
                where the record links to a reference patient (linkage.py; linkage_percentile > 0)
    near copy: ratio <= 1;   privacy_cap = 1 + 9 min(1, ratio)   (scorer.py)

Why DCR_t: the plain DCR sums every cell, so one edited cell hides a copy. A reference patient with one code added or
the age moved by 10 years sits 1-20 z from its source, farther than most new real patients sit from the reference,
and scored 9.2 and 9.8 on the default cohort (benchmarks/hardened_score.py, 2026-12-07). DCR_t skips the t cells
that differ most, so a copy edited in at most t cells has DCR_t = 0. Each distance is calibrated on the held-out
patients by itself: a record counts as a copy when it is closer than nearly all new real patients are, in either
sense. t = 0 is the plain DCR alone (the hardened definition before 2026-12-07 evening); the default t = 3 flags no
more held-out patients than t = 1 on the default cohort, nor does t = 4 (measured after the default's runs), while at
t = 5, 13 % of them sit at DCR_5 = 0 from a reference patient (docs/scoring.md). What stays open: copies edited in
more than t cells, and copies with noise on every cell plus an edit (benchmarks/hardened_score.py): record linkage
(linkage.py) catches most of those, since it counts what a record reproduces of a patient rather than how far it is.

Search, exact: if ||v||_(t) <= R, then splitting the columns into t + 1 blocks, one block holds none of the t
skipped cells (pigeonhole), so the reference patient is within R of the record on that block alone. Blocks are
screened with float64 Gram distances (a relative slack of 1e-9 over their rounding error), and only the pairs found
get the exact DCR_t from their differences; DCR_t above the radius R is not needed (it cannot lower the ratio below 1)
and is reported as +inf.

Park et al. 2018 (DCR); Yale et al. 2020. The one place this distance is computed: the hardened scorer caps by it,
and the `findings_dcr` record text (judge/findings.py) shows the ratio, so a judge reading it sees exactly what the
score's privacy cap sees. It needs the patients; no judge folder stores them.
"""

from __future__ import annotations

import logging

import numpy as np

from ehrjudge.errors import InputError
from ehrjudge.scoring.hardened.linkage import RecordLinkage
from ehrjudge.scoring.knn import ExactKNN

log = logging.getLogger(__name__)

EXACT_COPY = 1e-9  # DCR at or below this (reference z-scores) is an exact copy of a reference patient


class ClosestPatient:
    """`ClosestPatient(percentile, chunk_size, free_cells, linkage_percentile).fit(reference, calibration)`; then
    `nearest(records)`, `copy_ratio(records)`, `ratio(records)`. linkage_percentile 0: no record linkage."""

    def __init__(self, percentile: float = 5.0, chunk_size: int = 2048, free_cells: int = 0,
                 linkage_percentile: float = 0.0):
        if free_cells < 0:
            raise InputError(f"free_cells must be >= 0, got {free_cells}")
        self.percentile, self.chunk_size, self.free_cells = percentile, chunk_size, int(free_cells)
        self.linkage_percentile = float(linkage_percentile)

    def fit(self, reference: np.ndarray, calibration: np.ndarray) -> "ClosestPatient":
        std = reference.std(axis=0)
        self.varying_ = std > 0
        if not self.varying_.any():
            raise InputError("every column is constant in the reference; nothing to measure distances in")
        self.mean_, self.scale_ = reference.mean(axis=0), np.where(self.varying_, std, 1.0)
        standardized = self.standardize(reference)
        self.knn_ = ExactKNN(standardized, self.chunk_size)  # its .reference is the edited-copy search's too
        self.reference_nn_ = self.knn_.kneighbors(standardized, 2)[0][:, 1]  # each one's nearest other
        held_out = self.nearest(calibration)[0]
        self.holdout_dcr_ = np.sort(held_out)
        self.threshold_ = self._quantile(held_out, "DCR")
        self.edited_threshold_ = None  # None: no edited-copy distance (free_cells 0, or too few columns: a copy
        if 0 < self.free_cells < standardized.shape[1] / 2:  # must share more cells than it may differ in)
            # DCR_t <= DCR, so its lower tail lies within the plain threshold: search that far
            held_edited = np.minimum(self.edited_distance(calibration, self.threshold_), held_out)
            self.edited_threshold_ = self._quantile(held_edited, f"DCR over all but {self.free_cells} cell(s)")
        self.linkage_ = None if self.linkage_percentile <= 0 else RecordLinkage(
            self.linkage_percentile, self.chunk_size).fit(reference, calibration)
        return self

    def _quantile(self, held_out: np.ndarray, what: str) -> float:
        """The `percentile`-th percentile of held-out distances; where that is 0 (real duplicates, sparse vectors),
        the smallest non-zero one."""
        threshold = float(np.percentile(held_out, self.percentile))
        if threshold > 0:
            return threshold
        positive = np.sort(held_out[held_out > EXACT_COPY])
        if not len(positive):
            raise InputError(f"every held-out real record is at {what} 0 from a reference record; the holdout must "
                             "hold other patients")
        log.warning("score/privacy %.1f %% of held-out patients are at %s 0 from a reference patient; the near-copy "
                    "threshold is their smallest non-zero one, %.3g", 100 * float((held_out <= EXACT_COPY).mean()),
                    what, positive[0])
        return float(positive[0])

    def standardize(self, records: np.ndarray) -> np.ndarray:
        """z-scores on the reference's varying columns: the space of the distances, as the seed score's kNN."""
        return (records[:, self.varying_] - self.mean_[self.varying_]) / self.scale_[self.varying_]

    def nearest(self, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(DCR, index of the closest reference patient) per record, chunked."""
        step = self.chunk_size
        parts = [self.knn_.kneighbors(self.standardize(records[i:i + step]), 1) for i in range(0, len(records), step)]
        return (np.concatenate([d[:, 0] for d, _ in parts]), np.concatenate([j[:, 0] for _, j in parts]))

    def edited_distance(self, records: np.ndarray, radius: float) -> np.ndarray:
        """DCR_t per record where it is <= radius, +inf elsewhere (module docstring: the block search)."""
        out = np.full(len(records), np.inf)
        reference, t = self.knn_.reference, self.free_cells
        q = reference.shape[1]
        blocks = [np.arange(b, q, t + 1) for b in range(t + 1)]
        ref_blocks = [reference[:, cols] for cols in blocks]  # sliced once per call, not once per chunk
        block_sq = [np.einsum("ij,ij->i", part, part) for part in ref_blocks]
        step = max(1, min(self.chunk_size, 2 ** 22 // max(1, len(reference))))  # bounds the (c, n_ref) Gram block
        for start in range(0, len(records), step):
            z = self.standardize(records[start:start + step])
            near = np.zeros((len(z), len(reference)), dtype=bool)
            for cols, part, r_sq in zip(blocks, ref_blocks, block_sq):
                x = z[:, cols]
                x_sq = np.einsum("ij,ij->i", x, x)
                gram = x_sq[:, None] + r_sq[None, :] - 2.0 * (x @ part.T)
                near |= gram <= radius ** 2 + 1e-9 * (x_sq[:, None] + r_sq[None, :]) + 1e-12
            rows, refs = np.nonzero(near)
            for pair in range(0, len(rows), 4096):
                i, j = rows[pair:pair + 4096], refs[pair:pair + 4096]
                squared = (z[i] - reference[j]) ** 2  # (pairs, q)
                trimmed = np.sqrt(np.partition(squared, q - t - 1, axis=1)[:, :q - t].sum(axis=1))
                inside = trimmed <= radius
                np.minimum.at(out, start + i[inside], trimmed[inside])
        return out

    def copy_ratio(self, records: np.ndarray) -> dict[str, np.ndarray]:
        """Per record: ratio (module docstring), dcr, edited (DCR_t within its threshold, else +inf), linked (the
        linkage ratio, +inf where the record links to no patient or linkage is off) and nearest (the closest
        reference patient by DCR)."""
        dcr, index = self.nearest(records)
        ratio = dcr / self.threshold_
        edited = np.full(len(records), np.inf)
        if self.edited_threshold_ is not None:
            edited = self.edited_distance(records, self.edited_threshold_)
            ratio = np.minimum(ratio, edited / self.edited_threshold_)
        linked = np.full(len(records), np.inf) if self.linkage_ is None else self.linkage_.ratio(records)
        return {"ratio": np.minimum(ratio, linked), "dcr": dcr, "edited": edited, "linked": linked, "nearest": index}

    def ratio(self, records: np.ndarray) -> np.ndarray:
        """The privacy ratio per record (module docstring)."""
        return self.copy_ratio(records)["ratio"]
