"""Mean and spread over a trial's members: the one definition (the epoch report of train.py and
the trial row of orchestrator/store/rows.py both use it)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """(mean, sample std with ddof=1) of the finite-or-infinite numbers in `values`; None and NaN
    are ignored (a member that has no value yet). NaN mean when nothing is left; NaN std when
    fewer than two values are left (one member says nothing about the spread)."""
    clean = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not clean:
        return math.nan, math.nan
    arr = np.asarray(clean, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size >= 2 else math.nan
    return float(arr.mean()), std


def as_python(value: Any) -> Any:
    """numpy arrays of arrays (pyarrow's to_pandas of list columns) -> nested Python lists;
    numpy scalars -> Python scalars (confusion matrices and class lists read from Parquet)."""
    if isinstance(value, np.ndarray | list | tuple):
        return [as_python(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value
