"""One lifecycle for a real `python sweep.py ...` driver process, shared by the reliability tests.

A driver runs in its own session (start_new_session=True). The private Ray it starts runs in
sessions of their own (orchestrator/cluster.py: a SIGTERM to the driver's group reaches the driver
first): each daemon (gcs_server, raylet, dashboard) leads a session and names the Ray session
`session_<date>_<driver pid>` on its command line; the workers a raylet forks stay in the raylet's
session. `Driver` watches for those sessions while the driver runs, so `leftovers` sees an orphaned
worker even after its raylet is gone; `Driver.reap` kills the driver's process group and waits for
all of them to be gone, so a test can ASSERT that no Ray process outlived the driver;
`Driver.cleanup` (in a finally) kills whatever is left, by pid, so nothing leaks even when an
assertion failed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = Path(__file__).parent / "tiny.yaml"
RAY_CLUSTER_FILE = Path("/tmp/ray/ray_current_cluster")


def skip_if_a_cluster_would_be_joined() -> None:
    """sweep.py joins a cluster `ray start` left on this machine: not what these tests measure."""
    if RAY_CLUSTER_FILE.is_file() or os.environ.get("RAY_ADDRESS"):
        pytest.skip(f"{RAY_CLUSTER_FILE} or RAY_ADDRESS present: sweep.py would join that cluster")


def _stat(pid: str) -> tuple[int, int, str, int] | None:
    """(process group, session, state, parent pid) of a pid from /proc/<pid>/stat, or None if
    gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
    return int(fields[2]), int(fields[3]), fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie has ended; only its parent's wait is missing)."""
    stat = _stat(str(pid))
    return stat is not None and stat[2] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is `sid`."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(entry)
            if stat is not None and stat[1] == sid and stat[2] != "Z":
                out.append(int(entry))
    return sorted(out)


def ray_session_ids(driver_pid: int) -> set[int]:
    """Session ids of the live daemons of the private Ray that `driver_pid` started: their
    command lines name the Ray session `session_<date>_<driver pid>`."""
    named = re.compile(rf"session_[0-9_-]+_{driver_pid}\b")
    sids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and named.search(cmdline(int(entry))):
            stat = _stat(entry)
            if stat is not None and stat[2] != "Z":
                sids.add(stat[1])
    return sids


def tree_pids(root: int) -> list[int]:
    """`root` and its live descendants, by parent pid: the private Ray's processes start in
    sessions of their own (orchestrator/cluster.py), so a session id no longer finds them."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        stat = _stat(entry) if entry.isdigit() else None
        if stat is not None and stat[2] != "Z":
            parents[int(entry)] = stat[3]
    found, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for child, of in parents.items():
            if of == parent and child not in found:
                found.add(child)
                frontier.append(child)
    return sorted(found)


def describe(pids: list[int]) -> list[str]:
    return [f"{pid}: {cmdline(pid)[:120]}" for pid in pids]


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05):
    """The first truthy value of `predicate()` within `timeout` seconds, else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def driver_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


class Driver:
    """`python sweep.py *args` started in its own session, output to `log`."""

    def __init__(self, args: list[str], log: Path, **env: str) -> None:
        self.args = [str(a) for a in args]
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 -- closed in cleanup()
        self.proc = subprocess.Popen(
            [sys.executable, "sweep.py", *self.args],
            cwd=REPO,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=driver_env(**env),
            start_new_session=True,
        )
        self.sid = self.proc.pid  # session leader: session id == process group id == pid
        self.ray_sids: set[int] = set()  # the sessions of its private Ray, seen while it ran
        threading.Thread(target=self._watch_ray, daemon=True).start()

    def _watch_ray(self) -> None:
        while self.proc.poll() is None:
            self.ray_sids |= ray_session_ids(self.proc.pid)
            time.sleep(0.5)

    def _pids(self) -> list[int]:
        """Live processes of the driver's session and of its private Ray's sessions."""
        sids = {self.sid} | self.ray_sids | ray_session_ids(self.proc.pid)
        return sorted({pid for sid in sids for pid in session_pids(sid)})

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"sweep.py {' '.join(self.args)} still running after {timeout} s:\n"
                + self.output()[-3000:]
            ) from None

    def kill_driver(self) -> None:
        """SIGKILL the driver process only (what a crash / OOM killer / power loss does)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def leftovers(self, timeout: float) -> list[int]:
        """Processes of this driver's session and of its private Ray's sessions still alive
        after up to `timeout` seconds."""
        wait_for(lambda: not self._pids(), timeout, interval=0.2)
        return self._pids()

    def reap(self, timeout: float = 90.0) -> list[int]:
        """Kill the driver's process group (what a crash of the driver's shell job does; its
        private Ray, in sessions of its own, must die with the driver) and return the processes
        of the driver's and its Ray's sessions still alive after `timeout` s (the test asserts:
        none). The GCS and raylet die with the driver at once (Ray ties them to it); the raylet's
        dashboard and runtime-env agents notice their raylet is gone and exit after trying to
        flush their logs to the dead GCS: about 60 s, measured."""
        try:
            os.killpg(self.sid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.leftovers(timeout)

    def cleanup(self) -> None:
        """Whatever the test's outcome: nothing of this driver's session stays alive."""
        try:
            os.killpg(self.sid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in self._pids():  # workers in their own process groups, Ray in its sessions
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=30)
        self._out.close()


def tiny_args(results: Path, cache: Path, *extra: str, space: Path = TINY) -> list[str]:
    return [str(space), "--results", str(results), "--set", f"data.cache_dir={cache}", *extra]


def table_files(sweep_dir: Path, table: str) -> list[Path]:
    """Complete per-trial / compact files of one table (what readers see)."""
    folder = sweep_dir / table
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))


def temp_files(sweep_dir: Path) -> list[Path]:
    return sorted(p for t in ("trials", "epochs", "members") for p in (sweep_dir / t).glob(".*"))


def assert_store_consistent(sweep_dir: Path, trials: int):
    """The invariants of the issue: `trials` trial rows, each trial once, no duplicated epoch /
    member rows, no rows of a trial without a trials row, each completed trial's epochs 1..E
    exactly once per member, no leftover temporary file. Returns query.load(sweep_dir)."""
    from orchestrator import query

    results = query.load(str(sweep_dir))
    t, e, m = results.trials, results.epochs, results.members
    assert len(t) == trials, t[["trial_id", "status"]]
    assert t["trial_id"].is_unique, t["trial_id"].tolist()
    assert {p.stem for p in table_files(sweep_dir, "trials")} == set(t["trial_id"])
    params = t["optuna_params_json"].dropna()
    assert params.is_unique, f"a configuration ran twice: {params[params.duplicated()].tolist()}"
    assert not e.duplicated(["trial_id", "member", "epoch"]).any(), "epoch rows duplicated"
    assert not m.duplicated(["trial_id", "member"]).any(), "member rows duplicated"
    assert set(e["trial_id"]) <= set(t["trial_id"]), "epoch rows of an unrecorded trial"
    assert set(m["trial_id"]) <= set(t["trial_id"]), "member rows of an unrecorded trial"
    for row in t[t["status"] == "completed"].itertuples():
        mine = e[e["trial_id"] == row.trial_id]
        assert len(mine), f"completed trial {row.trial_id} has no epoch rows"
        for member, rows in mine.groupby("member"):
            assert sorted(rows["epoch"]) == list(range(1, row.epochs_run + 1)), (
                row.trial_id, member, sorted(rows["epoch"]))
        assert len(m[m["trial_id"] == row.trial_id]) == row.members
    assert temp_files(sweep_dir) == []
    return results
