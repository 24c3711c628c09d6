"""One driver per sweep (orchestrator/store/lock.py), with real driver processes.

Each "driver" is a real `python -c` process that takes the lease of a sweep folder and sleeps, as
sweep.py will; the tests then start a second one, SIGKILL the first, plant leases "from another
host" (the JSON a driver there would write, with a foreign hostname), and race several processes
for one stale lease.
"""

from __future__ import annotations

import json
import logging
import os
import re
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

from orchestrator.store.lock import (
    LOCK_DIR,
    SweepLock,
    SweepLockedError,
    SweepLockLostError,
    SweepLockWriteError,
    current_lease,
    process_start_ticks,
)

REPO = Path(__file__).resolve().parents[3]
# A driver: takes the lease at wall-clock `start_at` (racers start together), reports, holds it.
DRIVER = """
import sys, time
from orchestrator.store.lock import SweepLock, SweepLockedError
sweep, hold, start_at = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
lock = SweepLock(sweep)
time.sleep(max(0.0, start_at - time.time() - 0.02))
while time.time() < start_at:
    pass
began = time.perf_counter()
try:
    lock.acquire()
except SweepLockedError as exc:
    print(f"REFUSED {time.perf_counter() - began:.3f} {exc}", flush=True)
    sys.exit(2)
print(f"HELD {lock.lease.gen}", flush=True)
time.sleep(hold)
"""  # leaving normally: the atexit hook releases the lease


