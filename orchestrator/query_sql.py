"""`sql(results_dir, query)`: one read-only SELECT over views trials, epochs, members (DuckDB).

The views read the Parquet files directly (union by column name; when compact files exist, each
trial is taken from one file only, as the pandas reader does). Any statement but a single SELECT
(or WITH ... SELECT) is refused before anything runs, by DuckDB's own statement type.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from orchestrator import schema
from orchestrator.query import Results, _duck_error, check_select, load
from orchestrator.store import list_files


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
                raise _duck_error(exc, results.trials) from exc
        except duckdb.Error as exc:
            raise _duck_error(exc, results.trials) from exc
        finally:
            con.close()
    raise AssertionError("unreachable")
