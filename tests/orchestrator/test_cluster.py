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

from tests.reliability.drivers import session_pids

REPO = Path(__file__).resolve().parents[2]
SPEC = Path(__file__).with_name("tiny_cluster.yaml")  # 4 trials x 3 members x 2 epochs
TRIALS, MEMBERS, EPOCHS = 4, 3, 2
RAY = str(Path(sys.executable).with_name("ray"))
# Ray 2.60 clusters require a token (~/.ray/auth_token, written by the first head started on this
# machine); every client of the test cluster (ray status, sweep.py, ray job submit) presents it.
# TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0: Tune's JSON logger writes result.json (read below; off by
# default in a sweep, orchestrator/trackers.py)
ENV = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
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


def _ensure_token() -> None:
    """The token every node and client of a test cluster presents: `ray start` refuses to start
    a head without one (it never creates it), so a fresh machine gets it the way a user does,
    `ray get-auth-token --generate` (~/.ray/auth_token; 0600 as the product leaves it)."""
    from orchestrator.cluster import DEFAULT_TOKEN_FILE

    if DEFAULT_TOKEN_FILE.is_file() or os.environ.get("RAY_AUTH_TOKEN"):
        return
    subprocess.run([RAY, "get-auth-token", "--generate"], env=ENV, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    DEFAULT_TOKEN_FILE.chmod(0o600)


class RayCluster:
    """A Ray head (with the dashboard's job server on 127.0.0.1) and one worker node, both on
    this machine, 2 CPUs and 2 fake GPUs each, on ports of their own."""

    def __init__(self, temp_root: str, log_dir: Path) -> None:
        self.temp_root, self.log_dir = temp_root, log_dir
        self.port, self.dashboard_port = _free_ports(2)
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []
        _ensure_token()

    def _start(self, *args: str, cpus: int = 2, gpus: int = 2,
               wrap: tuple[str, ...] = ()) -> None:
        """One `ray start --block` node; `wrap`: a command line it runs under (its args follow)."""
        ports = iter(_free_ports(47))
        workers = ",".join(str(next(ports)) for _ in range(40))
        name = f"node{len(self.nodes)}"
        log = open(self.log_dir / f"{name}.log", "a")  # noqa: SIM115
        # A temp dir per node, as on separate machines: nodes sharing one would unpack a job's
        # working_dir into the same folder, pulling it from under the job's driver.
        (Path(self.temp_root) / name).mkdir(exist_ok=True)  # exists: a failed start's retry
        command = [
            *wrap, RAY, "start", "--block", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
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
        self.start_head(cpus=2, gpus=2)
        self.add_worker(cpus=2, gpus=2)

    def start_head(self, cpus: int, gpus: int, dashboard: bool = True) -> None:
        """The head node alone, with the dashboard's job server on 127.0.0.1 (`dashboard`; its
        dozen processes starting beside the node's agent slow the node's start)."""
        self._start_until_joined(
            "--head", f"--port={self.port}",
            f"--include-dashboard={str(dashboard).lower()}", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}", cpus=cpus, gpus=gpus,
        )  # fmt: skip

    def add_worker(self, cpus: int, gpus: int, resources: dict[str, float] | None = None,
                   wrap: tuple[str, ...] = ()) -> None:
        """One more worker node (custom `resources` as `ray start --resources`), once joined."""
        extra = [f"--resources={json.dumps(resources)}"] if resources else []
        self._start_until_joined(f"--address={self.address}", *extra, cpus=cpus, gpus=gpus,
                                 wrap=wrap)

    def _start_until_joined(self, *args: str, cpus: int, gpus: int, wrap: tuple[str, ...] = (),
                            tries: int = 3) -> None:
        """_start, then wait until the node is in the cluster. A node whose `ray start` fails is
        started again (`tries` in all): on a machine loaded far beyond its cores its raylet can
        give up on its agent (a fixed 15 s, ray-project/ray#65983)."""
        for attempt in range(1, tries + 1):
            self._start(*args, cpus=cpus, gpus=gpus, wrap=wrap)
            try:
                self._wait_for_nodes(len(self.nodes))
                return
            except RuntimeError:
                if attempt == tries or self.nodes[-1].poll() is None:
                    raise
                failed = self.nodes.pop()  # its `ray start` exited: what it left goes too
                _kill(session_pids(failed.pid))

    def start_typed(self, workers: list[tuple[str, int]]) -> None:
        """A head with 1 CPU and no GPU, and one worker per (GPU type, declared MiB per GPU):
        2 CPUs and 1 GPU each (#22: the layout of docker/cluster.yaml, scaled down)."""
        from orchestrator.cluster import ACCELERATOR_PREFIX, GPU_MEMORY_RESOURCE

        self.start_head(cpus=1, gpus=0)
        for gpu_type, mib in workers:
            declared = {f"{ACCELERATOR_PREFIX}{gpu_type}": 1, GPU_MEMORY_RESOURCE: mib}
            self.add_worker(cpus=2, gpus=1, resources=declared)

    def status(self) -> str:
        try:
            run = subprocess.run(
                [RAY, "status", f"--address={self.address}"],
                capture_output=True, text=True, env=ENV, timeout=60,
            )  # fmt: skip
        except subprocess.TimeoutExpired:  # a loaded machine: the caller asks again
            return ""
        return run.stdout if run.returncode == 0 else ""

    def node_ids(self) -> set[str]:
        return set(re.findall(r"\bnode_([0-9a-f]{56})\b", self.status()))

    def _wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + 300  # a node joins in seconds, minutes on a loaded machine
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
            _kill(session_pids(sid))
        for node in self.nodes:  # reap `ray start` itself (a zombie keeps its session)
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alive = sorted(
                {pid for sid in sessions for pid in session_pids(sid)}
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


TYPED_SPEC = Path(__file__).with_name("tiny_gpu_types.yaml")  # d_model 8, 16, 512, 2048
GPU_TYPES = [("H100", 128), ("L4", 32)]  # declared MiB per GPU: GiB-scale cards scaled down


@pytest.fixture
def typed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """A CPU-only head and two GPU workers of two types (gone before `cluster` starts)."""
    temp_root = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    cluster = RayCluster(temp_root, tmp_path_factory.mktemp("ray-typed-logs"))
    try:
        cluster.start_typed(GPU_TYPES)
        yield cluster
    finally:
        survivors = cluster.stop()
        shutil.rmtree(temp_root, ignore_errors=True)
        assert not survivors, f"processes of the test's Ray cluster survived: {survivors}"


def _node_types(cluster: RayCluster) -> dict[str, str]:
    """node id -> its declared GPU type ("-" for the head), read from Ray by a separate driver."""
    code = ("import json, sys, ray\nray.init(address=sys.argv[1], log_to_driver=False)\n"
            "print(json.dumps({n['NodeID']: [k for k in n['Resources'] if "
            "k.startswith('accelerator_type:')] for n in ray.nodes() if n['Alive']}))")
    run = subprocess.run([sys.executable, "-c", code, cluster.address], capture_output=True,
                         text=True, env=ENV, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    nodes = json.loads(run.stdout.strip().splitlines()[-1])
    return {node: keys[0].split(":", 1)[1] if keys else "-" for node, keys in nodes.items()}


def test_gpus_of_two_types_are_discovered_planned_for_and_packed_by_bytes(
    typed_cluster: RayCluster, tmp_path: Path
) -> None:
    """#22: a CPU head, an H100-type and an L4-type worker (declared memory, no CUDA here),
    gpus_per_trial: auto. Each trial is planned for a type and runs on a node of that type;
    the small ones share the small type's GPU; the one that fits no GPU is does_not_fit; none
    is left pending (the sweep ends)."""
    cache = tmp_path / "c"
    plan = subprocess.run(
        [sys.executable, "sweep.py", "plan", str(TYPED_SPEC.relative_to(REPO)), "--address",
         typed_cluster.address, "--set", f"data.cache_dir={cache}", "--samples", "4"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV,
    )  # fmt: skip
    assert plan.returncode == 1, plan.stdout[-3000:] + plan.stderr[-3000:]  # one fits nowhere
    assert "cluster: 3 nodes, 5 CPUs, 1 x H100 128 MiB, 1 x L4 32 MiB" in plan.stdout
    rows = {line.split()[1]: line.split() for line in plan.stdout.splitlines()
            if re.match(r"^\d+\s+\d+\s", line)}
    assert rows["8"][-1] == rows["16"][-1] == "L4" and rows["512"][-1] == "H100", plan.stdout
    assert "DOES NOT FIT" in " ".join(rows["2048"]), plan.stdout

    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "sweep.py", str(TYPED_SPEC.relative_to(REPO)), "--results",
         str(tmp_path / "r"), "--set", f"data.cache_dir={cache}", "--address",
         typed_cluster.address],
        cwd=REPO, capture_output=True, text=True, timeout=600, start_new_session=True, env=ENV,
    )  # fmt: skip
    output = run.stdout[-3000:] + run.stderr[-3000:]
    assert "cluster: 3 nodes, 5 CPUs, 1 x H100 128 MiB, 1 x L4 32 MiB" in run.stdout, output
    assert run.returncode == 1, output  # the does_not_fit trial counts as failed
    sweep_dir = tmp_path / "r" / "tiny_gpu_types"
    trials = pd.read_parquet(sweep_dir / "trials")
    assert len(trials) == 4, trials  # every trial ended: none left pending
    d_model = trials.config_json.map(lambda c: json.loads(c)["model"]["d_model"])
    by_d = dict(zip(d_model, trials.itertuples(), strict=True))
    assert sorted(by_d) == [8, 16, 512, 2048]
    assert by_d[2048].status == "does_not_fit", output
    assert {by_d[d].status for d in (8, 16, 512)} == {"completed"}, trials[["status", "error"]]
    types = _node_types(typed_cluster)
    from orchestrator.planner import gpu_fraction_for

    for d, gpu_type in ((8, "L4"), (16, "L4"), (512, "H100")):
        row = by_d[d]
        (params,) = sweep_dir.glob(f"_tune/*/{row.trial_id}/params.json")
        runtime = json.loads(params.read_text())["runtime"]
        assert runtime["gpu_type"] == gpu_type, (d, runtime)
        assert types[row.node_id] == gpu_type, (d, row.node_id, types)  # placed on that type
        memory = dict(GPU_TYPES)[gpu_type] * 2**20
        # the share Ray gave is the one the stored estimate needs on that type's GPU
        assert row.gpu_fraction == gpu_fraction_for(row.estimated_peak_bytes, memory, 0.9), d
        assert row.micro_batch == 8 and row.accumulation == 1
    assert by_d[8].gpu_fraction == by_d[16].gpu_fraction == 0.125  # small trials share a GPU
    assert 0.125 < by_d[512].gpu_fraction < 1.0
    print(f"typed-cluster sweep: {time.monotonic() - started:.0f} s")


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


# --- on this machine alone (a private Ray): an impossible request, SIGTERM to the group ------
TINY = Path(__file__).with_name("tiny_sweep.yaml")  # 3 trials x 2 epochs, CPU


def test_a_gpu_asked_on_a_machine_without_one_is_exit_2_within_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "sweep.py", str(TINY.relative_to(REPO)), "--results", str(tmp_path / "r"),
         "--set", f"data.cache_dir={tmp_path / 'c'}", "--set", "resources.gpus_per_trial=1",
         "--address", "local"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV,
    )  # fmt: skip
    took = time.monotonic() - started
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("error: ")]
    assert "asks for 1 GPU per trial" in line and "no GPU" in line, line
    assert "--set resources.gpus_per_trial=0" in line
    assert "cluster:" not in run.stdout  # refused before Ray started
    assert not (tmp_path / "r" / "tiny" / "spec.yaml").exists()  # nothing written
    assert took < 120, took  # data preparation and imports on a loaded machine; no Ray, no wait


