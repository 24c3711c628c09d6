"""SQL over the store (DuckDB): `sql(results_dir, query)`, one read-only SELECT over views
trials, epochs, members; `filter_where(frame, expression)`, the --where filter.

One name per number: the names the leaderboard prints (results.display_name: `val_uar`,
`model.layers`) work everywhere a stored name does. --where translates them (results.column_names)
before DuckDB sees the expression, bare or double-quoted; the `trials` view holds every stored
column plus each display name as an alias column (`"model.layers"`: SQL needs the quotes around a
dotted name). Unknown names come back with did-you-mean, never as DuckDB's binder error.

Queries read only the store (issue 23.8): the tool opens the store's files itself (the tolerant
reader of results.py: a compacted trial taken from one file only) and registers the frames;
DuckDB runs with external access off (no file, URL or directory reads: `read_csv('/etc/passwd')`,
`glob('/*')`, ATTACH, COPY are refused), extension auto-install / auto-load off, and the
configuration locked (a query cannot SET it back). Any statement but a single SELECT (or
WITH ... SELECT) is refused before anything runs, by DuckDB's own statement type; a --where
expression is one expression: it cannot close the parenthesis it is wrapped in, comment out the
rest, or return rows that are not the frame's (`1=1) UNION ALL SELECT 99999 --`).
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
from orchestrator.store import schema

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


# DuckDB settings of every connection here: nothing outside the registered frames is reachable.
LOCKED = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that reads only what is registered on it (LOCKED)."""
    return duckdb.connect(":memory:", config=dict(LOCKED))


def check_expression(expression: str) -> None:
    """A --where expression stays one expression inside the parentheses it is wrapped in: no
    `)` closing more than it opened, no comment (`--`, `/*`), no `;` (outside quotes)."""
    depth = 0
    for i, part in enumerate(_QUOTED.split(expression)):
        if i % 2:
            continue
        for bad in ("--", "/*", ";"):
            if bad in part:
                raise QueryError(f"--where takes one SQL condition, e.g. \"val_uar > 0.5\"; "
                                 f"{bad!r} is not allowed in it (got {expression!r})")
        for char in part:
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth < 0:
                raise QueryError(f"--where takes one SQL condition: a ')' closes a parenthesis "
                                 f"it never opened (got {expression!r})")
    if depth:
        raise QueryError(f"--where takes one SQL condition: {depth} '(' never closed (got "
                         f"{expression!r})")
    if (expression.count("'") - sum(p.count("'") for p in _QUOTED.findall(expression))) % 2:
        raise QueryError(f"--where: a quote ' is never closed (got {expression!r})")


def filter_where(frame: pd.DataFrame, expression: str | None) -> pd.DataFrame:
    """Rows of `frame` where the SQL boolean `expression` holds (evaluated by DuckDB)."""
    if not expression:
        return frame
    check_expression(expression)
    query = f"SELECT __row FROM trials WHERE ({translate_names(expression, column_names(frame))})"
    check_select(query)
    con = connect()
    con.register("trials", frame.assign(__row=range(len(frame))))
    try:
        rows = [int(r) for r in con.execute(query).fetchnumpy()["__row"]]
    except duckdb.Error as exc:
        raise duck_error(exc, frame) from exc
    finally:
        con.close()
    if len(set(rows)) != len(rows) or any(not 0 <= r < len(frame) for r in rows):
        raise QueryError(f"--where takes one SQL condition on the trials; {expression!r} "
                         "returned rows that are not trials")
    return frame.iloc[sorted(rows)]


def _views(con: duckdb.DuckDBPyConnection, results: Results) -> None:
    """Views `trials`, `epochs`, `members` over the frames the store's reader read (DuckDB
    opens no file itself), plus `<table>_stored` with the stored columns only."""
    for table in schema.TABLES:
        stored = f"{table}_stored"
        con.register(stored, results.table(table))
        columns = [d[0] for d in con.execute(f"SELECT * FROM {stored} LIMIT 0").description]
        aliases = [f"{_quote(c)} AS {_quote(display_name(c, columns))}" for c in columns
                   if display_name(c, columns) not in columns]
        con.execute(f"CREATE VIEW {table} AS SELECT *{''.join(', ' + a for a in aliases)} "
                    f"FROM {stored}")


def sql(results_dir: str, query: str) -> pd.DataFrame:
    """Run one read-only SELECT over views `trials`, `epochs`, `members` (the store's frames,
    read by the tool; DuckDB reaches nothing else: LOCKED). Each view also has the display names
    as alias columns (`val_uar`, `"model.layers"`); `<table>_stored` views hold the stored
    columns only."""
    check_select(query)
    results = load(results_dir)
    con = connect()
    try:
        _views(con, results)
        return con.execute(query).df()
    except duckdb.Error as exc:
        raise duck_error(exc, results.trials) from exc
    finally:
        con.close()
