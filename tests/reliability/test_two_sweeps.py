"""Two sweeps (different names) writing into one results root at the same time: both complete,
neither touches a file of the other, and query.load(root) sees both."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator import query
from tests.reliability.drivers import (
    Driver,
    assert_store_consistent,
    describe,
    skip_if_a_cluster_would_be_joined,
    tiny_args,
)

pytestmark = pytest.mark.slow
TRIALS = 3


def _files(sweep_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file under a sweep dir (results and Tune's checkpoints): size and mtime."""
    return {
        str(p.relative_to(sweep_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sweep_dir.rglob("*")
        if p.is_file()
    }


def test_two_concurrent_sweeps_share_a_results_root(tmp_path: Path, data_cache: Path) -> None:
    skip_if_a_cluster_would_be_joined()
    root = tmp_path / "results"
    names = ("alpha", "beta")
    drivers = {
        name: Driver(
            tiny_args(root, data_cache, "--trials", str(TRIALS), "--set", f"name={name}",
                      "--set", "search.max_concurrent=1"),
            tmp_path / f"{name}.log",
        )
        for name in names
    }
    try:
        snapshots: dict[str, dict] = {}
        # snapshot each sweep's files the moment its own driver exits: the other may still run
        deadline = time.monotonic() + 400
        while len(snapshots) < len(names):
            for name, driver in drivers.items():
                if name not in snapshots and not driver.running():
                    snapshots[name] = _files(root / name)
            assert time.monotonic() < deadline, {n: d.output()[-2000:] for n, d in
                                                 drivers.items()}
            time.sleep(0.2)
        for name, driver in drivers.items():
            assert driver.proc.returncode == 0, driver.output()[-3000:]
            leftover = driver.leftovers(30)
            assert leftover == [], f"{name} left running: {describe(leftover)}"
        for name in names:
            assert _files(root / name) == snapshots[name], f"a file of {name} changed later"
            results = assert_store_consistent(root / name, TRIALS)
            ids = set(results.trials["trial_id"])
            assert set(results.trials["sweep"]) == {name}
            for table in ("trials", "epochs", "members"):  # every result file is this sweep's
                assert {p.stem for p in (root / name / table).iterdir()} <= ids
        ids = {n: set(query.load(str(root / n)).trials["trial_id"]) for n in names}
        assert not ids["alpha"] & ids["beta"]
        both = query.load(str(root))
        assert sorted(both.sweeps) == sorted(names)
        assert both.trials.groupby("sweep")["trial_id"].nunique().to_dict() == {
            n: TRIALS for n in names}
        assert set(both.epochs["sweep"]) == set(names) == set(both.members["sweep"])
    finally:
        for driver in drivers.values():
            driver.cleanup()
