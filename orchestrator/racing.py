"""Racing over folds (issue 25, item 1) and what a sweep spent (item 2: member-epochs).

Racing (`search.racing: {first: 2, alpha: 0.05}`, off by default; sweepfile/sections.py): a
search trial trains every seed of its first `first` test sets (folds) in lock-step, under ASHA
(which counts only those epochs: `asha_args`), then one more test set per stage
(trainables/trainable.py: `_stages`, LockstepTrainer.start_stage). After each stage but the last,
the trial calls `keep_racing` (handed over by tune.with_parameters): the paired comparison with
the incumbent on the test sets both trained (one value per test set, the mean over its seeds:
query/paired.py's pairing) must not show it worse; otherwise it ends `raced_out`, its rows
holding the members (test sets) it trained and `raced_against`.

The rule (`shown_worse`): a one-sided paired t-test of the trial's per-test-set differences to
the incumbent whose variance pools the trial's own spread with the spread of every other search
trial's differences to the same incumbent (`pool`: the residual of the two-way layout
configurations x test sets, as F-race's blocks and Dunnett's comparisons with a control),
computed when the trial is sampled (`runtime.racing.pooled`); its level is `alpha` split over
the trial's looks (Bonferroni), so a configuration equal to the incumbent is raced out with
probability at most `alpha` over all of them (bench/racing.py --simulate measures it: 0.034 at
0.05; the former rule, the trial's own spread at `alpha` every look, 0.108). With 2 test sets
the trial's own spread has 1 degree of freedom (critical t 6.3 at 0.05), so the former rule
raced out only what was worse by a wide and consistent margin; the pool gives the first look
the sweep's degrees of freedom. The incumbent is the best
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
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
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
    """Member rows `a` vs `b` on `column`, `a - b`, one value per test set (the mean over its
    seeds): orchestrator/query/paired.py's Paired (bench/racing.py compares the confirmed
    winners with it; the judge uses test_set_differences, the same pairing)."""
    from orchestrator.query import paired

    compare = getattr(paired, "compare", None)
    if compare is not None:  # issue 21's pairing on the test set's identity (query/paired.py)
        return compare(a, b, column, mode == "max")
    return paired.paired_difference(_per_fold(a, column), _per_fold(b, column))


def _per_fold(members: pd.DataFrame, column: str) -> pd.Series:
    if members.empty or column not in members.columns:
        return pd.Series(dtype=float)
    return members[column].astype(float).groupby(members["fold"].astype(str)).mean().dropna()


def test_set_differences(a: pd.DataFrame, b: pd.DataFrame, column: str) -> np.ndarray:
    """`a - b` on `column`, one value per test set both member tables have (each side the mean
    over that test set's seeds; paired on test_set_id where both record it, else the fold)."""
    from orchestrator.query import paired

    if a.empty or b.empty:
        return np.zeros(0)
    key = paired.pairing_key(a, b)
    both = pd.concat({"a": paired.per_test_set(a, column, key),
                      "b": paired.per_test_set(b, column, key)}, axis=1, join="inner").dropna()
    return (both["a"] - both["b"]).to_numpy(dtype=np.float64)


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


def pooled_spread(members: pd.DataFrame, incumbent_members: pd.DataFrame, metric: str,
                  exclude: str | None = None) -> tuple[float, int]:
    """`pool` of the per-test-set differences to the incumbent of every trial in `members`
    (member rows with trial_id; `exclude`: the incumbent's own id)."""
    if members.empty or incumbent_members.empty or schema.TRIAL_ID not in members.columns:
        return 0.0, 0
    return pool(test_set_differences(rows, incumbent_members, metric)
                for trial_id, rows in members.groupby(members[schema.TRIAL_ID].astype(str))
                if trial_id != exclude)


def pool(differences: Iterable[np.ndarray]) -> tuple[float, int]:
    """The spread of per-test-set differences to the incumbent pooled over trials: the sum of
    the squared deviations of each trial's differences from that trial's mean difference, and
    its degrees of freedom (test sets minus one, summed; a trial with one test set adds none).
    It is the residual of the two-way layout configurations x test sets that every
    configuration shares (F-race's blocks; Dunnett's comparisons with a control pool it the
    same way): a trial's first test sets are judged with the sweep's evidence of how much a
    test set moves a difference, not with their own 1 or 2 degrees of freedom."""
    squares, dof = 0.0, 0
    for diff in differences:
        if diff.size >= 2:
            squares += float(((diff - diff.mean()) ** 2).sum())
            dof += int(diff.size) - 1
    return squares, dof


def race_p(diff: np.ndarray, mode: str, pooled: tuple[float, int] = (0.0, 0)) -> float:
    """One-sided p that a trial is worse than the incumbent, from its per-test-set differences
    `diff` (trial - incumbent): the paired t-test whose variance pools the trial's own spread
    with `pooled` (pool: squares, degrees of freedom). Without a pool it is the paired t-test
    of the trial alone (worse_p); 1.0 when no degree of freedom is left."""
    from scipy import stats

    n = int(diff.size)
    if n == 0:
        return 1.0
    mean = float(diff.mean())
    squares = float(pooled[0]) + float(((diff - mean) ** 2).sum())
    dof = int(pooled[1]) + n - 1
    if dof < 1 or math.isnan(mean):
        return 1.0
    worse = -mean if mode == "max" else mean  # > 0: the trial is worse
    se = math.sqrt(squares / dof / n)
    if not se > 0:  # identical differences on every test set, and no spread in the pool
        return 0.0 if worse > 0 else 1.0
    return float(stats.t.sf(worse / se, dof))


def looks(first: int, test_sets: int) -> int:
    """How many times a trial of `test_sets` test sets is judged: after its first `first`, then
    after each one more but the last (trainables/trainable.py: _stages)."""
    return max(1, int(test_sets) - max(1, int(first)))


def shown_worse(diff: np.ndarray, mode: str, alpha: float, n_looks: int,
                pooled: tuple[float, int] = (0.0, 0)) -> bool:
    """THE racing decision at one look: race_p below `alpha` split over the trial's `n_looks`
    (Bonferroni), so a configuration equal to the incumbent is raced out with probability at
    most `alpha` over all its looks (bench/racing.py --simulate measures it)."""
    return race_p(diff, mode, pooled) < float(alpha) / max(1, int(n_looks))


def incumbent(store: ResultStore, metric: str, mode: str) -> tuple[str, list[dict]] | None:
    """The incumbent racing compares with: the best completed search trial recorded so far (by
    objective; a completed trial trained every test set) and its member rows (fold, seed,
    `metric`, and test_set_id where recorded); None before the first."""
    found = _incumbent(store, metric, mode)
    return None if found is None else found[:2]


def _incumbent(store: ResultStore, metric: str,
               mode: str) -> tuple[str, list[dict], pd.DataFrame] | None:
    """incumbent(), plus the member rows of every search trial (for pooled_spread)."""
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
    search = members[members[schema.TRIAL_ID].isin(trials[schema.TRIAL_ID])]
    keep_all = [schema.TRIAL_ID, *keep]
    return trial_id, json.loads(mine[keep].to_json(orient="records")), search[keep_all]


TEST_SET_KEY = "test_set_id"  # members column of issue 21 (query/paired.py), where present


def keep_racing(config: Mapping[str, Any], report: Mapping[str, Any]) -> bool:
    """The judge a racing trial calls after each stage but its last (trainables/trainable.py,
    handed over by tune.with_parameters): False when its paired comparison with the incumbent
    (`runtime.racing.incumbent_members`, fixed when the trial was sampled) on the test sets both
    trained shows it worse (shown_worse: the variance pooled with `runtime.racing.pooled`, the
    sweep's other trials when it was sampled; `alpha` split over the looks); True otherwise
    (also without an incumbent)."""
    runtime = config.get("runtime") or {}
    racing = runtime.get("racing") or {}
    if not racing.get("incumbent_members"):
        return True
    metric, mode = runtime.get("metric", names.VAL_UAR), runtime.get("mode", "max")
    mine = pd.DataFrame(schema.report_json(report, names.MEMBER_RESULTS_JSON, []))
    theirs = pd.DataFrame(json.loads(racing["incumbent_members"]))
    pooled = racing.get("pooled") or (0.0, 0)
    key = TEST_SET_KEY if TEST_SET_KEY in theirs.columns else "fold"
    n_looks = looks(racing.get("first", 2), theirs[key].nunique())
    return not shown_worse(test_set_differences(mine, theirs, metric), mode, racing["alpha"],
                           n_looks, (float(pooled[0]), int(pooled[1])))


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
        found = _incumbent(ResultStore(self.results_root, self.sweep), self.metric, self.mode)
        pooled = None if found is None else pooled_spread(
            found[2], pd.DataFrame(found[1]), self.metric, exclude=found[0])
        racing = {**self.settings, "incumbent": found[0] if found else None,
                  "incumbent_members": json.dumps(found[1]) if found else None,
                  "pooled": list(pooled) if pooled else None}
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
