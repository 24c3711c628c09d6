"""The store as DataFrames: `load(path)` -> Results (trials, epochs, members, read lazily).

`load` accepts one sweep dir (results/<sweep>) or a results root holding many sweeps (the `sweep`
column tells them apart), as a local path or a pyarrow.fs URI. Only complete files are read:
temporary names are never listed, and unreadable or truncated files are skipped with a warning
naming the file. Nothing is ever unpickled. Column names: orchestrator/store/schema.py.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
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


def display_name(column: str, columns: Iterable[str] = ()) -> str:
    """THE name a table shows for a stored column (format_frame prints it; every query accepts
    it): `param.model.layers` -> `model.layers`; `val_uar_mean` -> `val_uar` when `val_uar_std`
    is among `columns` (the table shows them as one `mean±std` cell); anything else as stored."""
    column = str(column)
    if column.startswith(schema.PARAM_PREFIX):
        return column.removeprefix(schema.PARAM_PREFIX)
    base = column.removesuffix("_mean")
    if base != column and f"{base}_std" in columns:
        return base
    return column


def column_names(frame: pd.DataFrame) -> dict[str, str]:
    """Every name a query accepts for `frame`'s columns -> the stored column: the stored names
    themselves and their display names (`display_name`); a stored name wins a clash."""
    columns = [str(c) for c in frame.columns]
    out = {c: c for c in columns}
    for c in columns:
        out.setdefault(display_name(c, columns), c)
    return out


def unknown_name(name: str, names: Iterable[str], table: str = "trials") -> QueryError:
    """The error for a name no column has, with up to 3 close names (difflib)."""
    shown = sorted(set(names))
    close = difflib.get_close_matches(name, shown, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return QueryError(f"no column {name!r} in the {table} table{hint}")


def check_column(frame: pd.DataFrame, column: str) -> str:
    """The stored column `column` names: a stored name, a display name (`val_uar`,
    `model.layers`), or a param key (`model.layers` = `param.model.layers`); else QueryError
    with did-you-mean."""
    names = column_names(frame)
    if column in names:
        return names[column]
    if schema.param_column(column) in names:
        return names[schema.param_column(column)]
    columns = [str(c) for c in frame.columns]
    raise unknown_name(column, [display_name(c, columns) for c in columns] + columns)
