"""Record linkage against the reference: is a record the same patient as a reference patient, edits and all?

The distances of privacy.py sum how far a record is from a patient, so a copy with many cells edited (codes added)
or with a little noise on every cell and a few edits sits as far from its source as a new patient does. Linkage asks
the other question, how much of a reference patient the record reproduces, in the Fellegi-Sunter form (Fellegi and
Sunter 1969, "A theory for record linkage", JASA 64: 1183-1210), as probabilistic record linkage scores a candidate
pair:

    b_j(v)     the bin of value v in column j: the reference's distinct values, or up to BINS quantile bins; edges
               halfway between distinct reference values, and no bin narrower than MIN_WIDTH reference SDs (so that
               noise of ~1 % of an SD seldom moves a value out of its bin)
    u_j(b)     the share of reference patients in bin b (add-one smoothed): how often two unrelated patients agree
    m          = 1 - EPSILON: how often a record that is patient r agrees with r in a cell
    W(x, r)    = sum_j [b_j(x) = b_j(r)] log2(m / u_j) + [b_j(x) != b_j(r)] min(0, log2((1 - m) / (1 - u_j)))
    W(x)       = max_r W(x, r)        (bits of evidence that x is some reference patient)
    W_q        = the (100 - percentile)-th percentile of W over held-out real patients
    ratio      = 2 ** (-(W - W_q) / HALVING_BITS)  where W > W_q, else +inf (no linkage; the distances decide): each
                 HALVING_BITS bits of evidence beyond what nearly all new real patients reach halve the privacy ratio
                 (privacy.py), so a linked record is capped at 1 + 9 ratio

Agreeing on a rare value is strong evidence, agreeing on a common one (no code 'X') weak; a disagreement costs evidence
but never adds any (the min(0, .)), so adding codes to a copy does not hide it. Calibrated on held-out patients by
itself, like the distances: `percentile` % of new real patients link to some reference patient (their correlated
common codes reach W_q), by design. Measured on the default cohort (docs/scoring.md): most copies with 5-24 codes
added and over half of the noisy copies with edits, which the distances miss, are linked (copies of patients with few
rare values cannot be); none of 600 Gaussian-copula records is.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ehrjudge.errors import InputError

BINS = 32  # most bins per column (columns with at most BINS distinct reference values keep one bin per value)
MIN_WIDTH = 0.02  # reference SDs: the narrowest bin
EPSILON = 0.05  # 1 - m, the chance a cell of a linked record differs from its patient's
HALVING_BITS = 4.0  # bits of evidence beyond W_q that halve the privacy ratio


def column_edges(values: np.ndarray) -> np.ndarray:
    """Bin edges of one reference column (module docstring): halfway between distinct values, at most BINS bins,
    none narrower than MIN_WIDTH reference SDs."""
    distinct = np.unique(values)
    if len(distinct) <= BINS:
        candidates = (distinct[1:] + distinct[:-1]) / 2
    else:
        cuts = np.quantile(values, np.linspace(0.0, 1.0, BINS + 1)[1:-1])
        above = np.clip(np.searchsorted(distinct, cuts, side="right"), 1, len(distinct) - 1)
        candidates = np.unique((distinct[above - 1] + distinct[above]) / 2)
    kept, last, width = [], distinct[0], MIN_WIDTH * values.std()
    for edge in candidates:
        if edge - last >= width:
            kept.append(edge)
            last = edge
    return np.asarray(kept, dtype=np.float64)


class RecordLinkage:
    """`RecordLinkage(percentile, chunk_size).fit(reference, calibration)`; then `weight(records)` (W and the linked
    reference patient) and `ratio(records)`."""

    def __init__(self, percentile: float = 1.0, chunk_size: int = 2048):
        if not 0 < percentile < 100:
            raise InputError(f"the linkage percentile must lie in (0, 100), got {percentile}")
        self.percentile, self.chunk_size = percentile, chunk_size

    def fit(self, reference: np.ndarray, calibration: np.ndarray) -> "RecordLinkage":
        if len(reference) < 2 or len(calibration) < 1:
            raise InputError("record linkage needs at least 2 reference and 1 held-out patient")
        self.edges_ = [column_edges(reference[:, j]) for j in range(reference.shape[1])]
        sizes = np.array([len(edges) + 1 for edges in self.edges_])
        self.offsets_ = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        n_bins = int(sizes.sum())
        bins = self._bins(reference)  # (n_ref, p) global bin ids
        u = (np.bincount(bins.ravel(), minlength=n_bins) + 1.0) / (len(reference) + np.repeat(sizes, sizes))
        m = 1.0 - EPSILON
        agree = np.log2(m / u)
        disagree = np.minimum(0.0, np.log2(EPSILON / np.maximum(1.0 - u, 1e-12)))
        # W(x, r) = onehot(x) . gain(r) + base(r): gain = agree - disagree at r's bins, base = sum of r's disagree.
        # gain dense in float32 (n_bins x n_ref; 0.6 GB at 3,000 columns x 10,000 patients): a sparse-times-dense
        # product ran 3x faster than sparse-times-sparse on the default cohort
        self.gain_ = np.zeros((n_bins, len(reference)), dtype=np.float32)
        self.gain_[bins, np.arange(len(reference))[:, None]] = (agree - disagree)[bins]
        self.base_ = disagree[bins].sum(axis=1)  # (n_ref,)
        self.threshold_ = float(np.percentile(self.weight(calibration)[0], 100.0 - self.percentile))
        return self

    def _bins(self, records: np.ndarray) -> np.ndarray:
        return np.stack([np.searchsorted(edges, records[:, j], side="right") + self.offsets_[j]
                         for j, edges in enumerate(self.edges_)], axis=1)

    def weight(self, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(W, index of the reference patient reaching it) per record, chunked to bound the (chunk, n_ref) block."""
        n_ref = self.gain_.shape[1]
        step = max(1, min(self.chunk_size, 2 ** 22 // max(1, n_ref)))
        weights, index = np.empty(len(records)), np.empty(len(records), dtype=np.int64)
        for start in range(0, len(records), step):
            bins = self._bins(records[start:start + step])
            rows = np.repeat(np.arange(len(bins)), bins.shape[1])
            onehot = sp.csr_matrix((np.ones(bins.size, dtype=np.float32), (rows, bins.ravel())),
                                   shape=(len(bins), self.gain_.shape[0]))
            total = np.asarray(onehot @ self.gain_, dtype=np.float64) + self.base_[None, :]  # (chunk, n_ref)
            index[start:start + len(bins)] = total.argmax(axis=1)
            weights[start:start + len(bins)] = total[np.arange(len(bins)), index[start:start + len(bins)]]
        return weights, index

    def ratio(self, records: np.ndarray) -> np.ndarray:
        """The linkage's privacy ratio per record (module docstring): < 1 exactly where W > W_q."""
        excess = self.weight(records)[0] - self.threshold_
        return np.where(excess > 0, 2.0 ** (-excess / HALVING_BITS), np.inf)
