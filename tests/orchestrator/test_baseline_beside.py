"""The reference baseline computed beside the first trials (orchestrator/baseline_run.py:
start_sweep_baseline): the trials do not wait for it, and baseline.parquet is written, with the
rows the foreground path writes, before the sweep's leaderboard reads it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from orchestrator import cli
from orchestrator.baseline_run import start_sweep_baseline, write_sweep_baseline
from orchestrator.store.baseline_table import read_baseline
from orchestrator.sweepfile import load_spec
from trainables.data import prepare_data

TINY = str(Path(__file__).with_name("tiny_sweep.yaml"))


def test_started_in_the_background_written_on_wait(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = load_spec(TINY, overrides=[f"data.cache_dir={tmp_path / 'cache'}",
                                      "search.baseline=true"])
    data = prepare_data(spec.base_config()["data"])
    beside = tmp_path / "beside"
    capsys.readouterr()
    run = start_sweep_baseline(spec, str(beside), data)
    # a newcomer is told at once that it runs (its result comes only before the leaderboard)
    assert capsys.readouterr().out == ("baseline: the eGeMAPS reference runs beside the trials; "
                                       "its result comes before the leaderboard\n")
    # returned at once: openSMILE on 80 utterances takes seconds, nothing is written yet
    assert not (beside / "baseline.parquet").exists()
    run.wait()
    assert (beside / "baseline.parquet").is_file()
    # the foreground path (`sweep.py baseline`) writes the same rows (from the cache now)
    _, frame = write_sweep_baseline(spec, str(tmp_path / "front"), data, None)
    assert frame.attrs["cache"] == "hit"
    pd.testing.assert_frame_equal(read_baseline(beside), read_baseline(tmp_path / "front"))


def test_an_interrupted_sweep_stops_its_baseline_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Ctrl-C does not reach the baseline's workers (a session of their own, below the trials):
    the interrupted sweep stops them, rather than waiting for the whole extraction."""
    spec = load_spec(TINY, overrides=[f"data.cache_dir={tmp_path / 'cache'}",
                                      "search.baseline=true"])
    data = prepare_data(spec.base_config()["data"])
    run = start_sweep_baseline(spec, str(tmp_path / "beside"), data)
    capsys.readouterr()
    run.wait(interrupted=True)
    assert capsys.readouterr().out == ("baseline: stopped with the sweep; `sweep.py baseline` "
                                       "computes it\n")
    assert not (tmp_path / "beside" / "baseline.parquet").exists()
    _, frame = write_sweep_baseline(spec, str(tmp_path / "front"), data, None)
    assert frame.attrs["functionals_cache"] == "miss"  # nothing half-computed was kept


@pytest.mark.slow
def test_a_cold_sweep_starts_trials_before_the_baseline_ends(
    ray_local, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = [TINY, "--results", str(tmp_path), "--set", f"data.cache_dir={tmp_path / 'cache'}",
            "--set", "search.baseline=true", "--set", "data.synthetic_utterances=800",
            "--set", "search.trials=2"]
    assert cli.main(args) == cli.EXIT_OK
    out = capsys.readouterr().out
    sweep_dir = tmp_path / "tiny"
    written = pd.Timestamp((sweep_dir / "baseline.parquet").stat().st_mtime, unit="s", tz="UTC")
    trials = pd.read_parquet(sweep_dir / "trials")
    # openSMILE over 800 utterances outlasts a Tuner's start: the first trial did not wait for it
    assert trials["started_at"].min() < written
    assert "baseline" in out.split("rank")[-1]  # the leaderboard read it: its reference row
