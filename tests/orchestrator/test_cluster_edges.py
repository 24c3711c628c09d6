"""Edges of a real Ray cluster on this machine (#22), with the nodes of test_cluster.py:

- an autoscaling cluster before its workers exist (`ray up` then a sweep: the head alone, CPU 0,
  as in docker/cluster.yaml): the request is checked against the node types of the autoscaler's
  cluster file and accepted; the trials wait until a node of that type joins (here the test
  starts it, as the autoscaler would) and then run there, planned for its GPU type;
- a worker node that sees another filesystem than the driver (its `ray start` runs in a mount
  namespace of its own, with a tmpfs over the cache's parent): the sweep refuses the cache path
  with one line and writes nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.cluster import AUTOSCALER_CONFIG_ENV, TOKEN_PATH_ENV
from orchestrator.store.lock import LOCK_DIR
from tests.orchestrator.test_cluster import ENV, REPO, SPEC, TINY, RayCluster

pytestmark = pytest.mark.slow
GPU_MIB = 1024  # declared memory of the autoscaled GPU type (no CUDA here)
# What `ray up` writes to ~/ray_bootstrap_config.yaml on the head (JSON; Ray's defaults filled in),
# for the layout of docker/cluster.yaml scaled down: a CPU-0 head, one GPU worker type.
BOOTSTRAP = {
    "cluster_name": "sersweep-test",
    "max_workers": 1,
    "head_node_type": "head.cpu",
    "available_node_types": {
        "head.cpu": {"resources": {"CPU": 0}, "min_workers": 0, "max_workers": 0},
        "gpu.l4": {"resources": {"CPU": 2, "GPU": 2, "accelerator_type:L4": 1,
                                 "sersweep_gpu_memory_mib": GPU_MIB},
                   "min_workers": 0, "max_workers": 1},
    },
}


@pytest.fixture
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """A cluster of no node yet: each test starts its head and workers. (On a machine loaded far
    beyond its cores a node may not start: Ray's raylet waits a fixed 15 s for its dashboard
    agent, ray-project/ray#65983.)"""
    temp_root = tempfile.mkdtemp(prefix="re", dir="/tmp")  # short: Ray's socket paths
    cluster = RayCluster(temp_root, tmp_path_factory.mktemp("ray-edge-logs"))
    try:
        yield cluster
    finally:
        survivors = cluster.stop()
        shutil.rmtree(temp_root, ignore_errors=True)
        assert not survivors, f"processes of the test's Ray cluster survived: {survivors}"


def _sweep(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "sweep.py", *args], cwd=REPO, env=env, text=True,
                            start_new_session=True, **kwargs)  # type: ignore[call-overload]


