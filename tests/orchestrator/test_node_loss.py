"""A worker node lost mid-trial: a REAL two-node Ray cluster on this machine (test_cluster.py's
RayCluster); the head has no CPUs (as on a cluster whose head only schedules), so the trial runs on
the worker node. After the trial's first epoch is reported, the worker node's whole process
session (raylet, its workers, `ray start`) is SIGKILLed; a replacement worker node joins. Tune
retries the trial (resources.max_failures) on the new node, restored from its last epoch
checkpoint (tune.report persists it under the sweep's _tune/ storage, a local path both nodes
reach on one machine). Checked: the sweep completes, the trial's row is written once, each
(member, epoch) is in the epochs table once, the member rows are complete, and the trial resumed
on the new node at the epoch after its checkpoint instead of starting over."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.orchestrator.test_cluster import ENV, REPO, RayCluster, _kill
from tests.reliability.drivers import session_pids

SPEC = Path(__file__).with_name("tiny_node_loss.yaml")  # 1 trial x 1 member x 5 epochs
EPOCHS, MEMBERS = 5, 1
pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RayCluster]:
    temp_root = tempfile.mkdtemp(prefix="rn", dir="/tmp")  # Ray's socket paths must stay short
    cluster = RayCluster(temp_root, tmp_path)
    try:
        # the head has 0 CPUs: trials need 1 CPU, so every trial runs on a worker node
        cluster.start_head(cpus=0, gpus=0, dashboard=False)
        cluster.add_worker(cpus=2, gpus=0)
        yield cluster
    finally:
        survivors = cluster.stop()
        shutil.rmtree(temp_root, ignore_errors=True)
        assert not survivors, f"processes of the test's Ray cluster survived: {survivors}"


def _reports(sweep_dir: Path) -> list[dict]:
    """Every result the trial reported, in order (Tune's result.json; appended across retries)."""
    (path,) = sweep_dir.glob("_tune/*/*/result.json")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _copied_reports(sweep_dir: Path) -> bool:
    """Whether Tune has copied a result.json holding at least one report into the sweep folder."""
    return any(path.read_text().strip() for path in sweep_dir.glob("_tune/*/*/result.json"))


def test_a_trial_on_a_lost_node_resumes_from_its_checkpoint_on_another_node(
    cluster: RayCluster, tmp_path: Path
) -> None:
    results, log = tmp_path / "r", tmp_path / "driver.log"
    sweep_dir = results / "tiny_node_loss"
    with open(log, "wb") as out:
        driver = subprocess.Popen(
            [sys.executable, "sweep.py", str(SPEC.relative_to(REPO)), "--results", str(results),
             "--set", f"data.cache_dir={tmp_path / 'c'}", "--address", cluster.address],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**ENV, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while f"1/{EPOCHS}" not in log.read_text() and driver.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        assert driver.poll() is None, log.read_text()[-3000:]
        # Tune copies result.json from the driver's staging folder at its next experiment
        # snapshot, a moment after the console's line: wait for the copy
        while not _copied_reports(sweep_dir) and driver.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        lost_node = json.loads(_reports(sweep_dir)[0]["runtime_json"])["node_id"]

        worker = cluster.nodes[1]
        _kill(session_pids(worker.pid))  # the node: raylet, object store, the trial's worker
        worker.wait(timeout=60)
        killed_at = len(_reports(sweep_dir))
        assert killed_at < EPOCHS, "the trial ended before its node was lost"
        cluster._start(f"--address={cluster.address}", gpus=0)  # the replacement node

        rc = driver.wait(timeout=600)
        output = log.read_text()
        assert rc == 0, output[-4000:]
    finally:
        _kill(session_pids(driver.pid))
        driver.wait(timeout=60)

    trials = pd.read_parquet(sweep_dir / "trials")
    epochs = pd.read_parquet(sweep_dir / "epochs")
    members = pd.read_parquet(sweep_dir / "members")
    assert len(trials) == 1 and trials.status.tolist() == ["completed"], trials.T
    (trial_id,) = trials.trial_id
    assert not epochs.duplicated(["trial_id", "member", "epoch"]).any(), "epochs duplicated"
    for _, rows in epochs.groupby("member"):
        assert sorted(rows.epoch) == list(range(1, EPOCHS + 1))
    assert len(epochs) == MEMBERS * EPOCHS and len(members) == MEMBERS
    assert set(epochs.trial_id) == set(members.trial_id) == {trial_id}
    assert members.test_uar.between(0, 1).all() and members.best_epoch.notna().all()

    # it finished on another node, resumed after its checkpoint: every epoch reported once,
    # in order (a restart from scratch would report epoch 1 again)
    reports = _reports(sweep_dir)
    reported = [r["epoch"] for r in reports]
    assert reported == list(range(1, EPOCHS + 1)), reported
    nodes = [json.loads(r["runtime_json"])["node_id"] for r in reports]
    assert nodes[0] == lost_node and nodes[-1] != lost_node, nodes
    assert trials.node_id.tolist() == [nodes[-1]]
    print(f"node lost after epoch {killed_at}; resumed at epoch {killed_at + 1} on {nodes[-1]}")
