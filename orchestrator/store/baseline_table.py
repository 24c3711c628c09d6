"""results/<sweep>/baseline.parquet, the reference baseline's rows: written and read by the store
(its columns: schema.BASELINE_FIELDS; written with the store's one atomic writer, files.py), so
the store is the only writer of the results folder. trainables/egemaps_baseline.py computes the
rows (run_baseline) and knows nothing of this file.
"""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.store import schema
from orchestrator.store.files import join, resolve, write_table
from trainables.stats import as_python


def to_table(frame: pd.DataFrame) -> pa.Table:
    """The baseline's rows as a pyarrow table with BASELINE_SCHEMA (missing/extra columns
    refused)."""
    names = [n for n, _, _ in schema.BASELINE_FIELDS]
    if "data_variant" not in frame.columns:  # null: computed on the sweep file's own data
        frame = frame.assign(data_variant=None)
    if sorted(frame.columns) != sorted(names):
        raise ValueError(f"baseline frame columns {list(frame.columns)}, expected {names}")
    return pa.Table.from_pandas(frame[names], schema=schema.BASELINE_SCHEMA, preserve_index=False)


def write_baseline(frame: pd.DataFrame, sweep_dir: str | os.PathLike) -> str:
    """Write `frame` to <sweep_dir>/baseline.parquet atomically (local: a hidden temporary file
    renamed over it; an object store: one PUT); the path or URI written. StoreWriteError on a
    full or read-only disk, as every store write."""
    location = str(sweep_dir)
    fs, path = resolve(location)
    write_table(fs, join(path, schema.BASELINE_FILE), to_table(frame))
    return join(location, schema.BASELINE_FILE)


def read_baseline(path: str | os.PathLike) -> pd.DataFrame:
    """baseline.parquet (a sweep folder or the file itself) as a DataFrame; confusions and
    classes as Python lists."""
    location = str(path)
    if not location.endswith(".parquet"):
        location = join(location, schema.BASELINE_FILE)
    fs, inner = resolve(location)
    frame = pq.read_table(inner, filesystem=fs).to_pandas()
    for col in ("val_confusion", "test_confusion", "classes"):
        frame[col] = [as_python(v) for v in frame[col]]
    return frame
