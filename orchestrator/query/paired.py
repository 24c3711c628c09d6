"""Paired comparison of two trials (or a trial and the reference baseline): the test set is the
unit.

Every trial of a sweep trains the same members (fold x seed). The seeds of one fold share its
test speakers, so they are not independent observations: a comparison first averages each side
over the seeds of every test set (one value per distinct test set), then pairs the two sides on
the identity of the test set, `test_set_id` (trainables/data/folds.py: a hash of the sorted test
utterance ids; folds that share a test set are merged into one unit). Stores written before that
column existed pair on the fold name. On the per-test-set differences `a - b`:

- the mean difference and its 95 % t-interval (scipy.stats.t, n - 1 degrees of freedom), n =
  the number of distinct test sets paired (never members);
- the two-sided paired t-test p-value (what the verdict uses; it is < 0.05 exactly when the
  interval excludes 0);
- the two-sided Wilcoxon signed-rank p-value, exact (the permutation distribution of the signed
  ranks, computed here: no scipy-version dependence, mid-ranks for ties, zeros dropped), shown
  beside it as a distribution-free check; its note is keyed on the non-zero count.

THE verdict (one place; the leaderboard, the report and the console use `Paired.verdict`):
`too few test sets` below MIN_TEST_SETS (3) test sets; else `better` / `worse` when the
two-sided t-test p (Holm-adjusted within a family of comparisons, `p_adjusted`) is below 0.05,
`no evidence` otherwise. "No evidence" is not "equal": it says the data cannot tell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

TEST_SET_KEY = "test_set_id"  # members column: identity of the member's test set
FOLD_KEY = "fold"  # the fallback pairing key of stores that lack test_set_id
CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE
MIN_TEST_SETS = 3
BETTER, WORSE, NO_EVIDENCE, TOO_FEW = "better", "worse", "no evidence", "too few test sets"
VERDICTS = (BETTER, WORSE, NO_EVIDENCE, TOO_FEW)
ADD_FOLDS_FLAG = "--set data.use_folds=null"
VERDICT_RULE = (
    f"verdict: better / worse when the two-sided paired t-test over test sets (each the mean over "
    f"its seeds) gives p < {ALPHA:.2f} (vs #1: Holm-corrected over the K-1 comparisons), "
    f"'{NO_EVIDENCE}' otherwise; '{TOO_FEW}' below {MIN_TEST_SETS} test sets "
    f"(add folds: {ADD_FOLDS_FLAG})")
_MIN_WILCOXON_NONZERO = 6  # below: two-sided exact p >= 2 / 2**m >= 0.0625, never "significant"


@dataclass(frozen=True)
class Paired:
    """`a - b` over the test sets both sides have: n (test sets), mean, the 95 % t-interval, the
    t-test p, the exact Wilcoxon p, a note; `p_adjusted` once holm() put it in a family."""

    n: int
    mean: float
    low: float
    high: float
    p_value: float  # Wilcoxon signed-rank, exact
    t_p: float  # paired t-test, two-sided
    note: str = ""
    p_adjusted: float = math.nan
    higher_is_better: bool = True

    @property
    def decisive_p(self) -> float:
        return self.t_p if math.isnan(self.p_adjusted) else self.p_adjusted

    @property
    def verdict(self) -> str:
        """THE verdict (module docstring)."""
        if self.n < MIN_TEST_SETS:
            return TOO_FEW
        p = self.decisive_p
        if math.isnan(p) or p >= ALPHA or self.mean == 0.0:
            return NO_EVIDENCE
        return BETTER if (self.mean > 0) == self.higher_is_better else WORSE

    def columns(self, prefix: str) -> dict[str, object]:
        """{prefix: mean} and prefix_low / _high / _n / _p / _t_p / _p_holm / _verdict / _note."""
        return {prefix: _null(self.mean), f"{prefix}_low": _null(self.low),
                f"{prefix}_high": _null(self.high), f"{prefix}_n": self.n,
                f"{prefix}_p": _null(self.p_value), f"{prefix}_t_p": _null(self.t_p),
                f"{prefix}_p_holm": _null(self.p_adjusted), f"{prefix}_verdict": self.verdict,
                f"{prefix}_note": self.note or None}


def _null(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def wilcoxon_exact(diff: np.ndarray) -> tuple[float, int]:
    """Two-sided exact Wilcoxon signed-rank p of `diff` (zeros dropped, mid-ranks for tied
    |d|: the exact permutation distribution of the signed-rank sum given those ranks) and the
    non-zero count m. p = 1.0 when m = 0."""
    d = np.asarray(diff, dtype=np.float64)
    d = d[d != 0.0]
    m = int(d.size)
    if m == 0:
        return 1.0, 0
    ranks2 = np.rint(2 * stats.rankdata(np.abs(d))).astype(np.int64)  # integer half-ranks
    total = int(ranks2.sum())
    probs = np.zeros(total + 1, dtype=np.float64)  # P(sum of the positive ranks = s)
    probs[0] = 1.0
    for r in ranks2:  # each rank positive or negative with probability 1/2 (r >= 2)
        shifted = np.zeros_like(probs)
        shifted[r:] = probs[:-r]
        probs = 0.5 * (probs + shifted)
    observed = int(ranks2[d > 0].sum())
    mirrored = total - observed
    low, high = min(observed, mirrored), max(observed, mirrored)
    p = float(probs[: low + 1].sum() + probs[high:].sum()) if low != high else 1.0
    return min(1.0, p), m


def paired_difference(a: pd.Series, b: pd.Series, higher_is_better: bool = True) -> Paired:
    """Paired `a - b` over the index labels both Series have a value for; each label is ONE
    test set (per_test_set), so n counts test sets."""
    both = pd.concat({"a": a, "b": b}, axis=1, join="inner").dropna()
    diff = (both["a"] - both["b"]).to_numpy(dtype=np.float64)
    n = int(diff.size)
    nan = math.nan
    if n == 0:
        return Paired(0, nan, nan, nan, nan, nan, "no test set pairs", nan, higher_is_better)
    mean = float(diff.mean())
    if n < 2:
        return Paired(n, mean, nan, nan, nan, nan, "1 test set: no interval, no test", nan,
                      higher_is_better)
    sd = float(diff.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n))
    if sd == 0.0:
        t_p = 1.0 if mean == 0.0 else 0.0
    else:
        t_p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    p_value, nonzero = wilcoxon_exact(diff)
    notes = []
    if nonzero == 0:
        notes.append("all differences are zero")
    elif nonzero < n:
        notes.append(f"{n - nonzero} zero differences dropped by Wilcoxon")
    if 0 < nonzero < _MIN_WILCOXON_NONZERO:
        notes.append(f"{nonzero} non-zero differences < {_MIN_WILCOXON_NONZERO}: Wilcoxon p "
                     "cannot reach 0.05")
    if n < MIN_TEST_SETS:
        notes.append(f"n={n} test sets < {MIN_TEST_SETS}: no verdict ({ADD_FOLDS_FLAG} adds "
                     "folds)")
    return Paired(n, mean, mean - half, mean + half, p_value, t_p, "; ".join(notes), nan,
                  higher_is_better)


def holm(results: Sequence[Paired]) -> list[Paired]:
    """The family of comparisons with Holm-adjusted t-test p-values (`p_adjusted`); comparisons
    without a p (n < 2) are not counted in the family."""
    tested = sorted((r.t_p, i) for i, r in enumerate(results) if not math.isnan(r.t_p))
    m = len(tested)
    adjusted: dict[int, float] = {}
    running = 0.0
    for k, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - k) * p))
        adjusted[i] = running
    return [replace(r, p_adjusted=adjusted[i]) if i in adjusted else r
            for i, r in enumerate(results)]


def pairing_key(*frames: pd.DataFrame) -> str:
    """`test_set_id` when every row of every frame has one, else the fold name."""
    for frame in frames:
        if not len(frame):
            continue
        if TEST_SET_KEY not in frame.columns or frame[TEST_SET_KEY].isna().any():
            return FOLD_KEY
    return TEST_SET_KEY


def per_test_set(members: pd.DataFrame, column: str, key: str | None = None) -> pd.Series:
    """`column` of one trial's (or the baseline's) member rows averaged over the seeds (and the
    folds) that share a test set: one value per test set, indexed by `key` (pairing_key)."""
    key = key or pairing_key(members)
    if members.empty or column not in members.columns or key not in members.columns:
        return pd.Series(dtype=np.float64)
    values = members[column].astype(np.float64)
    return values.groupby(members[key].astype(str)).mean().dropna()


def spread_over_test_sets(members: pd.DataFrame, column: str,
                    key: str | None = None) -> tuple[float, float, int, float]:
    """(mean, sample std across test sets of the seed-means, n test sets, pooled std over the
    seeds within a test set: NaN with one seed per test set)."""
    key = key or pairing_key(members)
    per_set = per_test_set(members, column, key)
    n = int(per_set.size)
    if n == 0:
        return math.nan, math.nan, 0, math.nan
    mean = float(per_set.mean())
    sd = float(per_set.std(ddof=1)) if n > 1 else math.nan
    values = members[[key, column]].dropna()
    groups = values.groupby(values[key].astype(str))[column]
    dof = int((groups.count() - 1).clip(lower=0).sum())
    seed_sd = math.nan
    if dof > 0:
        within = float(groups.apply(lambda g: ((g - g.mean()) ** 2).sum()).sum())
        seed_sd = math.sqrt(within / dof)
    return mean, sd, n, seed_sd


def compare(a: pd.DataFrame, b: pd.DataFrame, column: str,
            higher_is_better: bool = True) -> Paired:
    """Member rows `a` vs member rows `b` on `column`, paired per test set (one key for both)."""
    key = pairing_key(a, b)
    return paired_difference(per_test_set(a, column, key), per_test_set(b, column, key),
                             higher_is_better)
