"""Reading a result store: DataFrames, leaderboard, group-by, SQL, learning curves, compaction.

- results.py     load(path) -> Results (trials / epochs / members, read lazily); QueryError
- frames.py      leaderboard, group_by, curves, summary, format_frame
- sql.py         sql (read-only SELECT over DuckDB views), filter_where (--where)
- compaction.py  compact: merge per-trial files so big sweeps query fast
- cli.py         `sweep.py results`
"""

from __future__ import annotations

from orchestrator.query.compaction import compact
from orchestrator.query.frames import (
    curves,
    format_frame,
    group_by,
    leaderboard,
    param_columns,
    status_counts,
    summary,
)
from orchestrator.query.results import QueryError, Results, check_column, load
from orchestrator.query.sql import check_select, filter_where, sql

__all__ = [
    "QueryError", "Results", "check_column", "check_select", "compact", "curves", "filter_where",
    "format_frame", "group_by", "leaderboard", "load", "param_columns", "sql", "status_counts",
    "summary",
]
