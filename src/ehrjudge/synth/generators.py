"""Synthetic patient vectors along a realism ladder: one function per generator family.

Every family takes `strength` in [0, 1]: 0 is its most realistic setting, 1 its most broken, and the records'
realism falls monotonically in between (measured in docs/synth.md). Records keep the reference's kinds: count
columns stay non-negative integers, binary columns 0/1, non-negative continuous columns non-negative.

    frame = generate("noisy_copy", reference_cohort, n=200, strength=0.3, seed=7)
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors

from ehrjudge.cohort.schema import Cohort, Schema
from ehrjudge.errors import InputError
from ehrjudge.synth.copula import GaussianCopula, fit_copula

CODE_GROUPS = ("diagnoses", "procedures", "prescriptions", "labs")
CODE_PREFIXES = ("dx_", "px_", "rx_", "lab_")
AGGREGATE_SUFFIXES = ("_count", "_mean", "_min", "_max", "_std", "_sum", "_total", "_days", "_n")

# ICD-10 chapters/blocks that are impossible for one sex or age band (WHO ICD-10 chapter XV, XVI; N40-N53, N70-N98).
FEMALE_ONLY = re.compile(r"^(O\d|Z3[2-9]|N7\d|N8\d|N9[0-8]|C5[1-8]|D2[5-8])")
MALE_ONLY = re.compile(r"^(N4[0-9]|N5[0-3]|C6[0-3]|D29)")
PERINATAL = re.compile(r"^P\d")  # conditions originating in the perinatal period: impossible for adults
PREGNANCY = re.compile(r"^(O\d|Z3[3-9])")  # impossible before 10 or after 60


@dataclasses.dataclass
class Reference:
    """The reference cohort as arrays, with the column roles the generators need."""

    matrix: np.ndarray  # (n_ref, d)
    schema: Schema
    holdout: np.ndarray | None  # (n_hold, d) real patients kept out of the reference

    def __post_init__(self):
        kinds = np.array([f.kind for f in self.schema.features])
        self.is_count, self.is_binary = kinds == "count", kinds == "binary"
        self.std = self.matrix.std(axis=0)  # (d,)
        self.nonnegative = self.matrix.min(axis=0) >= 0
        self.codes = code_columns(self.schema)
        names = [n.lower() for n in self.schema.names]
        demo = [i for i, f in enumerate(self.schema.features) if f.group == "demographics"]
        self.sex = next((i for i in demo if re.search(r"gender|sex|male", names[i])
                         and self.schema.features[i].kind == "binary"), None)
        self.age = next((i for i in demo if re.search(r"(^|_)age($|_)", names[i])), None)

    @property
    def copula(self) -> GaussianCopula:
        return fit_copula(self.matrix, self.is_count | self.is_binary)

    def conform(self, records: np.ndarray) -> np.ndarray:
        """Round counts and binaries back onto their support; keep non-negative columns non-negative."""
        out = records.copy()
        out[:, self.is_count] = np.maximum(np.rint(out[:, self.is_count]), 0.0)
        out[:, self.is_binary] = np.clip(np.rint(out[:, self.is_binary]), 0.0, 1.0)
        out[:, self.nonnegative] = np.maximum(out[:, self.nonnegative], 0.0)
        return out


def code_columns(schema: Schema) -> np.ndarray:
    """Indices of per-code count/binary columns (diagnoses, procedures, drugs, labs), not aggregates."""
    features = schema.features
    coded = [i for i, f in enumerate(features) if f.code is not None and f.kind != "continuous"]
    if coded:
        return np.array(coded, dtype=np.int64)
    return np.array([i for i, f in enumerate(features) if f.kind != "continuous" and f.group in CODE_GROUPS
                     and f.name.startswith(CODE_PREFIXES) and not f.name.endswith(AGGREGATE_SUFFIXES)],
                    dtype=np.int64)


def gaussian_copula(ref: Reference, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Copula sample; strength flattens the correlation towards independence and jitters each marginal: its
    quantiles shift by N(0, 2.5 s) in z and its values scale by exp(|N(0, 1.5 s)|) (counts re-rounded)."""
    d = ref.matrix.shape[1]
    shift = rng.normal(0.0, 2.5 * strength, size=d)  # (d,) per-column quantile shift, in SDs of z
    scale = np.exp(np.abs(rng.normal(0.0, 1.5 * strength, size=d)))  # (d,) per-column value stretch >= 1
    records = ref.copula.sample(n, rng, flatten=strength, marginal_shift=shift)
    return ref.conform(records * np.where(ref.is_binary, 1.0, scale)[None, :])


