"""The offline HTML report of a sweep (PNGs embedded, also written beside).

- html.py          write_report: the page and its sections, parameter importance, failure table
- table.py         the leaderboard as a sortable HTML table (generic over its columns)
- study.py         the Optuna study of a sweep: search.study_from_trials with spec.yaml's
                   distributions
- optuna_plots.py  optuna.visualization.matplotlib: importance, slices, parallel, contour
- plots.py         the report's own figures (history in start order, timeline, learning curves,
                   members' curves, confusion matrices; matplotlib, Agg)
- report_command.py `sweep.py report`
"""

from __future__ import annotations

from orchestrator.report.html import failure_table, param_importances, write_report
from orchestrator.report.optuna_plots import MIN_TRIALS_FOR_CONTOUR, MIN_TRIALS_FOR_IMPORTANCE
from orchestrator.report.study import SweepStudy, sweep_study

__all__ = ["MIN_TRIALS_FOR_CONTOUR", "MIN_TRIALS_FOR_IMPORTANCE", "SweepStudy", "failure_table",
           "param_importances", "sweep_study", "write_report"]
