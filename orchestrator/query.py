"""Read a result store: leaderboard, group-by, where filters, read-only SQL, learning curves.

`load(path)` accepts one sweep dir (results/<sweep>) or a results root holding many sweeps (the
`sweep` column tells them apart), as a local path or a pyarrow.fs URI. Tables are read on first
access and only complete files are read: temporary names are never listed, and unreadable or
truncated files are skipped with a warning naming the file. Nothing is ever unpickled.
Column names: orchestrator/schema.py. The CLI glue lives in orchestrator/query_cli.py.
"""

from __future__ import annotations

import difflib
import io
import re
from dataclasses import dataclass, field

import duckdb
import pandas as pd
import pyarrow.fs as pafs

from orchestrator import schema
from orchestrator.store import read_dir, resolve
from trainables import names
from trainables.errors import SersweepError

FORMATS = ("table", "csv", "json", "parquet")
SHOWN_METRICS = tuple(f"{s}_{m}" for s in ("val", "test") for m in ("acc", "uar", "f1_macro"))
CURVE_METRICS = schema.EPOCH_METRICS


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
        return self.table("members")


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


# --- columns and filters --------------------------------------------------------------------

_DOTTED = re.compile(r'(?<![\w."])(param(?:\.[A-Za-z_]\w*)+)')
_QUOTED = re.compile(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")")


def quote_columns(expression: str) -> str:
    """Quote bare dotted `param.a.b` names (outside string literals) so SQL reads one column."""
    parts = _QUOTED.split(expression)
    return "".join(p if i % 2 else _DOTTED.sub(r'"\1"', p) for i, p in enumerate(parts))


