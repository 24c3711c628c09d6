"""Per-member reads beside the tables: the reference baseline of each sweep
(results/<sweep>/baseline.parquet, trainables/egemaps_baseline.py) and confusion matrices with
class
names (a trial's members, or the baseline's).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator.query.results import QueryError, Results
from orchestrator.store import schema

DATA_VARIANT = "data_variant"  # baseline rows: the searched data choices they were computed on


def variant_key(choices: Mapping[str, Any]) -> str:
    """THE key of a data variant: its searched data choices as sorted JSON ("" for the sweep
    file's own data section)."""
    return json.dumps(dict(sorted(choices.items())), default=str) if choices else ""


def baseline_for(baselines: pd.DataFrame, variant: str) -> pd.DataFrame:
    """The baseline rows computed on data variant `variant`; the sweep file's own data section
    ("") when that variant has none (a store written before variants were)."""
    if DATA_VARIANT not in baselines.columns:
        return baselines
    keys = baselines[DATA_VARIANT].fillna("")
    rows = baselines[keys == variant]
    return rows if len(rows) else baselines[keys == ""]


def read_baselines(results: Results) -> pd.DataFrame:
    """Every sweep's baseline.parquet, one row per member, with a `sweep` column; an empty frame
    when no sweep has one (a sweep without a baseline is not an error)."""
    frames = []
    for sweep, path in results.sweeps.items():
        file = f"{path}/{schema.BASELINE_FILE}"
        if results.fs.get_file_info(file).type != pafs.FileType.File:
            continue
        with results.fs.open_input_file(file) as handle:
            frame = pq.read_table(handle).to_pandas()
        frames.append(frame.assign(**{schema.SWEEP: sweep}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _members_of(results: Results, trial_id: str, sweep: str | None) -> pd.DataFrame:
    if trial_id == schema.BASELINE_ID:
        rows = read_baselines(results)
        what = "baseline.parquet"
    else:
        rows = results.members
        rows = rows[rows[schema.TRIAL_ID] == trial_id] if len(rows) else rows
        what = f"trial {trial_id!r}"
    if sweep is not None and len(rows):
        rows = rows[rows[schema.SWEEP] == sweep]
    if not len(rows):
        raise QueryError(f"no member rows of {what}" + (f" in sweep {sweep!r}" if sweep else ""))
    if rows[schema.SWEEP].nunique() > 1:
        raise QueryError(f"{what} is in sweeps {sorted(rows[schema.SWEEP].unique())}: "
                         "name one (sweep=...)")
    return rows


def confusion(
    results: Results, trial_id: str, *, sweep: str | None = None, fold: str | None = None
) -> pd.DataFrame:
    """The test confusion matrix of `trial_id` (or "baseline") summed over its members (only
    `fold`'s when given): rows = true class, columns = predicted class, both named by the stored
    class names (0..k-1 for rows stored before names were). Integer counts."""
    rows = _members_of(results, trial_id, sweep)
    if fold is not None:
        rows = rows[rows["fold"].astype(str) == str(fold)]
        if not len(rows):
            raise QueryError(f"{trial_id!r} has no member on fold {fold!r}")
    matrices = [schema.as_list(m) for m in rows[schema.TEST_CONFUSION] if m is not None]
    if not matrices:
        raise QueryError(f"{trial_id!r} has no stored test confusion")
    total = pd.DataFrame(matrices[0]).astype("int64")
    for m in matrices[1:]:
        total = total + pd.DataFrame(m).astype("int64")
    names = None
    if schema.CLASSES in rows.columns:
        stored = [schema.as_list(c) for c in rows[schema.CLASSES] if c is not None]
        names = stored[0] if stored else None
    if names is None or len(names) != len(total):
        names = [str(i) for i in range(len(total))]
    total.index = pd.Index(names, name="true")
    total.columns = pd.Index(names, name="predicted")
    return total


def confusion_record(matrix: pd.DataFrame) -> dict[str, object]:
    """A confusion frame as JSON-ready {"classes": [...], "matrix": [[...]]} (rows = true)."""
    return {"classes": [str(c) for c in matrix.index],
            "matrix": matrix.to_numpy().astype(int).tolist()}