def independent_marginals(ref: Reference, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Each column resampled on its own; a fraction `strength` of cells replaced by flat noise over the column's
    range stretched by (1 + 30 strength^2)."""
    n_ref, d = ref.matrix.shape
    records = ref.matrix[rng.integers(n_ref, size=(n, d)), np.arange(d)[None, :]]  # (n, d)
    low, high = ref.matrix.min(axis=0), ref.matrix.max(axis=0)
    width = (high - low) * (1.0 + 30.0 * strength**2) + ref.is_count  # +1 so the top count can be drawn
    noise = low + rng.random((n, d)) * width
    noise[:, ref.is_count] = np.floor(noise[:, ref.is_count])
    replace = rng.random((n, d)) < strength
    records[replace] = noise[replace]
    return ref.conform(records)


def noisy_copy(ref: Reference, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Reference records plus Gaussian noise of 20 strength^2 column SDs (at least 0.5 for counts, so rounding
    does not erase it); strength 0 is an exact copy (a privacy leak)."""
    n_ref, d = ref.matrix.shape
    rows = rng.permutation(n_ref)[:n] if n <= n_ref else rng.integers(n_ref, size=n)
    scale = np.where(ref.is_count, np.maximum(ref.std, 0.5), ref.std)  # (d,)
    records = ref.matrix[rows] + rng.standard_normal((n, d)) * (20.0 * strength**2 * scale)[None, :]
    flip = (rng.random((n, d)) < 0.5 * strength) & ref.is_binary[None, :]
    records[flip] = 1.0 - ref.matrix[rows][flip]
    return ref.conform(records)


def interpolation(ref: Reference, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """a + t (b - a) for pairs of real records; strength widens t beyond [0, 1] and pairs distant records."""
    n_ref = ref.matrix.shape[0]
    scale = np.where(ref.std > 0, ref.std, 1.0)
    k = min(5, n_ref - 1)
    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(ref.matrix / scale).kneighbors(
        ref.matrix / scale, return_distance=False)[:, 1:]  # (n_ref, k) nearest others
    first = rng.integers(n_ref, size=n)
    second = neighbours[first, rng.integers(k, size=n)]
    distant = rng.random(n) < strength
    second[distant] = rng.integers(n_ref, size=int(distant.sum()))
    reach = 30.0 * strength**2
    t = rng.uniform(-reach, 1.0 + reach, size=n)[:, None]  # (n, 1)
    a, b = ref.matrix[first], ref.matrix[second]
    return ref.conform(a + t * (b - a))


def mode_collapse(ref: Reference, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """k-means prototypes repeated with tiny noise; k = n_ref^(1 - strength), so strength 1 is one prototype."""
    n_ref, d = ref.matrix.shape
    k = max(1, int(round(n_ref ** (1.0 - strength))))
    if k >= n_ref:
        prototypes = ref.matrix
    else:
        scale = np.where(ref.std > 0, ref.std, 1.0)
        seed = int(rng.integers(2**31 - 1))
        centers = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(ref.matrix / scale).cluster_centers_
        prototypes = ref.conform(centers * scale)
    records = prototypes[rng.integers(len(prototypes), size=n)]
    return ref.conform(records + rng.standard_normal((n, d)) * (0.02 * ref.std)[None, :])


def clinical_inconsistency(ref: Reference, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Copula records with a fraction `strength` of code cells shuffled across patients, demographics swapped
    and sex- or age-impossible ICD-10 codes injected."""
    records = ref.conform(ref.copula.sample(n, rng))
    codes = ref.codes
    if len(codes):
        shuffled = rng.random((n, len(codes))) < strength
        donors = rng.integers(n, size=(n, len(codes)))
        block = records[:, codes]
        block[shuffled] = block[donors, np.arange(len(codes))[None, :]][shuffled]
        records[:, codes] = block
    for column in (ref.sex, ref.age):
        if column is not None:
            swap = rng.random(n) < strength
            records[swap, column] = records[rng.integers(n, size=int(swap.sum())), column]
    inject = np.flatnonzero(rng.random(n) < strength)
    for row in inject:  # 1 + 5 strength impossible codes, each 1 + Poisson(8 strength) times
        impossible = impossible_codes(ref, records[row])
        if len(impossible):
            size = min(len(impossible), 1 + int(round(5 * strength)))
            chosen = rng.choice(impossible, size=size, replace=False)
            records[row, chosen] += 1.0 + rng.poisson(8.0 * strength, size=size)
    return ref.conform(records)


def impossible_codes(ref: Reference, record: np.ndarray) -> np.ndarray:
    """Column indices of diagnosis codes impossible for this record's sex and age."""
    out = []
    age = record[ref.age] if ref.age is not None else None
    male = None
    if ref.sex is not None:
        name = ref.schema.features[ref.sex].name.lower()
        male = bool(record[ref.sex] >= 0.5) if "female" not in name else bool(record[ref.sex] < 0.5)
    for i in ref.codes:
        code = (ref.schema.features[i].code or "").upper().split(":")[-1]  # "ICD10:Z34" -> "Z34"
        if ref.schema.features[i].group != "diagnoses" or not code:
            continue
        if male is True and FEMALE_ONLY.match(code) or male is False and MALE_ONLY.match(code):
            out.append(i)
        elif age is not None and (age >= 18 and PERINATAL.match(code) or
                                  (age < 10 or age > 60) and PREGNANCY.match(code)):
            out.append(i)
    return np.array(out, dtype=np.int64)


def sparsity_distortion(ref: Reference, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Copula records with too few (codes thinned) or too many (extra codes) codes; the sign is drawn per record."""
    records = ref.conform(ref.copula.sample(n, rng))
    codes = ref.codes
    if not len(codes):
        raise InputError("sparsity_distortion needs per-code columns (dx_/rx_/px_/lab_ counts); the schema has none")
    block = records[:, codes]  # (n, n_codes)
    thin = rng.random(n) < 0.5
    kept = rng.binomial(block[thin].astype(np.int64), 1.0 - strength)
    block[thin] = kept
    # Extra codes: Poisson(20 * strength^2 * mean codes per patient), spread by prevalence plus a uniform share.
    prevalence = ref.matrix[:, codes].mean(axis=0)
    probs = prevalence / max(prevalence.sum(), 1e-12) * 0.7 + 0.3 / len(codes)
    extra_total = rng.poisson(20.0 * strength**2 * max(ref.matrix[:, codes].sum(axis=1).mean(), 1.0),
                              size=int((~thin).sum()))
    block[~thin] += np.stack([rng.multinomial(total, probs) for total in extra_total]) if len(extra_total) else 0.0
    records[:, codes] = block
    return ref.conform(records)


def holdout_real(ref: Reference, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Real patients that were kept out of the reference (strength is ignored): the realism ceiling."""
    if ref.holdout is None:
        raise InputError("generator 'holdout_real' needs a holdout cohort (real patients not in the reference)")
    n_hold = len(ref.holdout)
    rows = rng.permutation(n_hold)[:n] if n <= n_hold else np.concatenate(
        [rng.permutation(n_hold), rng.integers(n_hold, size=n - n_hold)])
    return ref.holdout[rows].copy()


def _standardized(ref: Reference, columns: np.ndarray | None = None) -> np.ndarray:
    """Reference rows scaled by the column SDs (constant columns by 1), on `columns` when given."""
    scale = np.where(ref.std > 0, ref.std, 1.0)
    scaled = ref.matrix / scale
    return scaled if columns is None else scaled[:, columns]


def _ranked_donors(ref: Reference, first: np.ndarray, columns: np.ndarray | None, low: float, high: float,
                   rng: np.random.Generator, draws: int = 1) -> np.ndarray:
    """(n, draws) reference patients, each the one (never first[i] itself) at a rank quantile u ~ U(low, high) of
    the standardized distance from first[i] on `columns` (u = 0: the nearest other patient, 1: the furthest)."""
    points = _standardized(ref, columns)  # (n_ref, c)
    n_ref = len(points)
    quantile = rng.uniform(low, high, size=(len(first), draws))
    rank = np.minimum((quantile * (n_ref - 1)).astype(np.int64), n_ref - 2)  # (n, draws)
    donors = np.empty((len(first), draws), dtype=np.int64)
    for i, row in enumerate(first):
        order = np.argsort(((points - points[row]) ** 2).sum(axis=1), kind="stable")
        donors[i] = order[order != row][rank[i]]  # nearest first, the patient itself left out
    return donors


def table_groups(schema: Schema) -> list[np.ndarray]:
    """Column indices of each table group (demographics, admissions, diagnoses, ...), in schema order."""
    groups = list(dict.fromkeys(f.group for f in schema.features))
    return [np.array([i for i, f in enumerate(schema.features) if f.group == g], dtype=np.int64) for g in groups]


def patient_splice(ref: Reference, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Demographics of one real patient, every other table of another; the donor sits at the rank quantile
    U(0.9 s, s) of demographic distance (s = 0: the demographically nearest patient, s = 1: the most unlike)."""
    groups = [f.group for f in ref.schema.features]
    demographics = np.array([i for i, g in enumerate(groups) if g == "demographics"], dtype=np.int64)
    if not len(demographics) or len(demographics) == len(groups):
        raise InputError("patient_splice needs demographic columns and at least one other table")
    first = rng.integers(len(ref.matrix), size=n)
    donors = _ranked_donors(ref, first, demographics, 0.9 * strength, strength, rng)[:, 0]
    records = ref.matrix[donors].copy()
    records[:, demographics] = ref.matrix[first][:, demographics]
    return ref.conform(records)


def independent_tables(ref: Reference, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Each table group (demographics, admissions, diagnoses, procedures, prescriptions, labs) from its own real
    patient: the base patient's rank-r neighbour with r uniform in [0, 5 + s (n_ref - 6)) (whole-record distance),
    drawn per table; s = 0 mixes tables of 5 near neighbours, s = 1 of any patients (tables independent)."""
    n_ref = len(ref.matrix)
    groups = table_groups(ref.schema)
    if len(groups) < 2:
        raise InputError("independent_tables needs at least two table groups in the schema")
    base = rng.integers(n_ref, size=n)
    reach = min(1.0, (5 + strength * (n_ref - 6)) / max(n_ref - 1, 1))  # rank quantile of the furthest donor
    donors = _ranked_donors(ref, base, None, 0.0, reach, rng, draws=len(groups) - 1)  # (n, groups - 1)
    records = ref.matrix[base].copy()
    for g, columns in enumerate(groups[1:]):  # the first group (demographics) stays with the base patient
        records[:, columns] = ref.matrix[donors[:, g]][:, columns]
    return ref.conform(records)


def smote(ref: Reference, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """SMOTE-NC (Chawla et al. 2002, section 6.1): a real record a and one of its k = 5 nearest neighbours b;
    continuous columns a + t (b - a), count and binary columns copied from b with probability t, else from a
    (no averaged counts). Strength widens the neighbour pool to rank 5 + s (n_ref - 6) and t to
    U(-30 s, 1 + 30 s) for the continuous columns (extrapolation beyond the segment)."""
    n_ref = len(ref.matrix)
    first = rng.integers(n_ref, size=n)
    reach = min(1.0, (5 + strength * (n_ref - 6)) / max(n_ref - 1, 1))
    second = _ranked_donors(ref, first, None, 0.0, reach, rng)[:, 0]
    a, b = ref.matrix[first], ref.matrix[second]  # (n, d)
    reach_t = 30.0 * strength
    t = rng.uniform(-reach_t, 1.0 + reach_t, size=n)[:, None]  # (n, 1)
    records = a + t * (b - a)
    discrete = ref.is_count | ref.is_binary
    from_b = rng.random(a.shape) < np.clip(t, 0.0, 1.0)  # (n, d)
    records[:, discrete] = np.where(from_b, b, a)[:, discrete]
    return ref.conform(records)


def cooccurrence_shuffle(ref: Reference, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Real reference records with a share `strength` of the per-code columns each permuted across the n records:
    every code's marginal stays exact, which codes occur together (and with the record's totals and demographics)
    is lost. Strength 0 = exact copies (a privacy leak, as noisy_copy at 0)."""
    n_ref = len(ref.matrix)
    codes = ref.codes
    if not len(codes):
        raise InputError("cooccurrence_shuffle needs per-code columns (dx_/rx_/px_/lab_ counts); the schema has none")
    rows = rng.permutation(n_ref)[:n] if n <= n_ref else rng.integers(n_ref, size=n)
    records = ref.matrix[rows].copy()
    shuffled = rng.choice(codes, size=int(round(strength * len(codes))), replace=False)
    for column in shuffled:
        records[:, column] = records[rng.permutation(n), column]
    return ref.conform(records)


DEFECTS = ("fractional_count", "out_of_range", "negative_value", "binary_off_support", "impossible_code",
           "codes_exceed_total", "zeroed_table")


def isolated_defects(ref: Reference, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Held-out real patients, each with 1 + round(2 s) isolated defects of the kinds generators make (DEFECTS, drawn
    among those the record allows): a fractional count, a value 1.5-10 reference ranges beyond the maximum, a
    negative value where the reference has none, a binary off {0, 1}, a diagnosis impossible for the patient's sex or
    age, a table's total below its distinct codes, a table zeroed. The rest of the record stays real, so a score
    can only drop for the defect itself (the other families' defects come with a shifted record around them)."""
    if ref.holdout is None:
        raise InputError("generator 'isolated_defects' needs a holdout cohort (real patients not in the reference)")
    records = ref.holdout[rng.integers(len(ref.holdout), size=n)].copy()
    low, high, tables = ref.matrix.min(axis=0), ref.matrix.max(axis=0), _tables(ref)
    for record in records:
        for _ in range(1 + int(round(2 * strength))):
            kinds = [kind for kind in DEFECTS if _inject(ref, low, high, tables, record, kind, rng, dry_run=True)]
            if kinds:
                _inject(ref, low, high, tables, record, kinds[int(rng.integers(len(kinds)))], rng)
    return records


def _inject(ref: Reference, low: np.ndarray, high: np.ndarray, tables: list[tuple[int, np.ndarray]],
            record: np.ndarray, kind: str, rng: np.random.Generator, dry_run: bool = False) -> bool:
    """Apply one defect of `kind` to `record` in place (low, high: the reference's column range; tables: `_tables`);
    with dry_run only say whether the record allows it."""
    varying = high > low
    if kind == "fractional_count":
        candidates = np.flatnonzero(ref.is_count & (record > 0))
    elif kind == "out_of_range":
        candidates = np.flatnonzero(varying & ~ref.is_binary)
    elif kind == "negative_value":
        candidates = np.flatnonzero(varying & ref.nonnegative & (record > 0))
    elif kind == "binary_off_support":
        candidates = np.flatnonzero(ref.is_binary)
    elif kind == "impossible_code":
        candidates = impossible_codes(ref, record)
    else:  # codes_exceed_total, zeroed_table: per table with a count column and codes the record has
        candidates = np.array([g for g, (count, codes) in enumerate(tables) if record[codes].any()
                               and (kind == "zeroed_table" or record[count] > 0)], dtype=np.int64)
    if dry_run or not len(candidates):
        return bool(len(candidates))
    pick = int(candidates[int(rng.integers(len(candidates)))])
    if kind == "fractional_count":
        record[pick] += 0.5
    elif kind == "out_of_range":
        value = high[pick] + rng.uniform(1.5, 10.0) * (high[pick] - low[pick])
        record[pick] = np.ceil(value) if ref.is_count[pick] else value
    elif kind == "negative_value":
        record[pick] = -record[pick]
    elif kind == "binary_off_support":
        record[pick] = 0.5
    elif kind == "impossible_code":
        table = next(((count, codes) for count, codes in tables if pick in codes), None)
        if table is not None and record[pick] == 0:
            record[table[0]] += 1.0  # one more distinct code in its table's total
        record[pick] += 1.0
    else:
        count, codes = tables[pick]
        if kind == "codes_exceed_total":
            record[count] = max(0.0, float((record[codes] != 0).sum()) - 1.0)
        else:
            record[np.r_[count, codes]] = 0.0
    return True


def _tables(ref: Reference) -> list[tuple[int, np.ndarray]]:
    """(column of `<table>_count`, the table's code columns) for each table that has both."""
    names = ref.schema.names
    out = []
    for group in dict.fromkeys(f.group for f in ref.schema.features):
        codes = np.array([j for j in ref.codes if ref.schema.features[j].group == group], dtype=np.int64)
        if f"{group}_count" in names and len(codes):
            out.append((names.index(f"{group}_count"), codes))
    return out


MEMORIZED_REACH = 2.0  # memorized_copy at strength 1 sits this many near-copy distances from its patient
NEAR_COPY_PERCENTILE = 5.0  # ScoreConfig.near_copy_percentile's default: the distance's unit


def memorized_copy(ref: Reference, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Reference patients memorized with jitter: each moved, in its non-zero continuous columns only (so counts,
    codes and every check stay those of a real patient), by MEMORIZED_REACH x strength near-copy distances in
    reference z-scores. The near-copy distance is the NEAR_COPY_PERCENTILE-th percentile of held-out real patients'
    distance to their closest reference patient (scoring/hardened/privacy.py), so strength 0 is an exact copy,
    0.5 sits at the threshold and 1 beyond it: what a generator that memorizes does, graded by how much."""
    from ehrjudge.scoring.hardened.privacy import ClosestPatient  # synth builds on scoring, not the other way

    if ref.holdout is None:
        raise InputError("generator 'memorized_copy' needs a holdout cohort (real patients not in the reference)")
    unit = ClosestPatient(NEAR_COPY_PERCENTILE).fit(ref.matrix, ref.holdout).threshold_
    rows = rng.permutation(len(ref.matrix))[:n] if n <= len(ref.matrix) else rng.integers(len(ref.matrix), size=n)
    records = ref.matrix[rows].copy()
    movable = ~ref.is_count & ~ref.is_binary & (ref.std > 0)  # (d,) continuous, varying
    for record in records:
        columns = np.flatnonzero(movable & (record != 0))
        if not len(columns):
            continue  # nothing continuous to move: stays an exact copy
        direction = rng.standard_normal(len(columns))
        step = MEMORIZED_REACH * strength * unit * direction / np.linalg.norm(direction)  # in z-scores
        record[columns] += step * ref.std[columns]
    return ref.conform(records)


Generator = Callable[[Reference, int, float, np.random.Generator], np.ndarray]
GENERATORS: dict[str, Generator] = {
    "gaussian_copula": gaussian_copula,
    "independent_marginals": independent_marginals,
    "noisy_copy": noisy_copy,
    "interpolation": interpolation,
    "mode_collapse": mode_collapse,
    "clinical_inconsistency": clinical_inconsistency,
    "sparsity_distortion": sparsity_distortion,
    "holdout_real": holdout_real,
    # Families of issue 15 (what real generators get wrong); appended so the families above keep their seeds.
    "patient_splice": patient_splice,
    "independent_tables": independent_tables,
    "smote": smote,
    "cooccurrence_shuffle": cooccurrence_shuffle,
    "isolated_defects": isolated_defects,
    "memorized_copy": memorized_copy,
}


def generate(name: str, reference: Cohort, n: int, strength: float, seed: int,
             holdout: Cohort | None = None) -> pd.DataFrame:
    """`n` records of generator `name`: record_id, generator, strength, then the reference's feature columns."""
    if name not in GENERATORS:
        raise InputError(f"unknown generator {name!r}; choose one of {', '.join(GENERATORS)}")
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"strength must lie in [0, 1], got {strength}")
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    if seed < 0:
        raise InputError(f"seed must be non-negative, got {seed}")
    if len(reference) < 2:
        raise InputError("the reference cohort needs at least 2 patients")
    holdout_matrix = None
    if holdout is not None:
        if holdout.schema.names != reference.schema.names:
            raise InputError("holdout cohort columns differ from the reference's")
        holdout_matrix = holdout.matrix()
    if name == "holdout_real":
        strength = 0.0
    ref = Reference(reference.matrix(), reference.schema, holdout_matrix)
    rng = np.random.default_rng([seed, list(GENERATORS).index(name), int(round(strength * 1000))])
    records = GENERATORS[name](ref, n, float(strength), rng)  # (n, d)
    frame = pd.DataFrame(records, columns=reference.schema.names)
    meta = pd.DataFrame({
        "record_id": [f"{name}-{strength:.3g}-{seed}-{i}" for i in range(n)],
        "generator": name,
        "strength": float(strength),
    })
    return pd.concat([meta, frame], axis=1)
