"""SQL over the store (DuckDB): `sql(results_dir, query)`, one read-only SELECT over views
trials, epochs, members; `filter_where(frame, expression)`, the --where filter.

One name per number: the names the leaderboard prints (results.display_name: `val_uar`,
`model.layers`) work everywhere a stored name does. --where translates them (results.column_names)
before DuckDB sees the expression, bare or double-quoted; the `trials` view holds every stored
column plus each display name as an alias column (`"model.layers"`: SQL needs the quotes around a
dotted name). Unknown names come back with did-you-mean, never as DuckDB's binder error.

The views read the Parquet files directly (union by column name; when compact files exist, each
trial is taken from one file only, as the pandas reader does). Any statement but a single SELECT
(or WITH ... SELECT) is refused before anything runs, by DuckDB's own statement type.
"""

from __future__ import annotations

import re

import duckdb
import pandas as pd

from orchestrator.query.results import (
    QueryError,
    Results,
    check_column,
    column_names,
    display_name,
    load,
    unknown_name,
)
from orchestrator.store import list_files, schema

# A bare (possibly dotted) name outside string literals; not a function call, not after a dot.
_NAME = re.compile(r'(?<![\w."])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?![\w".(])')
_QUOTED = re.compile(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def translate_names(expression: str, names: dict[str, str]) -> str:
    """`expression` with every column name it uses (bare, dotted or double-quoted; a display or
    a stored name) replaced by the quoted stored column; a dotted name that is no column raises
    QueryError with did-you-mean (DuckDB would read it as table.column)."""
    def bare(match: re.Match) -> str:
        name = match.group(1)
        if name in names:
            return _quote(names[name])
        if "." in name:
            raise unknown_name(name, names)
        return name  # a keyword, a function, or unknown (DuckDB's binder error, translated)

    parts = _QUOTED.split(expression)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(_NAME.sub(bare, part))
        elif part.startswith('"') and part[1:-1].replace('""', '"') in names:
            out.append(_quote(names[part[1:-1].replace('""', '"')]))
        else:
            out.append(part)
    return "".join(out)


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
    """DuckDB's error as a QueryError; an unknown column or a dotted name read as a table gets
    did-you-mean over `frame`'s names (display and stored)."""
    text = str(exc).splitlines()[0]
    if frame is not None and isinstance(exc, duckdb.BinderException):
        missing = re.search(r'column "([^"]+)"', str(exc))
        if missing:
            try:
                check_column(frame, missing.group(1))
            except QueryError as err:
                return QueryError(f"{err} ({text})")
        table = re.search(r'table "([^"]+)"', str(exc))
        if table:
            dotted = sorted(n for n in column_names(frame) if n.startswith(table.group(1) + "."))
            if dotted:
                return QueryError(
                    f"{table.group(1)!r} is not a table: quote dotted column names, e.g. "
                    f"{_quote(dotted[0])} ({text})")
    return QueryError(f"bad query: {text}")


def filter_where(frame: pd.DataFrame, expression: str | None) -> pd.DataFrame:
    """Rows of `frame` where the SQL boolean `expression` holds (evaluated by DuckDB)."""
    if not expression:
        return frame
    query = f"SELECT __row FROM trials WHERE ({translate_names(expression, column_names(frame))})"
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
        stored = f"{table}_stored"
        if from_frames or not files or results.fs.type_name != "local":
            con.register(stored, results.table(table))
        else:
            dedupe = any(f.compact for f in files)
            con.execute(f"CREATE VIEW {stored} AS {_view_sql([f.path for f in files], dedupe)}")
        columns = [d[0] for d in con.execute(f"SELECT * FROM {stored} LIMIT 0").description]
        aliases = [f"{_quote(c)} AS {_quote(display_name(c, columns))}" for c in columns
                   if display_name(c, columns) not in columns]
        con.execute(f"CREATE VIEW {table} AS SELECT *{''.join(', ' + a for a in aliases)} "
                    f"FROM {stored}")


def sql(results_dir: str, query: str) -> pd.DataFrame:
    """Run one read-only SELECT over views `trials`, `epochs`, `members` (DuckDB reads the
    Parquet files directly; if one is unreadable, the tolerant reader's frames are used). Each
    view also has the display names as alias columns (`val_uar`, `"model.layers"`);
    `<table>_stored` views hold the stored columns only."""
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
