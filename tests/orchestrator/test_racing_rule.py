"""The racing rule (orchestrator/racing.py: pool, race_p, looks, shown_worse, keep_racing):
simulated sweeps through the decision itself (bench/racing.py: simulate) for its false
"raced out" rate and its power at the first look, the arithmetic by hand, and the plan reading
the pool from a real store."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.racing import simulate
from orchestrator import racing
from orchestrator.store import ResultStore
from trainables import names

FOLDS = [f"Ses0{i}" for i in range(1, 6)]  # the synthetic corpus: 5 test sets
SWEEPS = 1500


def test_a_config_equal_to_the_incumbent_is_raced_out_at_most_at_alpha() -> None:
    """Over all its looks (after 2, 3 and 4 of 5 test sets) a configuration whose true value
    equals the incumbent's is raced out in at most alpha of the simulated sweeps; the former
    rule (its own spread, alpha at every look) spent about twice alpha."""
    alpha, rng = 0.05, np.random.default_rng(25)
    margin = 2 * math.sqrt(alpha * (1 - alpha) / SWEEPS)
    rule = simulate(rng, SWEEPS, 0.0, alpha=alpha)
    former = simulate(rng, SWEEPS, 0.0, alpha=alpha, pooled=False)
    assert rule["raced_out"] <= alpha + margin, rule
    assert former["raced_out"] > alpha + margin, former


def test_a_clearly_worse_config_ends_after_its_first_test_sets() -> None:
    """Worse by 4x the training noise: the pooled rule races it out after its first 2 test sets
    in most sweeps (it then trains 2 of 5), the former rule (1 degree of freedom at the first
    look: critical t 6.3) in about half; a slightly worse one mostly trains every test set."""
    rng = np.random.default_rng(7)
    worse = simulate(rng, 400, -0.08)
    assert worse["at_first"] >= 0.85 and worse["test_sets"] < 2.3, worse
    assert simulate(rng, 400, -0.08, pooled=False)["at_first"] < 0.6
    assert simulate(rng, 400, -0.01)["raced_out"] < 0.5


def _rows(values: np.ndarray, trial: str) -> pd.DataFrame:
    return pd.DataFrame({"trial_id": trial, "fold": FOLDS[: len(values)], "seed": 0,
                         "val_uar": np.asarray(values, dtype=float)})


def _report(members: pd.DataFrame) -> dict:
    return {names.MEMBER_RESULTS_JSON: members.drop(columns="trial_id").to_json(orient="records")}


def test_the_pool_the_p_and_the_looks_by_hand() -> None:
    incumbent = _rows(np.array([0.6, 0.5, 0.7, 0.55, 0.65]), "inc")
    a = _rows(np.array([0.5, 0.45, 0.6]), "a")  # differences -0.1, -0.05, -0.1
    b = _rows(np.array([0.4, 0.35]), "b")  # -0.2, -0.15
    c = _rows(np.array([0.3]), "c")  # one test set: no degree of freedom
    squares, dof = racing.pooled_spread(pd.concat([incumbent, a, b, c]), incumbent, "val_uar",
                                        exclude="inc")
    diffs_a = np.array([-0.1, -0.05, -0.1])
    assert dof == 2 + 1
    assert squares == pytest.approx(((diffs_a - diffs_a.mean()) ** 2).sum() + 2 * 0.025 ** 2)
    assert racing.looks(2, 5) == 3 and racing.looks(4, 5) == 1 and racing.looks(0, 5) == 4

    diff = np.array([-0.04, -0.10])
    s2 = (squares + ((diff - diff.mean()) ** 2).sum()) / (dof + 1)
    pooled_p = stats.t.sf(-diff.mean() / math.sqrt(s2 / 2), dof + 1)
    assert racing.race_p(diff, "max", (squares, dof)) == pytest.approx(pooled_p)
    assert racing.race_p(-diff, "min", (squares, dof)) == pytest.approx(pooled_p)
    alone = stats.ttest_1samp(diff, 0.0, alternative="less").pvalue  # no pool: the paired t
    assert racing.race_p(diff, "max") == pytest.approx(alone)
    assert racing.race_p(diff[:1], "max") == 1.0  # 1 test set, no pool: no test
    assert racing.shown_worse(diff, "max", 0.05, 3, (squares, dof)) == (pooled_p < 0.05 / 3)


def test_the_plan_pools_the_store_trials_and_the_judge_uses_it(tmp_path: Path) -> None:
    """RacingPlan reads the incumbent and the pool from a real store (Parquet); with that pool a
    trial worse on its first 2 test sets by a wide but uneven margin is raced out there, where
    its own 2 differences (1 degree of freedom) cannot show it."""
    store = ResultStore(str(tmp_path), "s")
    store.claim_identity()
    store.write_identity()
    rng = np.random.default_rng(3)
    effect = rng.normal(0.0, 0.08, len(FOLDS))
    others = [(f"h{k}", _rows(0.5 + effect + rng.normal(0.0, 0.02, 5), f"h{k}"), 0.5)
              for k in range(4)]
    for trial_id, rows, objective in [("inc", _rows(0.6 + effect, "inc"), 0.6), *others]:
        store.write_trial({"trial_id": trial_id, "status": "completed", "objective": objective,
                           "stage": "search", "metric": "val_uar", "mode": "max"}, [],
                          rows.drop(columns="trial_id").to_dict("records"))
    plan = racing.RacingPlan(None, str(tmp_path), "s", {"first": 2, "alpha": 0.05}, "val_uar",
                             "max")
    runtime = plan({})["runtime"]["racing"]
    assert runtime["incumbent"] == "inc" and runtime["pooled"][1] == 4 * 4
    config = {"runtime": {"metric": "val_uar", "mode": "max", "racing": runtime}}
    worse = _rows(0.6 + effect[:2] + np.array([-0.04, -0.10]), "t")
    assert not racing.keep_racing(config, _report(worse))
    alone = {"runtime": {**config["runtime"], "racing": {**runtime, "pooled": None}}}
    assert racing.keep_racing(alone, _report(worse))