def _driver(sweep: Path, hold: float, start_at: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(sweep), str(hold), str(start_at)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _first_line(proc: subprocess.Popen, timeout: float = 30.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"driver {proc.pid} printed nothing in {timeout} s"
    line = proc.stdout.readline()
    assert line, f"driver {proc.pid} exited ({proc.wait()}): {proc.stderr.read()}"
    return line.strip()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()


def _machine() -> dict:
    """host / boot_id / pid_ns of this machine, as a lease written here records them."""
    return {
        "host": os.uname().nodename,
        "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
        "pid_ns": os.stat("/proc/self/ns/pid").st_ino,
    }


def _plant(sweep: Path, gen: int, *, expires_in: float, **fields) -> Path:
    """Write lease-<gen>.json as a driver would have (fields override this machine's)."""
    now = datetime.now(UTC)
    body = {
        "token": uuid.uuid4().hex, **_machine(), "pid": 4242, "start_ticks": 1,
        "process_started_at": (now - timedelta(hours=1)).isoformat(),
        "started_at": (now - timedelta(hours=1)).isoformat(),
        "heartbeat_at": (now + timedelta(seconds=expires_in - 120)).isoformat(),
        "expires_at": (now + timedelta(seconds=expires_in)).isoformat(),
        "lease_seconds": 120.0, "command": "python sweep.py search_spaces/transformer.yaml",
        "released_at": None, **fields,
    }  # fmt: skip
    path = sweep / LOCK_DIR / f"lease-{gen:06d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))
    return path


def _dead_pid() -> int:
    """A pid no process can have: above the kernel's pid_max."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def _leases(sweep: Path) -> list[str]:
    return sorted(p.name for p in (sweep / LOCK_DIR).glob("lease-*.json"))


def test_a_second_driver_is_refused_within_a_second_naming_the_holder(tmp_path: Path) -> None:
    sweep = tmp_path / "results" / "transformer"
    holder = _driver(sweep, hold=120)
    try:
        assert _first_line(holder) == "HELD 1"
        lease = json.loads((sweep / LOCK_DIR / "lease-000001.json").read_text())
        assert lease["pid"] == holder.pid and lease["host"] == os.uname().nodename
        assert lease["start_ticks"] == process_start_ticks(holder.pid)  # not a recycled pid
        assert "-c" in lease["command"] and lease["released_at"] is None

        started = time.monotonic()
        second = _driver(sweep, hold=0)
        out, err = second.communicate(timeout=60)
        wall = time.monotonic() - started
        assert second.returncode == 2, (out, err)
        word, seconds, message = out.strip().split(" ", 2)
        assert word == "REFUSED" and float(seconds) < 1.0, out
        assert f"pid {holder.pid} " in message and f"host {os.uname().nodename}" in message
        assert f"started {lease['process_started_at']}" in message and "command `" in message
        assert "--break-lock" in message and str(sweep / LOCK_DIR) in message
        assert "\n" not in message  # one line: sweep.py prints it as `error: ...`
        assert wall < 10, f"the refused driver took {wall:.1f} s including start-up"
        assert holder.poll() is None and _leases(sweep) == ["lease-000001.json"]
    finally:
        _stop(holder)


def test_the_lease_of_a_sigkilled_driver_is_stale_and_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sweep = tmp_path / "sweep"
    holder = _driver(sweep, hold=120)
    try:
        assert _first_line(holder) == "HELD 1"
        os.kill(holder.pid, signal.SIGKILL)  # no atexit, no release: the lease stays behind
        holder.wait(timeout=30)
    finally:
        _stop(holder)
    assert json.loads((sweep / LOCK_DIR / "lease-000001.json").read_text())["released_at"] is None
    caplog.set_level(logging.WARNING, logger="orchestrator.store.lock")
    with SweepLock(sweep) as lock:
        assert lock.took_over is not None and lock.took_over.pid == holder.pid
        assert lock.lease.gen == 2 and lock.lease.pid == os.getpid()
        assert _leases(sweep) == ["lease-000002.json"]  # the stale one is cleaned up
    notes = [r.getMessage() for r in caplog.records]
    assert any(f"pid {holder.pid} is gone" in n and "took over" in n for n in notes), notes


def test_a_recycled_pid_is_not_mistaken_for_the_holder(tmp_path: Path) -> None:
    # This very process is alive, but it started at another time than the lease says.
    ticks = process_start_ticks(os.getpid())
    _plant(tmp_path, 1, expires_in=100, pid=os.getpid(), start_ticks=ticks - 1)
    with SweepLock(tmp_path) as lock:
        assert lock.took_over is not None and lock.lease.gen == 2
    # ... while the same pid with its real start time is a live holder
    _plant(tmp_path, 3, expires_in=100, pid=os.getpid(), start_ticks=ticks)
    with pytest.raises(SweepLockedError, match=f"pid {os.getpid()} is alive"):
        SweepLock(tmp_path).acquire()


def test_an_expired_lease_of_another_host_is_taken_over(tmp_path: Path) -> None:
    _plant(tmp_path, 7, expires_in=-600, host="gpu-node-7.example", boot_id="other-boot",
           pid=os.getpid())  # fmt: skip  # a live pid HERE means nothing for another host
    with SweepLock(tmp_path) as lock:
        assert lock.took_over.host == "gpu-node-7.example" and lock.lease.gen == 8


def test_a_fresh_lease_of_another_host_is_refused(tmp_path: Path) -> None:
    path = _plant(tmp_path, 3, expires_in=100, host="gpu-node-7.example", boot_id="other-boot",
                  pid=_dead_pid())  # fmt: skip  # a pid gone HERE means nothing either
    began = time.perf_counter()
    with pytest.raises(SweepLockedError) as refused:
        SweepLock(tmp_path).acquire()
    assert time.perf_counter() - began < 1.0
    message = str(refused.value)
    assert "host gpu-node-7.example" in message and f"pid {_dead_pid()}" in message
    assert re.search(r"expires in (9\d|100) s", message), message
    assert str(path) in message and "--break-lock" in message
    assert refused.value.holder.host == "gpu-node-7.example" and _leases(tmp_path) == [path.name]


def test_break_lock_takes_a_live_lease_and_its_holder_finds_out(tmp_path: Path) -> None:
    lost: list[str] = []
    first = SweepLock(tmp_path, lease_seconds=2.0, heartbeat_seconds=0.1, on_lost=lost.append)
    first.acquire()
    try:
        expires = first.lease.expires_at
        deadline = time.monotonic() + 5
        while current_lease(tmp_path).expires_at == expires and time.monotonic() < deadline:
            time.sleep(0.05)
        assert current_lease(tmp_path).expires_at > expires, "the heartbeat did not renew"

        with pytest.raises(SweepLockedError):
            SweepLock(tmp_path).acquire()
        second = SweepLock(tmp_path, break_lock=True).acquire()
        deadline = time.monotonic() + 5
        while not first.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lost and f"taken over by host {os.uname().nodename}, pid {os.getpid()}" in lost[0]
        with pytest.raises(SweepLockLostError, match="lost"):
            first.check()
        first.release()  # no longer ours: must leave the new holder's lease alone
        assert current_lease(tmp_path).token == second.lease.token
        assert current_lease(tmp_path).released_at is None
        second.release()
        assert current_lease(tmp_path).released_at is not None
    finally:
        first.release()


def test_a_driver_leaving_normally_releases_its_lease(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = _driver(tmp_path, hold=0)  # exits right after taking it: the atexit hook releases
    try:
        assert _first_line(holder) == "HELD 1" and holder.wait(timeout=30) == 0
    finally:
        _stop(holder)
    assert current_lease(tmp_path).released_at is not None
    caplog.set_level(logging.WARNING, logger="orchestrator.store.lock")
    with SweepLock(tmp_path) as lock:
        assert lock.took_over is None and lock.held  # a released lease is simply free
    assert not caplog.records


def test_forget_leaves_no_trace_of_a_run_that_wrote_nothing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    lock = SweepLock(results / "sweep").acquire()
    assert (results / "sweep" / LOCK_DIR).is_dir()
    lock.release(forget=True)
    assert not results.exists()


def test_an_unreadable_lease_is_refused_while_recent_and_replaced_when_old(
    tmp_path: Path,
) -> None:
    path = tmp_path / LOCK_DIR / "lease-000004.json"
    path.parent.mkdir()
    path.write_text('{"token": "half-writ')
    with pytest.raises(SweepLockedError, match="does not parse") as refused:
        SweepLock(tmp_path).acquire()
    assert str(path) in str(refused.value)
    old = time.time() - 3600
    os.utime(path, (old, old))
    with SweepLock(tmp_path) as lock:
        assert lock.lease.gen == 5


def test_object_store_results_are_not_locked_and_say_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.WARNING, logger="orchestrator.store.lock")
    with SweepLock("s3://bucket/results/transformer") as lock:
        assert not lock.enforced and lock.lease is None
    assert any("not enforced for s3://bucket/results/transformer" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    with SweepLock(f"file://{tmp_path}/local") as lock:  # file:// is a local folder
        assert lock.enforced and (tmp_path / "local" / LOCK_DIR / "lease-000001.json").exists()


def _take(lock: SweepLock, barrier: threading.Barrier, outcomes: list[str]) -> None:
    barrier.wait()  # every thread calls acquire at the same moment
    try:
        lock.acquire()
        outcomes.append("won")
    except SweepLockedError:
        outcomes.append("refused")


@pytest.mark.parametrize("previous", ["stale", "released"])
def test_threads_racing_for_a_free_lease_one_wins(tmp_path: Path, previous: str) -> None:
    for round_ in range(10):
        sweep = tmp_path / f"round{round_}"
        _plant(sweep, 1, expires_in=-1, pid=_dead_pid(),
               released_at=datetime.now(UTC).isoformat() if previous == "released" else None)
        locks = [SweepLock(sweep) for _ in range(6)]
        barrier = threading.Barrier(len(locks))
        outcomes: list[str] = []
        threads = [threading.Thread(target=_take, args=(lock, barrier, outcomes))
                   for lock in locks]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(outcomes) == ["refused"] * 5 + ["won"], outcomes
        assert _leases(sweep) == ["lease-000002.json"]
        for lock in locks:
            lock.release()


@pytest.mark.slow
def test_driver_processes_racing_for_a_stale_lease_exactly_one_wins(tmp_path: Path) -> None:
    for round_ in range(5):
        sweep = tmp_path / f"round{round_}"
        _plant(sweep, 1, expires_in=-1, pid=_dead_pid())
        start_at = time.time() + 1.5  # every racer is up and waiting by then
        racers = [_driver(sweep, hold=1.5, start_at=start_at) for _ in range(3)]
        try:
            lines = {proc.pid: _first_line(proc) for proc in racers}
        finally:
            for proc in racers:
                _stop(proc)
        winners = [pid for pid, line in lines.items() if line.startswith("HELD")]
        assert len(winners) == 1, lines
        for pid, line in lines.items():
            if pid != winners[0]:
                assert line.startswith("REFUSED") and f"pid {winners[0]} " in line, line
        assert lines[winners[0]] == "HELD 2"


def test_a_lease_that_cannot_be_written_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "results").write_text("a file where the results folder should be")
    with pytest.raises(SweepLockWriteError) as failed:
        SweepLock(tmp_path / "results" / "sweep").acquire()
    assert str(tmp_path / "results" / "sweep" / LOCK_DIR) in str(failed.value)
    assert "Not a directory" in str(failed.value)


def test_the_heartbeat_must_beat_within_the_lease() -> None:
    with pytest.raises(ValueError, match="heartbeat_seconds"):
        SweepLock("anywhere", lease_seconds=10, heartbeat_seconds=10)


def test_refuse_if_held_checks_without_writing(tmp_path: Path) -> None:
    free = tmp_path / "free"
    SweepLock(free).refuse_if_held()  # nothing there: no error, nothing created
    assert not free.exists()
    sweep = tmp_path / "held"
    holder = _driver(sweep, hold=60)
    try:
        assert _first_line(holder).startswith("HELD")
        before = _leases(sweep)
        with pytest.raises(SweepLockedError, match=f"pid {holder.pid}"):
            SweepLock(sweep).refuse_if_held()
        SweepLock(sweep, break_lock=True).refuse_if_held()  # the user overrides
        assert _leases(sweep) == before
    finally:
        _stop(holder)
