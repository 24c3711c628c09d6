"""Fold-paired comparison of two trials (or a trial and the reference baseline).

Every trial of a sweep trains the same members (fold x seed), so two trials are compared member
by member: the difference `a - b` on each member key (fold, seed) both have, then

- the mean difference and its 95 % t-interval (scipy.stats.t, n - 1 degrees of freedom),
- the two-sided Wilcoxon signed-rank p-value (scipy.stats.wilcoxon) as a distribution-free check.

THE tie rule (one place; the leaderboard and the report use `Paired.tied`): a trial is
statistically tied with the reference when the 95 % t-interval of its paired difference contains
0, or cannot be computed (fewer than 2 paired members: one member cannot separate anything).
The Wilcoxon p-value is shown beside it but does not decide: with n < 6 members its smallest
possible two-sided p is 0.0625, so it could never separate a 4-fold sweep.

Pairing uses the member key, never row order or the member index: a member missing on either
side (a failed member, a different seed list) is left out and `n` says how many were paired.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

MEMBER_KEY = ("fold", "seed")
CONFIDENCE = 0.95
TIE_RULE = ("tied with the reference: the 95 % t-interval of the fold-paired difference contains "
            "0 (or fewer than 2 members pair)")
_MIN_EXACT_WILCOXON = 6  # below: two-sided p >= 2 / 2**n >= 0.0625, never "significant"


@dataclass(frozen=True)
class Paired:
    """`a - b` over the members both have: n, mean, the 95 % t-interval, Wilcoxon p, a note."""

    n: int
    mean: float
    low: float
    high: float
    p_value: float
    note: str = ""

    @property
    def tied(self) -> bool:
        """THE tie rule (module docstring)."""
        if self.n < 2 or math.isnan(self.low) or math.isnan(self.high):
            return True
        return self.low <= 0.0 <= self.high

    def columns(self, prefix: str) -> dict[str, object]:
        """{prefix: mean} and prefix_low / _high / _p / _n / _tied / _note."""
        return {prefix: _null(self.mean), f"{prefix}_low": _null(self.low),
                f"{prefix}_high": _null(self.high), f"{prefix}_p": _null(self.p_value),
                f"{prefix}_n": self.n, f"{prefix}_tied": self.tied,
                f"{prefix}_note": self.note or None}


def _null(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def paired_difference(a: pd.Series, b: pd.Series) -> Paired:
    """Paired `a - b` over the index labels (member keys) both Series have a value for."""
    both = pd.concat({"a": a, "b": b}, axis=1, join="inner").dropna()
    diff = (both["a"] - both["b"]).to_numpy(dtype=np.float64)
    n = int(diff.size)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, "no members pair")
    mean = float(diff.mean())
    if n < 2:
        return Paired(n, mean, math.nan, math.nan, math.nan,
                      "1 member: no interval, no test")
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * diff.std(ddof=1) / math.sqrt(n))
    notes = []
    if not np.any(diff != 0.0):
        p_value = 1.0
        notes.append("all differences are zero")
    else:
        with warnings.catch_warnings():  # ties/zeros: scipy's normal approximation, said below
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
            p_value = float(stats.wilcoxon(diff, zero_method="wilcox").pvalue)
        if np.any(diff == 0.0):
            notes.append(f"{int(np.sum(diff == 0.0))} zero differences dropped by Wilcoxon")
    if n < _MIN_EXACT_WILCOXON:
        notes.append(f"n={n} < {_MIN_EXACT_WILCOXON}: Wilcoxon p cannot reach 0.05")
    return Paired(n, mean, mean - half, mean + half, p_value, "; ".join(notes))


def member_values(members: pd.DataFrame, column: str) -> pd.Series:
    """`column` of one trial's (or the baseline's) member rows, indexed by the member key."""
    if members.empty or column not in members.columns:
        return pd.Series(dtype=np.float64)
    keyed = members.set_index(list(MEMBER_KEY))[column].astype(np.float64)
    if not keyed.index.is_unique:  # two rows of one member would pair arbitrarily
        raise ValueError(f"member key {MEMBER_KEY} is not unique in the rows of {column}")
    return keyed
