"""Running on a Ray cluster: a REAL two-node Ray cluster on this machine (2 fake GPUs per node),
joined by a separate driver process through `sweep.py --address` and through `ray job submit`.

Checked: trials run on both nodes, each on the GPU id Ray assigned it (Ray's CUDA_VISIBLE_DEVICES
reached the trial; two trials running at once on one node got different ids), training falls back
to the CPU because torch finds no CUDA device behind the fake GPUs (and records it), and the store
is complete (every trial with its epochs and members rows).

No `ray stop` anywhere (it stops every Ray on the machine): each node is a `ray start --block` in
its own session, with its own temp dir and its own ports (other engineers' Ray instances hold the
defaults, e.g. the dashboard agent's 52365); the teardown SIGKILLs both sessions and checks that no
process of the test's cluster survives.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
SPEC = Path(__file__).with_name("tiny_cluster.yaml")  # 4 trials x 3 members x 2 epochs
TRIALS, MEMBERS, EPOCHS = 4, 3, 2
RAY = str(Path(sys.executable).with_name("ray"))
# Ray 2.60 clusters require a token (~/.ray/auth_token, written by the first head started on this
# machine); every client of the test cluster (ray status, sweep.py, ray job submit) presents it.
# TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0: Tune's JSON logger writes result.json (read below; off by
# default in a sweep, orchestrator/trackers.py)
ENV = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_DISABLE_USAGE_STATS": "1",
       "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0"}
DEFAULT_ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")  # what a plain `ray start` writes
pytestmark = pytest.mark.slow


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports free right now (all bound at once, then released)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


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


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains `text` (the cluster's temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


class RayCluster:
    """A Ray head (with the dashboard's job server on 127.0.0.1) and one worker node, both on
    this machine, 2 CPUs and 2 fake GPUs each, on ports of their own."""

    def __init__(self, temp_root: str, log_dir: Path) -> None:
        self.temp_root, self.log_dir = temp_root, log_dir
        self.port, self.dashboard_port = _free_ports(2)
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []

    def _start(self, *args: str) -> None:
        ports = iter(_free_ports(47))
        workers = ",".join(str(next(ports)) for _ in range(40))
        name = f"node{len(self.nodes)}"
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115
        # A temp dir per node, as on separate machines: nodes sharing one would unpack a job's
        # working_dir into the same folder, pulling it from under the job's driver.
        (Path(self.temp_root) / name).mkdir()
        command = [
            RAY, "start", "--block", "--num-cpus=2", "--num-gpus=2",
            f"--temp-dir={self.temp_root}/{name}",
            "--node-ip-address=127.0.0.1", "--object-store-memory=200000000",
            f"--node-manager-port={next(ports)}", f"--object-manager-port={next(ports)}",
            f"--dashboard-agent-listen-port={next(ports)}",
            f"--dashboard-agent-grpc-port={next(ports)}",
            f"--runtime-env-agent-port={next(ports)}", f"--metrics-export-port={next(ports)}",
            f"--worker-port-list={workers}", *args,
        ]  # fmt: skip
        if "--head" in args:
            command.append(f"--ray-client-server-port={next(ports)}")
        self.nodes.append(
            subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=ENV
            )
        )

    def start(self) -> None:
        self._start(
            "--head", f"--port={self.port}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
        )  # fmt: skip
        self._wait_for_nodes(1)
        self._start(f"--address={self.address}")
        self._wait_for_nodes(2)

    def status(self) -> str:
        run = subprocess.run(
            [RAY, "status", f"--address={self.address}"],
            capture_output=True, text=True, env=ENV, timeout=60,
        )  # fmt: skip
        return run.stdout if run.returncode == 0 else ""

    def node_ids(self) -> set[str]:
        return set(re.findall(r"\bnode_([0-9a-f]{56})\b", self.status()))

    def _wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len(self.node_ids()) >= count:
                return
            if any(node.poll() is not None for node in self.nodes):
                break
            time.sleep(1)
        raise RuntimeError(f"the Ray cluster did not reach {count} nodes; see {self.log_dir}")

    def stop(self) -> list[int]:
        """Kill both nodes' sessions and anything else of this cluster; the pids that were
        still alive 30 s later (an empty list: nothing of the cluster survived)."""
        sessions = [node.pid for node in self.nodes]
        for sid in sessions:
            _kill(_session_pids(sid))
        for node in self.nodes:  # reap `ray start` itself (a zombie keeps its session)
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alive = sorted(
                {pid for sid in sessions for pid in _session_pids(sid)}
                | set(_pids_mentioning(self.temp_root))
            )
            if not alive:
                return []
            _kill(alive)  # e.g. a worker that left the session: still the test's, still killed
            time.sleep(0.5)
        return alive


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    address_file_before = DEFAULT_ADDRESS_FILE.exists()
    # A short path: Ray's socket paths live under the temp dir and must stay under ~107 bytes.
    temp_root = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    cluster = RayCluster(temp_root, tmp_path_factory.mktemp("ray-logs"))
    try:
        cluster.start()
        yield cluster
    finally:
        survivors = cluster.stop()
        shutil.rmtree(temp_root, ignore_errors=True)
        assert not survivors, f"processes of the test's Ray cluster survived: {survivors}"
        # the cluster must not become the one `sweep.py` (address "auto") joins on this machine
        assert address_file_before or not DEFAULT_ADDRESS_FILE.exists()


def _sweep_args(results: Path, cache: Path) -> list[str]:
    return [str(SPEC.relative_to(REPO)), "--results", str(results), "--set",
            f"data.cache_dir={cache}"]  # fmt: skip


def _check_store(sweep_dir: Path, cluster: RayCluster) -> pd.DataFrame:
    """The store is complete, every trial ran on a node of `cluster`, on the GPU Ray gave it."""
    trials = pd.read_parquet(sweep_dir / "trials")
    assert len(trials) == TRIALS and trials.trial_id.is_unique
    assert set(trials.status) == {"completed"}, trials[["trial_id", "status", "error"]]
    epochs = pd.read_parquet(sweep_dir / "epochs")
    members = pd.read_parquet(sweep_dir / "members")
    assert (epochs.groupby("trial_id").size() == MEMBERS * EPOCHS).all()
    assert (members.groupby("trial_id").size() == MEMBERS).all()
    assert set(epochs.trial_id) == set(members.trial_id) == set(trials.trial_id)
    assert members.test_uar.between(0, 1).all()

    assert set(trials.node_id) <= cluster.node_ids(), "a trial ran outside the test's cluster"
    gpu_ids = trials.gpu_ids.map(json.loads)
    assert all(len(ids) == 1 and ids[0] in ("0", "1") for ids in gpu_ids), gpu_ids
    assert (trials.gpu_fraction == 1.0).all()
    # fake GPUs: Ray assigned one, torch found no CUDA device, the trial trained on the CPU
    assert (trials.device == "cpu").all()
    # Ray's assignment reached the trial's process: CUDA_VISIBLE_DEVICES is its GPU id (read from
    # the runtime the trial itself reported, in Tune's result.json)
    for trial_id, ids in zip(trials.trial_id, gpu_ids, strict=True):
        (result,) = sweep_dir.glob(f"_tune/*/{trial_id}/result.json")
        runtime = json.loads(json.loads(result.read_text().splitlines()[-1])["runtime_json"])
        assert runtime["cuda_visible_devices"] == ",".join(ids) == ",".join(runtime["gpu_ids"])
    return trials


def _overlapping_pairs(trials: pd.DataFrame) -> list[tuple[pd.Series, pd.Series]]:
    """Pairs of trials that ran at the same time on the same node (driver-side times)."""
    return [
        (a, b)
        for (_, a), (_, b) in itertools.combinations(trials.iterrows(), 2)
        if a.node_id == b.node_id and a.started_at < b.ended_at and b.started_at < a.ended_at
    ]


def test_sweep_py_joins_the_cluster_and_uses_both_nodes_on_the_assigned_gpus(
    cluster: RayCluster, tmp_path: Path
) -> None:
    run = subprocess.run(
        [sys.executable, "sweep.py", *_sweep_args(tmp_path / "r", tmp_path / "c"),
         "--address", cluster.address],
        cwd=REPO, capture_output=True, text=True, timeout=420, start_new_session=True, env=ENV,
    )  # fmt: skip
    output = run.stdout[-3000:] + run.stderr[-3000:]
    assert run.returncode == 0, output
    assert f"joined the Ray cluster at {cluster.address}" in run.stdout
    assert "'GPU': 4.0" in run.stdout  # both nodes' fake GPUs
    trials = _check_store(tmp_path / "r" / "tiny_cluster", cluster)
    # 4 trials, at most 2 per node (2 CPUs, 2 GPUs each), all 4 at once (max_concurrent defaults
    # to the cluster's 4 CPUs): both nodes took trials
    assert trials.node_id.nunique() == 2, trials[["trial_id", "node_id", "started_at"]]
    pairs = _overlapping_pairs(trials)
    assert pairs, trials[["trial_id", "node_id", "started_at", "ended_at"]]
    for a, b in pairs:  # two trials at once on one node never share a GPU
        assert a.gpu_ids != b.gpu_ids, (a.trial_id, b.trial_id, a.gpu_ids)


def test_ray_job_submit_runs_the_sweep_on_the_cluster(cluster: RayCluster, tmp_path: Path) -> None:
    results = tmp_path / "jobs"  # absolute: the job's cwd is Ray's unpacked copy of --working-dir
    runtime_env = json.dumps({"excludes": [".venv", "results", ".cache", ".git"]})
    job = subprocess.run(
        [RAY, "job", "submit", f"--address=http://127.0.0.1:{cluster.dashboard_port}",
         "--working-dir", ".", f"--runtime-env-json={runtime_env}", "--",
         sys.executable, "sweep.py", *_sweep_args(results, tmp_path / "c")],
        cwd=REPO, capture_output=True, text=True, timeout=420, start_new_session=True, env=ENV,
    )  # fmt: skip
    output = job.stdout[-4000:] + job.stderr[-3000:]
    assert job.returncode == 0 and "succeeded" in output, output
    assert "joined the Ray cluster" in job.stdout  # the job's driver joined, started no Ray
    assert "sweep tiny_cluster: 4 trials run, 4 recorded, 0 failed" in job.stdout
    trials = _check_store(results / "tiny_cluster", cluster)
    assert trials.node_id.nunique() == 2, trials[["trial_id", "node_id", "started_at"]]


_JOIN = ("import sys\nfrom orchestrator.cluster import ClusterError, ray_init\ntry:\n"
         "    ray_init(sys.argv[1], verbose=False)\nexcept ClusterError as exc:\n"
         "    sys.exit(f'error: {exc}')\n")


def _join(cluster: RayCluster, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _JOIN, cluster.address], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=300, start_new_session=True,
    )  # fmt: skip


def test_joining_uses_the_token_ray_uses_without_ray_auth_mode(cluster: RayCluster) -> None:
    # a user's shell: no RAY_AUTH_MODE, the cluster's token in ~/.ray/auth_token
    env = {k: v for k, v in ENV.items() if k != "RAY_AUTH_MODE"}
    run = _join(cluster, env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert f"joined the Ray cluster at {cluster.address}" in run.stdout


def test_a_wrong_token_is_reported_as_an_authentication_failure(cluster: RayCluster) -> None:
    env = {**ENV, "RAY_AUTH_TOKEN": "0" * 32}  # RAY_AUTH_TOKEN wins over ~/.ray/auth_token
    run = _join(cluster, env)
    assert run.returncode != 0, run.stdout[-2000:]
    error = run.stderr[run.stderr.index("error: "):]
    assert "usually authentication (token sent from RAY_AUTH_TOKEN" in error, error
    assert "ray get-auth-token" in error
    assert "ray stop" not in run.stderr and "cannot reach" not in run.stderr
