"""Ctrl-C (SIGINT) and a scheduler's SIGTERM during a real `python sweep.py` run: the in-flight
trial stops, the process exits 130 / 143 with one line naming the same command, no Tune
`Tuner.restore` advice; nothing recorded before changes; running the same command again completes
the sweep with no duplicate rows, and the Optuna journal matches the store (no duplicates)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import optuna
import pytest

from orchestrator.store import schema
from orchestrator.store.journal import JOURNAL_FILE, open_journal
from tests.reliability.drivers import (
    Driver,
    assert_store_consistent,
    describe,
    skip_if_a_cluster_would_be_joined,
    table_files,
    tiny_args,
    wait_for,
)

pytestmark = pytest.mark.slow
TRIALS = 3
EPOCHS = 3  # tiny.yaml
SWEEP = "tiny_rel"


def _recorded_bytes(sweep_dir: Path) -> dict[str, bytes]:
    return {f"{t}/{p.name}": p.read_bytes() for t in ("trials", "epochs", "members")
            for p in table_files(sweep_dir, t)}


def assert_journal_matches_store(sweep_dir: Path, results) -> None:
    """The journal holds each stored trial once, with the store's objective when scored."""
    study = optuna.load_study(study_name=SWEEP, storage=open_journal(sweep_dir / JOURNAL_FILE))
    assert len(study.trials) == len(results.trials), [t.state for t in study.trials]
    complete = sorted(t.value for t in study.trials
                      if t.state == optuna.trial.TrialState.COMPLETE)
    scored = results.trials["status"].isin(schema.SCORED_STATUSES)  # Optuna COMPLETE
    stored = sorted(results.trials.loc[scored, "objective"])
    assert complete == pytest.approx(stored)
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == len(params), "a trial twice in the journal"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_cleanly_and_the_same_command_completes_the_sweep(
    signum: int, tmp_path: Path, data_cache: Path
) -> None:
    skip_if_a_cluster_would_be_joined()
    results = tmp_path / "results"
    sweep_dir = results / SWEEP
    args = tiny_args(results, data_cache, "--trials", str(TRIALS))
    first = Driver(args, tmp_path / "first.log")
    again = None
    try:
        # mid-sweep: one trial recorded, the next one's first epoch reported (in flight)
        def mid_trial() -> bool:
            out = first.output()
            return bool(table_files(sweep_dir, "trials")) and out.count("epoch  ") > EPOCHS

        assert wait_for(lambda: mid_trial() or not first.running(), 240, 0.1)
        assert first.running(), first.output()[-3000:]
        before = _recorded_bytes(sweep_dir)
        os.kill(first.proc.pid, signum)
        rc = first.wait(timeout=120)
        out = first.output()
        assert rc == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], out[-3000:]
        assert "Tuner.restore" not in out and "Traceback" not in out, out[-3000:]
        lines = [line for line in out.splitlines() if "the same command continues" in line]
        assert len(lines) == 1, out[-3000:]
        name = signal.Signals(signum).name
        assert lines[0].startswith(f"interrupted ({name}): 1 of {TRIALS} trials recorded"), lines
        assert lines[0].endswith("python sweep.py " + " ".join(args)), lines[0]
        leftover = first.leftovers(30)
        assert leftover == [], f"left running after the interrupt: {describe(leftover)}"
        assert _recorded_bytes(sweep_dir) == before, "a recorded trial changed"
        assert len(table_files(sweep_dir, "trials")) == 1  # the in-flight trial left no row

        again = Driver(args, tmp_path / "again.log")  # the same command
        rc = again.wait(timeout=300)
        out = again.output()
        assert rc == 0, out[-3000:]
        assert f"1 trials recorded, {TRIALS - 1} to go" in out
        res = assert_store_consistent(sweep_dir, TRIALS)
        assert_journal_matches_store(sweep_dir, res)
    finally:
        first.cleanup()
        if again is not None:
            again.cleanup()
