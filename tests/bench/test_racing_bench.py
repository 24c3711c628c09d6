"""bench/racing.py --replay on a recorded sweep (a real store, Parquet): the former rule races
out, after 2 test sets, a trial whose first 2 differences are nearly equal though it is the
best over all 5; the pooled rule, with the sweep's spread, keeps it; the oracle bound races out
what is not a new best; a pruned trial counts the first test sets only (racing runs ASHA on the
first stage)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bench.racing import replay
from orchestrator.store import ResultStore

FOLDS = [f"Ses0{i}" for i in range(1, 6)]


def test_replay_shows_what_each_rule_would_have_raced_out(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = ResultStore(str(tmp_path), "s")
    store.claim_identity()
    store.write_identity()
    incumbent = [0.60, 0.50, 0.70, 0.55, 0.65]
    trials = {"inc": incumbent,
              "uneven": [v + d for v, d in zip(incumbent, [-0.2, 0.05, -0.15, 0.1, -0.3])],
              "lucky": [v + d for v, d in zip(incumbent, [-0.031, -0.033, 0.05, 0.1, 0.12])]}
    trials["cut"] = [0.3] * 5  # pruned by ASHA after 1 epoch
    for k, (trial_id, values) in enumerate(trials.items()):
        pruned = trial_id == "cut"
        store.write_trial(
            {"trial_id": trial_id, "status": "pruned" if pruned else "completed",
             "stage": "search", "objective": sum(values) / 5,
             "member_epochs": 5 if pruned else 10, "metric": "val_uar",
             "started_at": pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(minutes=k)},
            [], [{"member": i, "fold": f, "seed": 0, "val_uar": v}
                 for i, (f, v) in enumerate(zip(FOLDS, values))])
    spent = replay(str(tmp_path / "s"), alphas=(0.05, 0.5))
    pooled, loose, former, oracle = capsys.readouterr().out.splitlines()
    assert pooled == ("pooled, alpha 0.05 over the looks: member-epochs 32 of 35 (0.91x); "
                      "raced out: none")
    assert loose.startswith("pooled, alpha 0.5 over the looks: member-epochs 28 of 35 (0.80x); "
                            "raced out: uneven after 3 (0.500 vs 0.600)"), loose
    assert former.startswith("former: own spread, alpha 0.05 every look: member-epochs 26 of 35 "
                             "(0.74x); raced out: lucky after 2 (0.641 vs 0.600)"), former
    assert oracle == ("oracle: only new bests train every test set: member-epochs 26 of 35 "
                      "(0.74x); raced out: uneven after 2 (0.500 vs 0.600)")
    assert spent["recorded"] == 35
