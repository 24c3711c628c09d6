"""The confirmation runs of a sweep's finalists, as the store records them (search.confirm:
orchestrator/confirm.py retrains them; this is the read side the leaderboard, the report and the
end-of-run summary share): per finalist its confirmed value and its selection optimism."""

from __future__ import annotations

import pandas as pd

from orchestrator.store import schema

CONFIRMED = "confirmed"  # the confirmation trial's objective (mean over its members)
OPTIMISM = "optimism"  # search objective - confirmed (positive: the search overstated it)
CONFIRM_TRIAL = "confirm_trial_id"
CONFIRMED_TEST = "confirmed_test_uar"


def confirmation_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """The confirmation rows (stage confirm) of a trials table."""
    if schema.STAGE not in trials.columns or schema.CONFIRMS not in trials.columns:
        return trials.iloc[0:0]
    return trials[trials[schema.STAGE] == schema.CONFIRM_STAGE]



def confirmations(trials: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Per confirmed finalist (search order: best first): trial_id, its search `objective`,
    `confirmed` (its confirmation trial's objective: fresh seeds, every fold), `optimism` =
    objective - confirmed (for mode min: confirmed - objective; positive = the search
    overstated it), `confirmed_test_uar` and `confirm_trial_id`. Empty when none is recorded."""
    columns = [schema.TRIAL_ID, schema.OBJECTIVE, CONFIRMED, OPTIMISM, CONFIRMED_TEST,
               CONFIRM_TRIAL]
    confirm = confirmation_rows(trials)
    confirm = confirm[confirm[schema.STATUS].isin(schema.SCORED_STATUSES)]
    if confirm.empty:
        return pd.DataFrame(columns=columns)
    search = schema.search_rows(trials).set_index(schema.TRIAL_ID)
    rows = []
    for row in confirm.to_dict("records"):
        origin = str(row[schema.CONFIRMS])
        if origin not in search.index:
            continue
        objective = float(search.at[origin, schema.OBJECTIVE])
        confirmed = row[schema.OBJECTIVE]
        confirmed = float(confirmed) if confirmed is not None and pd.notna(confirmed) else None
        optimism = None if confirmed is None else (
            objective - confirmed if mode == "max" else confirmed - objective)
        rows.append({schema.TRIAL_ID: origin, schema.OBJECTIVE: objective, CONFIRMED: confirmed,
                     OPTIMISM: optimism, CONFIRMED_TEST: row.get("test_uar_mean"),
                     CONFIRM_TRIAL: row[schema.TRIAL_ID]})
    out = pd.DataFrame(rows, columns=columns)
    return out.sort_values(schema.OBJECTIVE, ascending=mode == "min", kind="stable",
                           ignore_index=True)
