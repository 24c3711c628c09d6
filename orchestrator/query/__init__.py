"""Reading a result store: DataFrames, leaderboard, group-by, SQL, learning curves, compaction.

- results.py     load(path) -> Results (trials / epochs / members, read lazily); QueryError
- frames.py      leaderboard, best_trial, group_by, curves, summary, format_frame
- paired.py      compare / paired_difference: one value per test set, t-interval, exact
                 Wilcoxon, Holm, THE verdict (better / worse / no evidence / too few test sets)
- baselines.py   read_baselines (results/<sweep>/baseline.parquet, per data variant),
                 confusion with class names
- sql.py         sql (read-only SELECT over DuckDB views), filter_where (--where)
- compaction.py  compact: merge per-trial files so big sweeps query fast
- results_command.py  `sweep.py results`
"""

from __future__ import annotations

from orchestrator.query.baselines import confusion, confusion_record, read_baselines
from orchestrator.query.compaction import compact
from orchestrator.query.frames import (
    best_trial,
    curves,
    format_frame,
    group_by,
    leaderboard,
    param_columns,
    status_counts,
    summary,
)
from orchestrator.query.paired import (
    VERDICT_RULE,
    Paired,
    compare,
    holm,
    paired_difference,
    per_test_set,
)
from orchestrator.query.results import (
    QueryError,
    Results,
    check_column,
    column_names,
    display_name,
    load,
)
from orchestrator.query.sql import check_select, filter_where, sql

__all__ = [
    "VERDICT_RULE", "Paired", "QueryError", "Results", "best_trial", "check_column",
    "check_select", "column_names", "compact", "compare", "confusion", "confusion_record",
    "curves", "display_name", "filter_where", "format_frame", "group_by", "holm", "leaderboard",
    "load", "paired_difference", "param_columns", "per_test_set", "read_baselines", "sql",
    "status_counts", "summary",
]
