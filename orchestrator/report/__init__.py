"""The offline HTML report of a sweep (PNGs embedded, also written beside).

- html.py   write_report: the page, its sections, parameter importance, the failure table
- plots.py  the figures (matplotlib, Agg)
- cli.py    `sweep.py report`
"""

from __future__ import annotations

from orchestrator.report.html import failure_table, param_importances, write_report

__all__ = ["failure_table", "param_importances", "write_report"]
