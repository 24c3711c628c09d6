"""A real two-node Ray cluster on this machine (fake GPUs), joined by `sweep.py --address` and by
`ray job submit`: trials run on both nodes, on the GPU ids Ray assigned, and the store is complete.

No `ray stop` anywhere (it would stop every Ray on the machine): each node runs `ray start
--block` in its own session, which the teardown kills and then checks empty.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = Path(__file__).with_name("tiny_sweep.yaml")
RAY = str(Path(sys.executable).with_name("ray"))
# Ray 2.60 clusters require a token (~/.ray/auth_token, made by the first head); every client of
# the test cluster (ray status, the sweep's driver, ray job submit) must present it.
ENV = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_DISABLE_USAGE_STATS": "1"}
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except OSError:  # gone meanwhile
                pass
    return pids


def _kill_session(sid: int) -> list[int]:
    """SIGKILL every process of session `sid`; the pids still alive after 30 s."""
    for pid in _session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 30
    while _session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _session_pids(sid)


class Cluster:
    """A Ray head (with the job server on 127.0.0.1) and one worker node, 2 fake GPUs each."""

    def __init__(self, temp_dir: str) -> None:
        self.temp_dir = temp_dir
        self.port, self.dashboard_port = _free_port(), _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []

    def _start(self, *args: str) -> None:
        log = open(Path(self.temp_dir) / f"node{len(self.nodes)}.log", "w")  # noqa: SIM115
        self.nodes.append(
            subprocess.Popen(
                [RAY, "start", "--block", "--num-cpus=1", "--num-gpus=2", *args],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=ENV,
            )
        )  # fmt: skip

    def start(self) -> None:
        self._start(
            "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.temp_dir}", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}", "--include-dashboard=true",
        )  # fmt: skip
        self._wait_for_nodes(1)
        self._start(f"--address={self.address}", "--node-ip-address=127.0.0.1")
        self._wait_for_nodes(2)

    def _wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = subprocess.run(
                [RAY, "status", f"--address={self.address}"], capture_output=True, text=True,
                env=ENV,
            )
            if status.returncode == 0 and status.stdout.count("node_") >= count:
                return
            time.sleep(1)
        raise TimeoutError(f"the Ray cluster did not reach {count} nodes; see {self.temp_dir}")

    def stop(self) -> list[int]:
        leftovers = []
        for node in self.nodes:
            leftovers += _kill_session(node.pid)
            node.wait(timeout=30)  # reap `ray start` itself (a zombie still has its session)
        return [pid for pid in leftovers if pid not in {node.pid for node in self.nodes}]


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    # A short path: Ray's socket paths live under the temp dir and must stay under ~107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    cluster = Cluster(temp_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        leftovers = cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not leftovers, f"Ray processes of the test cluster survived: {leftovers}"


def _sweep_args(results: Path, cache: Path, trials: int) -> list[str]:
    return [
        str(TINY.relative_to(REPO)), "--results", str(results), "--trials", str(trials),
        "--set", f"data.cache_dir={cache}", "--set", "resources.gpus_per_trial=1",
        "--set", "search.max_concurrent=2",
    ]  # fmt: skip


def _check_store(sweep_dir: Path, trials: int) -> pd.DataFrame:
    table = pd.read_parquet(sweep_dir / "trials")
    assert len(table) == trials and table.trial_id.is_unique
    assert set(table.status) == {"completed"}
    epochs = pd.read_parquet(sweep_dir / "epochs")
    members = pd.read_parquet(sweep_dir / "members")
    assert set(epochs.trial_id) == set(members.trial_id) == set(table.trial_id)
    assert len(epochs) == trials * 2 and len(members) == trials  # 1 member x 2 epochs each
    return table


def test_sweep_joins_the_cluster_uses_both_nodes_and_the_assigned_gpus(
    cluster: Cluster, tmp_path: Path
) -> None:
    run = subprocess.run(
        [sys.executable, "sweep.py", *_sweep_args(tmp_path / "r", tmp_path / "c", 4),
         "--address", cluster.address],
        cwd=REPO, capture_output=True, text=True, timeout=600, start_new_session=True, env=ENV,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "joined the Ray cluster" in run.stdout
    trials = _check_store(tmp_path / "r" / "tiny", 4)
    # every node took trials: each node has 1 CPU and a trial needs 1, so two run at once
    assert trials.node_id.nunique() == 2, trials[["trial_id", "node_id"]]
    gpu_ids = [json.loads(ids) for ids in trials.gpu_ids]
    assert all(len(ids) == 1 and ids[0] in ("0", "1") for ids in gpu_ids), gpu_ids
    # fake GPUs: Ray assigned one each, torch finds no CUDA device, so the trial trains on CPU
    assert (trials.gpu_fraction == 1.0).all() and (trials.device == "cpu").all()


def test_ray_job_submit_runs_the_sweep_on_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    results = tmp_path / "jobs"
    runtime_env = json.dumps({"excludes": [".venv", "results", ".cache", ".git", "*.parquet"]})
    command = [
        RAY, "job", "submit", f"--address=http://127.0.0.1:{cluster.dashboard_port}",
        "--working-dir", ".", f"--runtime-env-json={runtime_env}", "--",
        sys.executable, "sweep.py", *_sweep_args(results, tmp_path / "c", 2),
    ]  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        job = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=600,
            start_new_session=True, env=ENV,
        )  # fmt: skip
        # the head's job agent registers a little after `ray status` shows the node
        if "No available agent" not in job.stderr + job.stdout or time.monotonic() > deadline:
            break
        time.sleep(3)
    output = job.stdout[-3000:] + job.stderr[-3000:]
    assert job.returncode == 0 and "succeeded" in output, output
    trials = _check_store(results / "tiny", 2)
    assert trials.node_id.notna().all()
