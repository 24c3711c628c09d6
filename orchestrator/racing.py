"""Racing over folds (issue 25, item 1) and what a sweep spent (item 2: member-epochs).

Accounting: every trial row records `member_epochs` (store/rows.py: one per member per epoch it
trained); `member_epochs_line` is the end-of-sweep line, member-epochs per status (and GPU-hours
where there are GPUs).
"""

from __future__ import annotations

import pandas as pd

from orchestrator.store import schema


def member_epochs_line(trials: pd.DataFrame) -> str:
    """`member-epochs: 120 (completed 90, pruned 20, raced_out 10; confirm 40)`: what the
    sweep's trials trained, per status of the search rows, the confirmation rows apart; GPU-hours
    beside them when any trial had a GPU. Rows written before the column: not counted."""
    if trials.empty or schema.MEMBER_EPOCHS not in trials.columns:
        return "member-epochs: not recorded"
    spent = pd.to_numeric(trials[schema.MEMBER_EPOCHS], errors="coerce")
    search = schema.search_rows(trials).index
    confirm = trials.index.difference(search)
    status = trials.loc[search, schema.STATUS]
    parts = [f"{s} {int(spent.loc[search][status == s].sum())}"
             for s in schema.STATUSES if (status == s).any()]
    text = f"member-epochs: {int(spent.sum())} ({', '.join(parts)}"
    if len(confirm):
        text += f"; confirm {int(spent.loc[confirm].sum())}"
    text += ")"
    hours = pd.to_numeric(trials.get("gpu_hours"), errors="coerce")
    if hours is not None and hours.sum() > 0:
        text += f", GPU-hours {hours.sum():.2f}"
    return text
