"""The store as DataFrames: `load(path)` -> Results (trials, epochs, members, read lazily).

`load` accepts one sweep dir (results/<sweep>) or a results root holding many sweeps (the `sweep`
column tells them apart), as a local path or a pyarrow.fs URI. Only complete files are read:
temporary names are never listed, and unreadable or truncated files are skipped with a warning
naming the file. Nothing is ever unpickled. Column names: orchestrator/store/schema.py.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import pandas as pd
import pyarrow.fs as pafs

from orchestrator.store import read_dir, resolve, schema
from trainables.errors import SersweepError


class QueryError(SersweepError):
    """A query cannot run: no such directory, unknown column, bad or non-read-only SQL."""


@dataclass
class Results:
    """The store under `source`: `trials`, `epochs`, `members` DataFrames (read lazily, cached).

    `sweeps` maps each sweep name to its folder inside `fs`."""

    source: str
    fs: pafs.FileSystem
    sweeps: dict[str, str]
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def table(self, name: str) -> pd.DataFrame:
        if name not in self._frames:
            frames = [read_dir(self.fs, f"{p}/{name}") for p in self.sweeps.values()]
            frames = [f for f in frames if not f.empty]
            empty = schema.SCHEMAS[name].empty_table().to_pandas()
            self._frames[name] = pd.concat(frames, ignore_index=True) if frames else empty
        return self._frames[name]

    @property
    def trials(self) -> pd.DataFrame:
        return self.table("trials")

    @property
    def epochs(self) -> pd.DataFrame:
        return self.table("epochs")

    @property
    def members(self) -> pd.DataFrame:
        return self.table(schema.MEMBERS)


def _is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.Directory


def load(results_dir: str) -> Results:
    """The results of one sweep dir, or of every sweep under a results root (path or URI)."""
    fs, path = resolve(str(results_dir))
    path = path.rstrip("/")
    if not _is_dir(fs, path):
        raise QueryError(f"no results directory at {results_dir}")
    if _is_dir(fs, f"{path}/trials"):
        return Results(str(results_dir), fs, {path.rsplit("/", 1)[-1]: path})
    subdirs = fs.get_file_info(pafs.FileSelector(path))
    sweeps = {
        i.base_name: i.path
        for i in sorted(subdirs, key=lambda i: i.base_name)
        if i.type == pafs.FileType.Directory and _is_dir(fs, f"{i.path}/trials")
    }
    return Results(str(results_dir), fs, sweeps)


def check_column(frame: pd.DataFrame, column: str) -> str:
    """`column`, or `param.<column>` when that is the one meant; else a QueryError."""
    if column in frame.columns:
        return column
    if schema.param_column(column) in frame.columns:
        return schema.param_column(column)
    close = difflib.get_close_matches(column, [str(c) for c in frame.columns], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise QueryError(f"no column {column!r} in the trials table{hint}")
