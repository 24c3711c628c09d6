"""A fenced driver (issue 23.1): every store write proves the writer still holds the sweep's lease,
so two drivers sharing one results folder can never both record.

The split brain of the issue, with real processes under two host names (SERSWEEP_HOSTNAME, as two
machines or containers sharing the folder): driver A is stopped (SIGSTOP) past its short lease,
driver B takes the sweep over (A's lease expired: another host's), A is resumed (SIGCONT). A must
record nothing more and exit 2 with one line; B records everything it runs. Then the same through
the real CLI (Ray Tune, the store callback, the searcher): a lease taken over mid-run stops it."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.store import ResultStore, SweepLock, SweepLockLostError
from orchestrator.store.lock import LOCK_DIR, current_lease
from orchestrator.store.rows import TrialBuffer, trial_rows

REPO = Path(__file__).resolve().parents[3]
# A writer: takes the lease (5 s, renewed every 0.5 s), then records one trial every 50 ms.
WRITER = """
import sys, time
from orchestrator.store import ResultStore, SweepLock, SweepLockLostError
from orchestrator.store.rows import TrialBuffer, trial_rows
root, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
lock = SweepLock(root + "/s", lease_seconds=5.0, heartbeat_seconds=0.5).acquire()
store = ResultStore(root, "s", fence=lock.fence().check)
print("HELD", flush=True)
for i in range(n):
    rows = trial_rows(trial_id=f"{tag}-{i:05d}", config={}, buffer=TrialBuffer(time.time()),
                      param_keys=[], metric="val_uar", mode="max", status="failed",
                      error="RuntimeError: x", trial_gpus=0.0)
    try:
        store.write_trial(*rows)
    except SweepLockLostError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    print("WROTE", i, flush=True)
    time.sleep(0.05)
"""


def _writer(root: Path, host: str, n: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), host, str(n)], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO), "SERSWEEP_HOSTNAME": host},
    )


def _line(proc: subprocess.Popen, timeout: float = 60.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"writer {proc.pid} printed nothing in {timeout} s"
    line = proc.stdout.readline()
    assert line, f"writer exited ({proc.wait()}): {proc.stderr.read()}"
    return line.strip()


def _recorded(root: Path, tag: str) -> set[str]:
    return {p.stem for p in (root / "s" / "trials").glob(f"{tag}-*.parquet")}


def test_a_driver_stopped_past_its_lease_records_nothing_after_another_host_took_over(
    tmp_path: Path,
) -> None:
    a = _writer(tmp_path, "host-a", 100_000)
    b = None
    try:
        assert _line(a) == "HELD"
        while not _line(a).startswith("WROTE 5"):
            pass
        os.kill(a.pid, signal.SIGSTOP)  # scontrol suspend, docker pause, an NFS stall
        time.sleep(6.0)  # past A's 5 s lease
        b = _writer(tmp_path, "host-b", 40)
        assert _line(b) == "HELD"  # A's lease expired and A is on another host: taken over
        before = _recorded(tmp_path, "host-a")
        os.kill(a.pid, signal.SIGCONT)
        assert a.wait(timeout=60) == 2
        a_err = a.stderr.read().strip().splitlines()
        assert len(a_err) == 1 and "lost the sweep's driver lock" in a_err[0], a_err
        assert "host-b" in a_err[0] or "expired" in a_err[0]
        # no A trial appeared after B took over (one A was writing when stopped is taken back)
        assert b.wait(timeout=120) == 0, b.stderr.read()
        assert _recorded(tmp_path, "host-a") <= before
        assert len(_recorded(tmp_path, "host-b")) == 40
        assert current_lease(tmp_path / "s").host == "host-b"
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.wait()


def _row(trial_id: str) -> tuple:
    return trial_rows(trial_id=trial_id, config={}, buffer=TrialBuffer(time.time()),
                      param_keys=[], metric="val_uar", mode="max", status="failed",
                      error="RuntimeError: x", trial_gpus=0.0)


def _plant_other_host(sweep: Path, gen: int) -> None:
    """The lease a driver on another host writes when it takes the sweep over."""
    now = datetime.now(UTC)
    body = {"token": uuid.uuid4().hex, "host": "elsewhere", "boot_id": "b", "pid_ns": 1,
            "pid": 4242, "start_ticks": 1, "process_started_at": now.isoformat(),
            "started_at": now.isoformat(), "heartbeat_at": now.isoformat(),
            "expires_at": (now + timedelta(seconds=120)).isoformat(), "lease_seconds": 120.0,
            "command": "python sweep.py x.yaml", "released_at": None}
    (sweep / LOCK_DIR / f"lease-{gen:06d}.json").write_text(json.dumps(body))


def test_the_fence_refuses_a_write_once_the_lease_is_taken_over_or_expired(
    tmp_path: Path,
) -> None:
    lock = SweepLock(tmp_path / "s", lease_seconds=60.0, heartbeat_seconds=30.0).acquire()
    store = ResultStore(str(tmp_path), "s", fence=lock.fence().check)
    store.write_trial(*_row("mine"))
    _plant_other_host(tmp_path / "s", lock.lease.gen + 1)
    with pytest.raises(SweepLockLostError, match="taken over by host elsewhere"):
        store.write_trial(*_row("late"))
    assert store.completed_trial_ids() == {"mine"}
    assert not list((tmp_path / "s").glob("*/late.parquet"))  # none of its three files
    lock.release()

    short = SweepLock(tmp_path / "t", lease_seconds=0.6, heartbeat_seconds=0.5).acquire()
    short._stop.set()  # the heartbeat stalls (as in a stopped process): the lease runs out
    time.sleep(1.0)
    with pytest.raises(SweepLockLostError, match="expired"):
        ResultStore(str(tmp_path), "t", fence=short.fence().check).write_trial(*_row("x"))
    assert not short.valid()
    short.release()


@pytest.mark.slow  # a tiny sweep through the CLI: ~40 s on 2 shared cores
def test_a_run_whose_lease_is_taken_over_stops_at_once_and_exits_2(
    ray_local, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from orchestrator import cli

    tiny = REPO / "tests" / "orchestrator" / "tiny_sweep.yaml"
    sweep = tmp_path / "tiny"
    planted: dict[str, set[str]] = {}

    def take_over() -> None:  # another host's driver takes the sweep once a trial is recorded
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = {p.stem for p in (sweep / "trials").glob("*.parquet")}
            lease = current_lease(sweep)
            if done and lease is not None:
                _plant_other_host(sweep, lease.gen + 1)
                planted["trials"] = {p.stem for p in (sweep / "trials").glob("*.parquet")}
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=take_over, daemon=True)
    watcher.start()
    code = cli.main([str(tiny), "--results", str(tmp_path), "--trials", "8",
                     "--set", "search.max_concurrent=1", "--set", f"data.cache_dir={tmp_path}/c"])
    watcher.join(timeout=5)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_BAD_INPUT, err
    assert "trials" in planted, "no trial was recorded before the run ended"
    assert any("lost the sweep's driver lock" in line and "elsewhere" in line for line in err)
    recorded = {p.stem for p in (sweep / "trials").glob("*.parquet")}
    assert recorded <= planted["trials"]  # nothing recorded after the take-over
    assert len(recorded) < 8  # it stopped instead of running the sweep out
