"""Confirm the winner (issue 21, item 4): after the search, the top-k configurations are
retrained with fresh seeds, as new trials, and the verdict uses those runs.

#1 was picked on the very runs it is judged on, so its search objective overstates it (the
winner's curse). `search.confirm: {top: k, seeds: s}` (sweepfile/sections.py: CONFIRM_DEFAULT;
null or top: 0 = off; done only where the finalists trained >= MIN_TEST_SETS test sets, unless
asked for with `sweep.py confirm`) retrains each of the k best search trials (by the search
objective; only statuses that may rank, schema.RANKED_STATUSES: never collapsed, failed or
raced_out) on every fold, with s seeds that none of the search used, its params fixed. Each is an
ordinary trial row with `stage: confirm` and `confirms: <trial_id>`; search rows have `stage:
search`, and only they feed the Optuna study (schema.search_rows). A confirmation already recorded
(any status) is not rerun, so an interrupted confirmation resumes where it stopped.

`confirmations(trials, mode)` (query/confirmed.py: the read side) gives, per finalist, the
confirmed value and the selection optimism (search objective minus confirmed value): the numbers
the table and the report show.
`sweep.py confirm RESULTS_DIR_OR_SPACE` runs it on an existing sweep (confirm_command.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from orchestrator.query.confirmed import (
    CONFIRMED,
    CONFIRMED_TEST,
    OPTIMISM,
    confirmation_rows,
    confirmations,
)
from orchestrator.query.paired import MIN_TEST_SETS  # below it no verdict: confirm is skipped
from orchestrator.store import ResultStore, schema


def finalists(trials: pd.DataFrame, top: int, mode: str) -> pd.DataFrame:
    """The `top` best search rows by objective among the statuses that may rank."""
    rows = schema.search_rows(trials)
    rows = rows[rows[schema.STATUS].isin(schema.RANKED_STATUSES) & rows[schema.OBJECTIVE].notna()]
    rows = rows.sort_values([schema.OBJECTIVE, schema.TRIAL_ID],
                            ascending=[mode == "min", True], kind="stable")
    return rows.head(max(0, int(top)))


def fresh_seeds(used: list[int], count: int) -> list[int]:
    """`count` seeds none of `used` (the search's train.seeds): the ones right above them."""
    start = max(used, default=-1) + 1
    return list(range(start, start + int(count)))


def pending(store: ResultStore, settings: Mapping[str, Any] | None, mode: str, *,
            micro_batch: int | None = None,
            min_test_sets: int = MIN_TEST_SETS) -> list[dict[str, Any]]:
    """The configs of the confirmations still to run: one per finalist without a recorded
    confirmation, whose search trial trained at least `min_test_sets` test sets (folds). Each
    is the finalist's data/model/train (train.seeds fresh; train.micro_batch = `micro_batch`,
    the sweep file's: None = planned again for the new member count) and
    `runtime: {stage: confirm, confirms: <trial_id>}`."""
    if not settings or int(settings.get("top", 0)) <= 0:
        return []
    trials = store.read_trials()
    if trials.empty:
        return []
    done = set(confirmation_rows(trials)[schema.CONFIRMS].dropna().astype(str))
    chosen = finalists(trials, int(settings["top"]), mode)
    chosen = chosen[~chosen[schema.TRIAL_ID].astype(str).isin(done)]
    if chosen.empty:
        return []
    members = store.read_table("members")
    configs = []
    for row in chosen.to_dict("records"):
        folds = members.loc[members[schema.TRIAL_ID] == row[schema.TRIAL_ID], "fold"].nunique() \
            if not members.empty else 0
        if folds < min_test_sets:
            continue
        config = json.loads(row[schema.CONFIG_JSON])
        train = config.setdefault("train", {})
        train["seeds"] = fresh_seeds([int(s) for s in train.get("seeds") or [0]],
                                     int(settings["seeds"]))
        train["micro_batch"] = micro_batch
        configs.append({**config, "runtime": {schema.STAGE: schema.CONFIRM_STAGE,
                                              schema.CONFIRMS: str(row[schema.TRIAL_ID])}})
    return configs


def summary_lines(trials: pd.DataFrame, mode: str, metric: str) -> list[str]:
    """The short confirmation summary printed at the end of a run."""
    table = confirmations(trials, mode)
    if table.empty:
        return []
    lines = [f"confirmation (fresh seeds, every fold): {metric} searched -> confirmed, optimism"]
    for row in table.to_dict("records"):
        confirmed = "n/a" if row[CONFIRMED] is None else f"{row[CONFIRMED]:.4f}"
        optimism = "n/a" if row[OPTIMISM] is None else f"{row[OPTIMISM]:+.4f}"
        test = row[CONFIRMED_TEST]
        test = "" if test is None or pd.isna(test) else f"  (test_uar {test:.4f})"
        lines.append(f"  {row[schema.TRIAL_ID]}  {row[schema.OBJECTIVE]:.4f} -> {confirmed}  "
                     f"optimism {optimism}{test}")
    return lines


def _fixed_configs_class() -> type:
    """Define FixedConfigs on first use: it subclasses Ray's Searcher, and this module is
    imported without Ray (the report, `results`)."""
    from ray.tune.search import Searcher

    class FixedConfigs(Searcher):
        """A Ray Tune Searcher handing out a fixed list of configs, then FINISHED."""

        def __init__(self, configs: list[dict[str, Any]]) -> None:
            super().__init__()
            self.configs = list(configs)

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            if not self.configs:
                return Searcher.FINISHED
            return self.configs.pop(0)

        def on_trial_complete(self, trial_id: str, result: dict | None = None,
                              error: bool = False) -> None:
            return None

    FixedConfigs.__module__, FixedConfigs.__qualname__ = __name__, "FixedConfigs"
    globals()["FixedConfigs"] = FixedConfigs  # pickled by reference (Tune saves its searcher)
    return FixedConfigs


def __getattr__(name: str) -> Any:
    if name == "FixedConfigs":
        return _fixed_configs_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_confirmation(configs: list[dict[str, Any]], *, plan: Callable[[dict], dict] | None,
                     fit: Callable[[Any, int, list[Any]], None], console: Any) -> None:
    """Run the confirmation trials `configs` (from `pending`): each planned like a search trial
    (`plan`: the driver's TrialPlanner; None keeps the config's micro-batch), then one Tuner
    (`fit(searcher, num_samples, callbacks)`, runner.run_sweep's) over them."""
    planned = []
    for config in configs:
        config = dict(config)
        if plan is not None:
            for section, values in plan(config).items():
                config[section] = {**config.get(section, {}), **values}
        planned.append(config)
    fit(_fixed_configs_class()(planned), len(planned), [console])
    console.best = None  # the console's "best objective" line is no verdict: summary_lines is