def test_a_gpu_sweep_on_a_head_without_workers_runs_on_the_node_type_the_autoscaler_adds(
        ray_cluster: RayCluster, tmp_path: Path) -> None:
    """The bootstrap file in $HOME, as on the head of `ray up`. Before: refused (exit 2: 1 CPU
    asked, the largest node has 0)."""
    ray_cluster.start_head(cpus=0, gpus=0, dashboard=False)
    home = tmp_path / "home"
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text(json.dumps(BOOTSTRAP))
    env = {**ENV, "HOME": str(home), TOKEN_PATH_ENV: str(Path.home() / ".ray" / "auth_token")}
    env.pop(AUTOSCALER_CONFIG_ENV, None)
    out = tmp_path / "out.txt"
    with open(out, "w") as stdout:
        driver = _sweep([str(SPEC.relative_to(REPO)), "--results", str(tmp_path / "r"),
                         "--set", f"data.cache_dir={tmp_path / 'c'}", "--trials", "2",
                         "--address", ray_cluster.address], env,
                        stdout=stdout, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 300
            while "trials wait until it has started one" not in out.read_text():
                assert driver.poll() is None and time.monotonic() < deadline, (
                    out.read_text()[-3000:] + (driver.stderr.read() if driver.stderr else ""))
                time.sleep(0.5)
            time.sleep(3)  # the Tuner is up; its trials wait for a GPU of type L4
            head = ray_cluster.node_ids()
            ray_cluster.add_worker(cpus=2, gpus=2, resources={"accelerator_type:L4": 1,
                                                              "sersweep_gpu_memory_mib": GPU_MIB})
            _, stderr = driver.communicate(timeout=600)
        finally:
            if driver.poll() is None:
                driver.kill()
    text = out.read_text()
    assert driver.returncode == 0, text[-3000:] + stderr[-3000:]
    assert "cluster: 1 node, 0 CPUs, no GPU; the autoscaler (" in text
    assert "can add up to 1 x gpu.l4 (2 CPUs, 2 x L4 1 GiB)" in text
    assert "the autoscaler can add gpu.l4" in text
    sweep_dir = tmp_path / "r" / "tiny_cluster"
    trials = pd.read_parquet(sweep_dir / "trials")
    assert len(trials) == 2 and set(trials.status) == {"completed"}, trials[["status", "error"]]
    added = ray_cluster.node_ids() - head
    assert len(added) == 1 and set(trials.node_id) == added, (trials.node_id, head)
    for trial_id, gpu_ids in zip(trials.trial_id, trials.gpu_ids, strict=True):
        assert len(json.loads(gpu_ids)) == 1  # the GPU it asked for
        (params,) = sweep_dir.glob(f"_tune/*/{trial_id}/params.json")
        runtime = json.loads(params.read_text())["runtime"]
        # planned for the type only the autoscaler's file knew when the sweep started
        assert runtime["gpu_type"] == "L4" and runtime["gpu_memory_bytes"] == GPU_MIB * 2**20


def test_the_shipped_cluster_file_named_explicitly_plans_its_gpu_type_and_bounds_requests(
        ray_cluster: RayCluster, tmp_path: Path) -> None:
    """A driver that joins from elsewhere names the cluster file (docker/cluster.yaml): `plan`
    shows what its autoscaler can add; a request no type of it holds is one line, exit 2,
    nothing written. Before: the file was not read (the refusal named no node type)."""
    ray_cluster.start_head(cpus=0, gpus=0, dashboard=False)
    env = {**ENV, AUTOSCALER_CONFIG_ENV: str(REPO / "docker" / "cluster.yaml")}
    cache = tmp_path / "c"
    plan = subprocess.run(
        [sys.executable, "sweep.py", "plan", str(SPEC.relative_to(REPO)), "--address",
         ray_cluster.address, "--set", f"data.cache_dir={cache}", "--samples", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    # its A10G type counts, with the memory it declares (planned before a node of it runs);
    # the A100 type has max_workers 0: never started
    assert "cluster: 1 node, 0 CPUs, no GPU; the autoscaler (" in plan.stdout
    assert "can add up to 8 x gpu.a10g (4 CPUs, 1 x A10G 22 GiB)" in plan.stdout
    assert "gpu.a100x8" not in plan.stdout
    rows = [line.split() for line in plan.stdout.splitlines() if re.match(r"^\d+\s+\d", line)]
    assert len(rows) == 2 and all("4/4" in row for row in rows), plan.stdout

    run = subprocess.run(
        [sys.executable, "sweep.py", str(SPEC.relative_to(REPO)), "--results",
         str(tmp_path / "r"), "--set", f"data.cache_dir={cache}", "--set",
         "resources.gpus_per_trial=2", "--address", ray_cluster.address],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("error: ")]
    assert "asks for 2 GPUs per trial, but the largest node has 1, nor does a node type the " \
           "autoscaler can add" in line and "--set resources.gpus_per_trial=1" in line, line
    assert not (tmp_path / "r" / "tiny_cluster" / "spec.yaml").exists()


def _mount_namespaces_work(tmp_path: Path) -> str | None:
    """None when this process may run a command in a mount namespace of its own with a tmpfs
    mounted there (root or CAP_SYS_ADMIN, util-linux unshare); else why not."""
    if shutil.which("unshare") is None:
        return "no `unshare` command (util-linux)"
    probe = tmp_path / "probe"
    probe.mkdir()
    run = subprocess.run(["unshare", "--mount", "sh", "-c",
                          f"mount -t tmpfs sersweep-probe '{probe}' && touch '{probe}/x'"],
                         capture_output=True, text=True, timeout=30)
    if run.returncode != 0:
        return f"`unshare --mount` + tmpfs is not allowed here: {run.stderr.strip()[:200]}"
    if (probe / "x").exists():
        return "a tmpfs mounted under `unshare --mount` shows outside it (shared propagation)"
    return None


_CHECK = ("import sys\nimport ray\nfrom orchestrator.cluster import ClusterError, "
          "check_cache_on_nodes\nray.init(address=sys.argv[1], log_to_driver=False)\n"
          "for path in sys.argv[2:]:\n    try:\n        check_cache_on_nodes(path)\n"
          "        print('readable', path)\n    except ClusterError as exc:\n"
          "        print('refused', exc)\n")


def test_a_cache_path_a_worker_node_cannot_read_is_refused_with_one_line(
        ray_cluster: RayCluster, tmp_path: Path) -> None:
    why_not = _mount_namespaces_work(tmp_path)
    if why_not:
        pytest.skip(f"cannot give a test node a filesystem of its own: {why_not}")
    hidden = tmp_path / "hidden"  # the worker node sees an empty tmpfs here
    hidden.mkdir()
    ray_cluster.start_head(cpus=1, gpus=0, dashboard=False)
    ray_cluster.add_worker(cpus=1, gpus=0, wrap=(
        "unshare", "--mount", "sh", "-c",
        f"mount -t tmpfs sersweep-test '{hidden}' && exec \"$0\" \"$@\""))
    # the check itself, on a path both nodes see and on one the worker does not
    check = subprocess.run(
        [sys.executable, "-c", _CHECK, ray_cluster.address, str(tmp_path / "seen"),
         str(hidden / "c")], cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV)
    assert check.returncode == 0, check.stderr[-3000:]
    assert f"readable {tmp_path / 'seen'}" in check.stdout, check.stdout
    (refused,) = [x for x in check.stdout.splitlines() if x.startswith("refused")]
    assert "is not readable from node(s) " in refused and "2-node cluster" in refused
    assert (tmp_path / "seen").is_dir() and not list((tmp_path / "seen").iterdir())

    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "sweep.py", str(TINY.relative_to(REPO)), "--results",
         str(tmp_path / "r"), "--set", f"data.cache_dir={hidden / 'c'}", "--address",
         ray_cluster.address],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV,
    )  # fmt: skip
    took = time.monotonic() - started
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("error: ")]
    assert f"data.cache_dir '{hidden / 'c'}' is not readable from node(s) " in line, line
    assert "of this 2-node cluster" in line and "--set data.cache_dir=" in line, line
    assert "cluster: 2 nodes" in run.stdout  # refused after joining, before any trial
    sweep_dir = tmp_path / "r" / "tiny"
    written = sorted(p.relative_to(tmp_path) for p in sweep_dir.rglob("*") if p.is_file()) \
        if sweep_dir.exists() else []
    assert not [p for p in written if LOCK_DIR not in p.parts], written  # only the driver lock
    assert not list((hidden / "c").glob(".node-check-*"))  # the marker is gone
    print(f"refused in {took:.0f} s")
