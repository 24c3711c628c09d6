"""One driver per sweep with REAL `python sweep.py` drivers (orchestrator/store/lock.py, taken in
runner.run): a second driver on a running sweep is refused at once naming the holder's pid; after
the holder is SIGKILLed the same command takes the stale lease over and completes the sweep with
exactly its trial count, no duplicated rows. Read-only subcommands never take the lock."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.store import BREAK_LOCK_FLAG, SweepLock, current_lease
from orchestrator.store.lock import LOCK_DIR
from tests.reliability.drivers import (
    Driver,
    assert_store_consistent,
    describe,
    skip_if_a_cluster_would_be_joined,
    table_files,
    tiny_args,
    wait_for,
)

TRIALS = 3
SWEEP = "tiny_rel"
# long enough that the first driver is still training when the second one starts (~0.2 s an
# epoch; no member stops early: collapse detection off)
EPOCHS = 60
# python start-up + spec + pyarrow import, then one listing and one JSON read: ~1-2 s on an idle
# core; a driver that got past the lock would prepare data and start Ray (20 s or more)
REFUSED_WITHIN_S = 8.0


@pytest.mark.slow
def test_a_second_driver_is_refused_and_a_killed_drivers_lock_is_taken_over(
    tmp_path: Path, data_cache: Path
) -> None:
    skip_if_a_cluster_would_be_joined()
    results = tmp_path / "results"
    sweep_dir = results / SWEEP
    args = tiny_args(results, data_cache, "--trials", str(TRIALS), "--epochs", str(EPOCHS),
                      "--set", "train.collapse_patience=1000")
    first = Driver(args, tmp_path / "first.log")
    second = third = None
    try:
        # the first trial is training (its first epoch reported): the sweep is well under way
        def training() -> bool:
            return "epoch  " in first.output()

        assert wait_for(lambda: training() or not first.running(), 240, 0.1)
        assert first.running(), first.output()[-3000:]
        lease = current_lease(sweep_dir)
        assert lease is not None and lease.pid == first.proc.pid

        began = time.monotonic()
        second = Driver(args, tmp_path / "second.log")
        rc = second.wait(timeout=60)
        refused_s = time.monotonic() - began
        out = second.output()
        print(f"second driver refused in {refused_s:.2f} s (rc {rc})")
        assert rc == 2, out[-3000:]
        assert f"pid {first.proc.pid}" in out and BREAK_LOCK_FLAG in out, out[-3000:]
        assert "in use by another sweep driver" in out, out[-3000:]
        assert refused_s < REFUSED_WITHIN_S, f"refused only after {refused_s:.2f} s"
        assert "data: " not in out and second.leftovers(5) == [], "it went past the lock"
        assert first.running(), "the holder must be untouched by the refused driver"

        recorded_before = {p.stem for p in table_files(sweep_dir, "trials")}
        first.kill_driver()  # SIGKILL: its lease stays behind, stale (pid gone)
        assert first.reap() == [], "the killed driver's Ray outlived it"
        assert current_lease(sweep_dir).pid == first.proc.pid  # the stale lease is still there

        third = Driver(args, tmp_path / "third.log")  # the same command resumes
        rc = third.wait(timeout=300)
        out = third.output()
        assert rc == 0, out[-3000:]
        assert re.search(rf"took over the driver lock .*pid {first.proc.pid}\b.*is gone", out), (
            out[-3000:])
        done = len(recorded_before)
        if done:
            assert f"{done} trials recorded, {TRIALS - done} to go" in out, out[-3000:]
        leftover = third.leftovers(30)
        assert leftover == [], f"left running after a normal exit: {describe(leftover)}"
        results_frame = assert_store_consistent(sweep_dir, TRIALS)  # exact count, no duplicates
        assert recorded_before <= set(results_frame.trials["trial_id"])
        # released at the end: the next driver finds the lease free
        final = current_lease(sweep_dir)
        assert final is not None and final.pid == third.proc.pid and final.released_at
    finally:
        for driver in (first, second, third):
            if driver is not None:
                driver.cleanup()


def test_read_only_subcommands_never_take_the_lock(tmp_path: Path, capsys) -> None:
    sweep_dir = tmp_path / "results" / SWEEP
    with SweepLock(sweep_dir) as held:  # a live holder: this process
        cli.main(["results", str(sweep_dir)])
        assert current_lease(sweep_dir).token == held.lease.token
        assert [p.name for p in (sweep_dir / LOCK_DIR).iterdir()] == [Path(held.lease.path).name]
    assert "in use by another sweep driver" not in capsys.readouterr().err


def test_the_run_command_accepts_the_flag_the_refusal_names() -> None:
    args = cli.build_parser("run").parse_args(["tests/reliability/tiny.yaml", BREAK_LOCK_FLAG])
    assert args.break_lock is True
    assert cli.build_parser("run").parse_args(["tests/reliability/tiny.yaml"]).break_lock is False