def test_sigterm_to_the_process_group_exits_143_with_the_continue_line(tmp_path: Path) -> None:
    """What `timeout`, SLURM's scancel and systemd do: SIGTERM to the driver's whole process
    group. The private Ray's processes are in their own session: the driver stops cleanly."""
    driver = _start_long_sweep(tmp_path)
    sent = time.monotonic()
    os.killpg(driver.pid, signal.SIGTERM)
    _, stderr = driver.communicate(timeout=120)
    stopped = time.monotonic() - sent
    assert driver.returncode == 143, (tmp_path / "out.txt").read_text()[-2000:] + stderr[-2000:]
    assert "interrupted (SIGTERM)" in stderr and "the same command continues the sweep" in stderr
    assert stopped < 60, stopped  # not the minute of waiting for a lost GCS


def _children_named(parent: int, name: bytes) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == parent and name in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def _start_long_sweep(tmp_path: Path) -> subprocess.Popen:
    """tiny_sweep.yaml at 30 epochs on a private Ray; returns once its trials started."""
    command = [sys.executable, "sweep.py", str(TINY.relative_to(REPO)), "--results",
               str(tmp_path / "r"), "--set", f"data.cache_dir={tmp_path / 'c'}", "--set",
               "train.epochs=30", "--address", "local"]  # fmt: skip
    out = open(tmp_path / "out.txt", "w")  # noqa: SIM115
    driver = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.PIPE, text=True,
                              env=ENV, start_new_session=True)  # its pid is its group's id
    deadline = time.monotonic() + 300
    while "cluster:" not in (tmp_path / "out.txt").read_text() and time.monotonic() < deadline:
        assert driver.poll() is None, (tmp_path / "out.txt").read_text()
        time.sleep(0.5)
    time.sleep(10)  # trials running
    return driver


def test_a_gcs_that_dies_under_the_driver_ends_the_sweep_within_seconds(tmp_path: Path) -> None:
    driver = _start_long_sweep(tmp_path)
    (gcs,) = _children_named(driver.pid, b"gcs_server")
    sent = time.monotonic()
    os.kill(gcs, signal.SIGKILL)
    _, stderr = driver.communicate(timeout=120)
    stopped = time.monotonic() - sent
    assert driver.returncode == 137, (tmp_path / "out.txt").read_text()[-2000:] + stderr[-2000:]
    assert "GCS exited under the driver (killed by SIGKILL)" in stderr
    assert "the same command continues the sweep" in stderr
    assert stopped < 15, stopped  # not Ray's minute of reconnecting
