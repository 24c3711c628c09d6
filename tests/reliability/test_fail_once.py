"""A trial that fails deterministically (non-finite loss) is recorded once, not retried by
FailureConfig: one attempt, a one-line reason, a plain-text traceback; the console prints one
line for it; the Optuna journal holds it as FAIL beside the completed trial."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest

from orchestrator import query
from orchestrator.store.journal import JOURNAL_FILE, open_journal
from tests.reliability.drivers import (
    Driver,
    describe,
    skip_if_a_cluster_would_be_joined,
    tiny_args,
)

pytestmark = pytest.mark.slow

# lr 1e30: the weights overflow after one step -> non-finite loss -> TrainingError; 1e-3 trains.
NAN_LR = """\
name: nan_lr
data: {corpus: synthetic, synthetic_utterances: 80, features: logmel, n_mels: 32,
       max_seconds: 2.0, downsample: 4, use_folds: 1}
model: {name: transformer, layers: 1, d_model: 32, heads: 2, ff_dim: 32, head_hidden: [32]}
train: {epochs: 2, batch_size: 16, seeds: [0]}
search:
  metric: val_uar
  mode: max
  sampler: grid
  trials: 2
  max_concurrent: 1
  scheduler: {type: none}
  params:
    train.lr: {choice: [1.0e-3, 1.0e+30]}
resources: {cpus_per_trial: 1, gpus_per_trial: 0, max_failures: 2}
"""


def test_a_nan_trial_is_recorded_once_with_a_one_line_reason(
    tmp_path: Path, data_cache: Path
) -> None:
    skip_if_a_cluster_would_be_joined()
    space = tmp_path / "nan_lr.yaml"
    space.write_text(NAN_LR)
    results = tmp_path / "results"
    driver = Driver(tiny_args(results, data_cache, space=space), tmp_path / "driver.log")
    try:
        rc = driver.wait(timeout=300)
        out = driver.output()
        leftover = driver.leftovers(30)
        assert leftover == [], describe(leftover)
    finally:
        driver.cleanup()
    assert rc == 1, out[-3000:]
    sweep_dir = results / "nan_lr"
    trials = query.load(str(sweep_dir)).trials
    assert len(trials) == 2
    failed = trials[trials["param.train.lr"].astype(float) > 1].iloc[0]
    assert failed["status"] == "failed" and pd.isna(failed["objective"])
    reason = failed["error"]
    assert reason.startswith("TrainingError: ") and "non-finite loss" in reason, reason
    assert "\n" not in reason and "\x1b" not in reason
    traceback_text = failed["error_traceback"]
    assert traceback_text.startswith("Traceback (most recent call last)"), traceback_text
    assert "TrainingError" in traceback_text and "\x1b" not in traceback_text
    # one attempt: Tune saw no failure (no error file, no retry); Tune's own result.json is
    # not written unless search.loggers asks for Tune's files (orchestrator/trackers.py)
    trial_dirs = list(sweep_dir.glob(f"_tune/run-*/{failed['trial_id']}"))
    assert len(trial_dirs) == 1 and not list(trial_dirs[0].glob("error*"))
    ends = [line for line in out.splitlines()
            if line.startswith("FAIL") and f"{failed['trial_id']} failed" in line]
    assert "retry  " not in out and len(ends) == 1, out  # one end line (the table lists it too)
    assert "Traceback" not in out, out[-3000:]  # one line, not the traceback
    ok = trials[trials["param.train.lr"].astype(float) < 1].iloc[0]
    assert ok["status"] == "completed" and pd.isna(ok["error"]) and pd.isna(ok["error_traceback"])
    study = optuna.load_study(study_name="nan_lr", storage=open_journal(sweep_dir / JOURNAL_FILE))
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "FAIL"]
    assert [t.value for t in study.trials if t.state.name == "COMPLETE"] == pytest.approx(
        [ok["objective"]])
