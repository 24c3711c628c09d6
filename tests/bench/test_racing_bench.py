"""bench/racing.py --replay on a recorded sweep (a real store, Parquet): the former rule races
out, after 2 test sets, a trial whose first 2 differences are nearly equal though it is the
best over all 5; the pooled rule, with the sweep's spread, keeps it."""

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
    for k, (trial_id, values) in enumerate(trials.items()):
        store.write_trial(
            {"trial_id": trial_id, "status": "completed", "stage": "search",
             "objective": sum(values) / 5, "member_epochs": 10, "metric": "val_uar",
             "started_at": pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(minutes=k)},
            [], [{"member": i, "fold": f, "seed": 0, "val_uar": v}
                 for i, (f, v) in enumerate(zip(FOLDS, values))])
    replay(str(tmp_path / "s"))
    pooled, former = capsys.readouterr().out.splitlines()
    assert pooled == "pooled, alpha/looks: member-epochs 30 of 30 (1.00x); raced out: none"
    assert former.startswith("former: own spread: member-epochs 24 of 30 (0.80x); raced out: "
                             "lucky after 2 (0.641 vs 0.600)"), former
