"""Racing over folds (issue 25, item 1) and what a sweep spent (item 2: member-epochs).

Racing (`search.racing: {first: 2, alpha: 0.05}`, off by default; sweepfile/sections.py): a
search trial trains every seed of its first `first` test sets (folds) in lock-step, under ASHA
(which counts only those epochs: `asha_args`), then one more test set per stage
(trainables/trainable.py: `_stages`, LockstepTrainer.start_stage). After each stage but the last,
the trial calls `keep_racing` (handed over by tune.with_parameters): the paired comparison with
the incumbent on the test sets both trained (`compare_members`: query/paired.py, one value per
test set) must not show it worse, one-sided at `alpha`; otherwise it ends `raced_out`, its rows
holding the members (test sets) it trained and `raced_against`. The incumbent is the best
completed search trial in the store when the trial is sampled (`RacingPlan`, into the config's
`runtime.racing`), so a resumed sweep races against what its store holds. Optuna is told the
value on the test sets done so far as COMPLETE with the user attrs `partial: True` and
`test_sets` (search.py: partial_attrs; what Optuna's WilcoxonPruner recommends). Confirmation
runs (confirm.py) never race: they train every fold.

Accounting: every trial row records `member_epochs` (store/rows.py: one per member per epoch it
trained); `member_epochs_line` is the end-of-sweep line, member-epochs per status (and GPU-hours
where there are GPUs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from orchestrator.store import ResultStore, schema
from trainables import names

if TYPE_CHECKING:
    from orchestrator.sweepfile import SweepSpec


def _racing_saved(search: pd.DataFrame, spent: pd.Series) -> int:
    """About how many member-epochs the raced_out trials did not train: each one's spent
    member-epochs scaled to every test set of the sweep's completed trials (same epochs per test
    set assumed; ASHA or collapse could have stopped them earlier)."""
    if schema.TEST_SETS not in search.columns:
        return 0
    sets = pd.to_numeric(search[schema.TEST_SETS], errors="coerce")
    full = sets[search[schema.STATUS] == schema.COMPLETED].max()
    raced = (search[schema.STATUS] == schema.RACED_OUT) & (sets > 0)
    if not raced.any() or pd.isna(full):
        return 0
    return int(round(float((spent[raced] * (full / sets[raced] - 1)).sum())))


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
    saved = _racing_saved(trials.loc[search], spent.loc[search])
    if saved:
        text += f", racing saved ~{saved}"
    hours = pd.to_numeric(trials.get("gpu_hours"), errors="coerce")
    if hours is not None and hours.sum() > 0:
        text += f", GPU-hours {hours.sum():.2f}"
    return text


# --- racing over folds ---------------------------------------------------------------------------
def compare_members(a: pd.DataFrame, b: pd.DataFrame, column: str, mode: str) -> Any:
    """THE comparison racing makes (its one call into orchestrator/query/paired.py): member rows
    `a` vs `b` on `column`, `a - b`, one value per test set (the mean over its seeds)."""
    from orchestrator.query import paired

    compare = getattr(paired, "compare", None)
    if compare is not None:  # issue 21's pairing on the test set's identity (query/paired.py)
        return compare(a, b, column, mode == "max")
    return paired.paired_difference(_per_fold(a, column), _per_fold(b, column))


def _per_fold(members: pd.DataFrame, column: str) -> pd.Series:
    if members.empty or column not in members.columns:
        return pd.Series(dtype=float)
    return members[column].astype(float).groupby(members["fold"].astype(str)).mean().dropna()


def worse_p(result: Any, mode: str) -> float:
    """One-sided p that the first side is worse than the second, from the paired result's
    t-interval (query/paired.py: mean, its CONFIDENCE interval, n test sets); 1.0 when n < 2."""
    from scipy import stats

    from orchestrator.query.paired import CONFIDENCE

    n, mean = int(result.n), float(result.mean)
    if n < 2 or math.isnan(mean):
        return 1.0
    worse = -mean if mode == "max" else mean  # > 0: the first side is worse
    quantile = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1))
    se = (float(result.high) - float(result.low)) / (2 * quantile)
    if not se > 0:  # identical differences on every test set
        return 0.0 if worse > 0 else 1.0
    return float(stats.t.sf(worse / se, n - 1))


def incumbent(store: ResultStore, metric: str, mode: str) -> tuple[str, list[dict]] | None:
    """The incumbent racing compares with: the best completed search trial recorded so far (by
    objective; a completed trial trained every test set) and its member rows (fold, seed,
    `metric`, and test_set_id where recorded); None before the first."""
    trials = schema.search_rows(store.read_trials())
    done = trials[(trials[schema.STATUS] == schema.COMPLETED) & trials[schema.OBJECTIVE].notna()]
    if done.empty:
        return None
    best = done.sort_values([schema.OBJECTIVE, schema.TRIAL_ID],
                            ascending=[mode == "min", True], kind="stable").iloc[0]
    trial_id = str(best[schema.TRIAL_ID])
    members = store.read_table("members")
    mine = members[members[schema.TRIAL_ID] == trial_id]
    keep = [c for c in ("fold", "seed", metric, TEST_SET_KEY) if c in mine.columns]
    return trial_id, json.loads(mine[keep].to_json(orient="records"))


TEST_SET_KEY = "test_set_id"  # members column of issue 21 (query/paired.py), where present


def keep_racing(config: Mapping[str, Any], report: Mapping[str, Any]) -> bool:
    """The judge a racing trial calls after each stage but its last (trainables/trainable.py,
    handed over by tune.with_parameters): False when the paired comparison with the incumbent
    (`runtime.racing.incumbent_members`, fixed when the trial was sampled) on the test sets both
    trained shows the trial worse, one-sided at `runtime.racing.alpha`; True otherwise (also
    without an incumbent)."""
    runtime = config.get("runtime") or {}
    racing = runtime.get("racing") or {}
    if not racing.get("incumbent_members"):
        return True
    metric, mode = runtime.get("metric", names.VAL_UAR), runtime.get("mode", "max")
    mine = pd.DataFrame(schema.report_json(report, names.MEMBER_RESULTS_JSON, []))
    theirs = pd.DataFrame(json.loads(racing["incumbent_members"]))
    result = compare_members(mine, theirs, metric, mode)
    return not worse_p(result, mode) < float(racing["alpha"])


class RacingPlan:
    """TrialSpace's `plan` when racing: the driver's memory plan (`plan`, may be None) plus
    `runtime.racing` = the sweep's {first, alpha} and the incumbent (`incumbent`: its trial id
    and member rows as JSON), read from the store when the trial is sampled, so a resumed sweep
    races against the incumbent its store holds. A class: Tune pickles the searcher."""

    def __init__(self, plan: Callable[[dict], dict] | None, results_root: str, sweep: str,
                 settings: Mapping[str, Any], metric: str, mode: str) -> None:
        self.plan, self.results_root, self.sweep = plan, results_root, sweep
        self.settings, self.metric, self.mode = dict(settings), metric, mode

    def __call__(self, config: dict[str, Any]) -> dict[str, dict[str, Any]]:
        sections = dict(self.plan(config)) if self.plan is not None else {}
        found = incumbent(ResultStore(self.results_root, self.sweep), self.metric, self.mode)
        racing = {**self.settings, "incumbent": found[0] if found else None,
                  "incumbent_members": json.dumps(found[1]) if found else None}
        sections["runtime"] = {**sections.get("runtime", {}), "racing": racing}
        return sections


def plan_for(spec: SweepSpec, plan: Any, results_root: str) -> Any:
    """The search trials' plan: `plan` itself, or a RacingPlan around it when racing."""
    if not spec.search.racing:
        return plan
    return RacingPlan(plan, results_root, spec.name, spec.search.racing, spec.search.metric,
                      spec.search.mode)


def trainable_args(spec: SweepSpec) -> dict[str, Any]:
    """tune.with_parameters' extra arguments of train_trial: the judge when racing."""
    return {"race": keep_racing} if spec.search.racing else {}


def asha_args(spec: SweepSpec) -> dict[str, Any]:
    """ASHA when racing: it counts the first stage's epochs (names.RACE_EPOCH; later stages
    report without it, so ASHA leaves them alone) and does not stop a trial at max_t (the end
    of the first stage is not the end of the trial)."""
    if not spec.search.racing:
        return {}
    return {"time_attr": names.RACE_EPOCH, "stop_last_trials": False}
