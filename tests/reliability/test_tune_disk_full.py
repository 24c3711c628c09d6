"""A full disk in Ray Tune's checkpoint folder (results/<sweep>/_tune, ~85 % of a sweep's bytes,
the first to fill): the run ends with one line and exit 2, not Tune's traceback (issue 23.5).

A real full disk: a 48 KiB tmpfs mounted on the sweep's _tune folder (root and mount(8) needed;
skipped otherwise), a real sweep (Ray local, Tune, Optuna, Parquet) writing into it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.reliability.drivers import (
    REPO,
    driver_env,
    skip_if_a_cluster_would_be_joined,
    tiny_args,
)

SWEEP = "tiny_rel"


@pytest.fixture
def full_tune_folder(tmp_path: Path):
    tune = tmp_path / "results" / SWEEP / "_tune"
    tune.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(tune)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield tune
    finally:
        subprocess.run(["umount", str(tune)], check=False)


@pytest.mark.slow
def test_a_full_tune_checkpoint_disk_ends_in_one_line_exit_2(
    full_tune_folder: Path, tmp_path: Path, data_cache: Path
) -> None:
    skip_if_a_cluster_would_be_joined()
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "sweep.py", *tiny_args(results, data_cache, "--trials", "2")],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=driver_env())
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and "the disk is full" in lines[0], proc.stderr[-3000:]
    assert str(full_tune_folder) in lines[0]
    assert "Traceback (most recent call last)" not in proc.stderr.split(lines[0])[-1]
    # what the store recorded reads back (no half-written file among the trials)
    for table in ("trials", "epochs", "members"):
        for path in (results / SWEEP / table).glob("*.parquet"):
            pd.read_parquet(path)
    # a trial Tune could not checkpoint did not fail: it is not recorded (failed, ENOSPC) but
    # left to the same command once there is space
    for path in (results / SWEEP / "trials").glob("*.parquet"):
        errors = pd.read_parquet(path)["error"].fillna("")
        assert not errors.str.contains("No space left|Errno 28").any(), errors.tolist()