def check_column(frame: pd.DataFrame, column: str) -> str:
    """`column`, or `param.<column>` when that is the one meant; else a QueryError."""
    if column in frame.columns:
        return column
    if schema.param_column(column) in frame.columns:
        return schema.param_column(column)
    close = difflib.get_close_matches(column, [str(c) for c in frame.columns], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise QueryError(f"no column {column!r} in the trials table{hint}")


def check_select(query: str) -> None:
    """Allow one read-only statement: SELECT (or WITH ... SELECT); refuse everything else."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise QueryError(f"bad SQL: {exc}") from exc
    if len(statements) != 1:
        raise QueryError(f"give exactly one SELECT statement (got {len(statements)})")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryError(
            f"only read-only SELECT / WITH ... SELECT queries are allowed; refused a "
            f"{kind.name} statement (the result store is never modified by queries)"
        )


def _duck_error(exc: duckdb.Error, frame: pd.DataFrame | None) -> QueryError:
    text = str(exc).splitlines()[0]
    if frame is not None and isinstance(exc, duckdb.BinderException):
        missing = re.search(r'column "([^"]+)"', str(exc))
        if missing:
            try:
                check_column(frame, missing.group(1))
            except QueryError as err:
                return QueryError(f"{err} ({text})")
    return QueryError(f"bad query: {text}")


def filter_where(frame: pd.DataFrame, expression: str | None) -> pd.DataFrame:
    """Rows of `frame` where the SQL boolean `expression` holds (evaluated by DuckDB)."""
    if not expression:
        return frame
    query = f"SELECT __row FROM trials WHERE ({quote_columns(expression)})"
    check_select(query)
    con = duckdb.connect()
    con.register("trials", frame.assign(__row=range(len(frame))))
    try:
        rows = con.execute(query).fetchnumpy()["__row"]
    except duckdb.Error as exc:
        raise _duck_error(exc, frame) from exc
    finally:
        con.close()
    return frame.iloc[sorted(int(r) for r in rows)]


# --- leaderboard and group-by ------------------------------------------------------------------


def _ascending(frame: pd.DataFrame, by: str, ascending: bool | None) -> bool:
    if ascending is not None:
        return ascending
    if "loss" in by or "seconds" in by or "bytes" in by or "hours" in by:
        return True
    modes = frame["mode"].dropna().unique() if "mode" in frame else []
    return len(modes) > 0 and modes[0] == "min"


def param_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if str(c).startswith(schema.PARAM_PREFIX)]


def status_counts(frame: pd.DataFrame) -> dict[str, int]:
    return {k: int(v) for k, v in frame["status"].value_counts().items()} if len(frame) else {}


def summary(frame: pd.DataFrame) -> str:
    """`12 trials: 8 completed, 3 pruned, 1 failed; 5 of 48 members collapsed`."""
    counts = ", ".join(f"{v} {k}" for k, v in status_counts(frame).items())
    members = int(frame["members"].fillna(0).sum()) if "members" in frame else 0
    collapsed = int(frame["members_collapsed"].fillna(0).sum()) if len(frame) else 0
    return f"{len(frame)} trials: {counts or 'none'}; {collapsed} of {members} members collapsed"


def leaderboard(
    results: Results,
    top: int = 10,
    by: str | None = None,
    where: str | None = None,
    ascending: bool | None = None,
) -> pd.DataFrame:
    """The `top` trials by `by` (default: the objective; direction from the sweep's mode, or
    ascending for losses/costs), with mean and std of val/test acc, UAR, macro-F1, the params,
    status and collapsed members. `where`: a SQL boolean over the trials columns.
    `frame.attrs["status_counts"]` / `["summary"]` describe all trials that passed `where`."""
    trials = filter_where(results.trials, where)
    by = check_column(trials, by or names.OBJECTIVE)
    order = trials.sort_values(by, ascending=_ascending(trials, by, ascending),
                               na_position="last", kind="stable")
    columns = ["sweep"] if trials["sweep"].nunique() > 1 else []
    columns += ["trial_id", "status", names.OBJECTIVE] + ([by] if by != names.OBJECTIVE else [])
    for metric in SHOWN_METRICS:
        columns += [names.mean_key(metric), names.std_key(metric)]
    columns += ["members", "members_collapsed", "epochs_run"] + param_columns(trials)
    board = order.head(top)[[c for c in columns if c in order.columns]].reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    board.attrs = {"status_counts": status_counts(trials), "summary": summary(trials)}
    return board


def group_by(
    results: Results, param: str, by: str | None = None, where: str | None = None
) -> pd.DataFrame:
    """Per value of `param` (`model.layers` or `param.model.layers`): trials, scored trials,
    mean, std (ddof=1), best of `by` (default objective) and the best trial."""
    trials = filter_where(results.trials, where)
    column = check_column(trials, param)
    by = check_column(trials, by or names.OBJECTIVE)
    best_low = _ascending(trials, by, None)
    rows = []
    for value, group in trials.groupby(column, dropna=False, sort=True):
        scored = group.dropna(subset=[by])
        pick = scored[by].idxmin() if best_low else scored[by].idxmax()
        rows.append({
            column: value, "trials": len(group), "scored": len(scored),
            "completed": int((group["status"] == "completed").sum()),
            f"{by}_mean": scored[by].mean(), f"{by}_std": scored[by].std(),
            f"{by}_best": scored[by].min() if best_low else scored[by].max(),
            "best_trial": scored.loc[pick, "trial_id"] if len(scored) else None,
        })
    return pd.DataFrame(rows)


# --- learning curves and output ------------------------------------------------------------


def curves(results: Results, trial_ids: list[str], metrics=CURVE_METRICS) -> pd.DataFrame:
    """Per trial and epoch: members reporting, and mean / std (ddof=0) over members of each
    metric. Reads only the asked trials' rows unless the epochs table is already loaded."""
    wanted = {str(t) for t in trial_ids}
    if "epochs" in results._frames:
        epochs = results.epochs[results.epochs["trial_id"].isin(wanted)]
    else:
        frames = [read_dir(results.fs, f"{p}/epochs", wanted) for p in results.sweeps.values()]
        frames = [f for f in frames if not f.empty]
        epochs = pd.concat(frames, ignore_index=True) if frames else results.epochs
    metrics = [m for m in metrics if m in epochs.columns]
    grouped = epochs.groupby(["sweep", "trial_id", "epoch"], sort=True)
    out = grouped[metrics].agg(["mean", lambda s: s.std(ddof=0)])
    out.columns = [f"{m}_{'mean' if a == 'mean' else 'std'}" for m, a in out.columns]
    out.insert(0, "members", grouped["member"].nunique())
    return out.reset_index()


def format_frame(frame: pd.DataFrame, fmt: str) -> str | bytes:
    """table (aligned text, `x_mean`/`x_std` shown as `m ± s`) | csv | json (records) |
    parquet (bytes)."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", date_format="iso")
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue()
    if fmt != "table":
        raise QueryError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    shown = frame.copy()
    for column in list(shown.columns):
        base = str(column).removesuffix("_mean")
        if column == base or f"{base}_std" not in shown.columns:
            continue
        mean, std = shown[column], shown[f"{base}_std"]
        text = [("-" if pd.isna(m) else f"{m:.3f}±{0 if pd.isna(s) else s:.3f}")
                for m, s in zip(mean, std)]
        shown[column] = text
        shown = shown.drop(columns=f"{base}_std").rename(columns={column: base})
    shown.columns = [str(c).removeprefix(schema.PARAM_PREFIX) for c in shown.columns]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


from orchestrator.compaction import compact  # noqa: E402  (re-exported)
from orchestrator.query_cli import add_results_arguments, run_results  # noqa: E402
from orchestrator.query_sql import sql  # noqa: E402

__all__ = [
    "Results", "QueryError", "load", "leaderboard", "group_by", "filter_where", "sql",
    "curves", "format_frame", "compact", "summary", "add_results_arguments", "run_results",
]
