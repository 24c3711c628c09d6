"""SQL over the store (DuckDB): `sql(results_dir, query)`, one read-only SELECT over views
trials, epochs, members; `filter_where(frame, expression)`, the --where filter.

The views read the Parquet files directly (union by column name; when compact files exist, each
trial is taken from one file only, as the pandas reader does). Any statement but a single SELECT
(or WITH ... SELECT) is refused before anything runs, by DuckDB's own statement type.
"""

from __future__ import annotations

import re

import duckdb
import pandas as pd

from orchestrator.query.results import QueryError, Results, check_column, load
from orchestrator.store import list_files, schema

_DOTTED = re.compile(r'(?<![\w."])(param(?:\.[A-Za-z_]\w*)+)')
_QUOTED = re.compile(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")")


def quote_columns(expression: str) -> str:
    """Quote bare dotted `param.a.b` names (outside string literals) so SQL reads one column."""
    parts = _QUOTED.split(expression)
    return "".join(p if i % 2 else _DOTTED.sub(r'"\1"', p) for i, p in enumerate(parts))


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


def duck_error(exc: duckdb.Error, frame: pd.DataFrame | None) -> QueryError:
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
        raise duck_error(exc, frame) from exc
    finally:
        con.close()
    return frame.iloc[sorted(int(r) for r in rows)]


def _view_sql(files: list[str], dedupe: bool) -> str:
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    if not dedupe:
        return f"SELECT * FROM read_parquet([{listed}], union_by_name = true)"
    return (
        f"SELECT * EXCLUDE (filename) FROM read_parquet([{listed}], union_by_name = true, "
        "filename = true) QUALIFY dense_rank() OVER (PARTITION BY sweep, trial_id ORDER BY "
        "regexp_matches(filename, '/compact-[^/]*$'), filename DESC) = 1"
    )


def _views(con: duckdb.DuckDBPyConnection, results: Results, from_frames: bool) -> None:
    for table in schema.TABLES:
        folders = [f"{p}/{table}" for p in results.sweeps.values()]
        files = [f for folder in folders for f in list_files(results.fs, folder)]
        if from_frames or not files or results.fs.type_name != "local":
            con.register(table, results.table(table))
            continue
        dedupe = any(f.compact for f in files)
        con.execute(f"CREATE VIEW {table} AS {_view_sql([f.path for f in files], dedupe)}")


def sql(results_dir: str, query: str) -> pd.DataFrame:
    """Run one read-only SELECT over views `trials`, `epochs`, `members` (DuckDB reads the
    Parquet files directly; if one is unreadable, the tolerant reader's frames are used)."""
    check_select(query)
    results = load(results_dir)
    for from_frames in (False, True):
        con = duckdb.connect(":memory:")
        try:
            _views(con, results, from_frames)
            return con.execute(query).df()
        except (duckdb.IOException, duckdb.InvalidInputException) as exc:
            if from_frames:
                raise duck_error(exc, results.trials) from exc
        except duckdb.Error as exc:
            raise duck_error(exc, results.trials) from exc
        finally:
            con.close()
    raise AssertionError("unreachable")
