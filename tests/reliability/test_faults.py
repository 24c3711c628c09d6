"""Trials that fail do not stop a sweep: a trial that raises (a sampled combination the model
constructor rejects), one whose loss goes non-finite, and one that does not fit its memory budget
at batch 1 are each recorded with their status and error text; the sweep reaches its trial
count and exits 1; Optuna is told the trial FAILED (objective null in the store, re-added as FAIL
to the study a resumed run builds), never given a fake score."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from orchestrator import query
from orchestrator.search import study_with_history
from orchestrator.store import ResultStore
from orchestrator.sweepfile import load_spec
from tests.reliability.drivers import (
    Driver,
    describe,
    skip_if_a_cluster_would_be_joined,
    tiny_args,
)

pytestmark = pytest.mark.slow

# Grid over 2 x 2 values, 4 trials: each combination exactly once.
#   lr=1e30: the weights overflow after one step -> non-finite loss -> TrainingError (2 trials);
#   lr=1e-3: trains normally (2 trials).
# (A constructor conflict such as heads=3 with d_model=32 no longer reaches a trial: the spec
# refuses it before Ray starts, test_a_constructor_conflict_is_refused_before_ray_starts.)
FAULTY = """\
name: faulty
data: {corpus: synthetic, synthetic_utterances: 80, features: logmel, n_mels: 32,
       max_seconds: 2.0, downsample: 4, use_folds: 1}
model: {name: transformer, layers: 1, d_model: 32, heads: 2, ff_dim: 32, head_hidden: [32]}
train: {epochs: 2, batch_size: 16, seeds: [0]}
search:
  metric: val_uar
  mode: max
  sampler: grid
  trials: 4
  max_concurrent: 1
  scheduler: {type: none}
  params:
    model.pooling: {choice: [max, mean]}
    train.lr: {choice: [1.0e-3, 1.0e+30]}
resources: {cpus_per_trial: 1, gpus_per_trial: 0, max_failures: 0}
"""


def _run(space: Path, results: Path, cache: Path, log: Path, *extra: str) -> tuple[int, str]:
    driver = Driver(tiny_args(results, cache, *extra, space=space), log)
    try:
        rc = driver.wait(timeout=300)
        leftover = driver.leftovers(30)
        assert leftover == [], f"left running after a normal exit: {describe(leftover)}"
        return rc, driver.output()
    finally:
        driver.cleanup()


def _assert_told_optuna_failed(space: Path, results: Path, sweep: str, failed: set[str]):
    """The study a resumed run builds from the store holds the failed trials as FAIL, no value."""
    spec = load_spec(space)
    storage, _, recorded = study_with_history(spec, ResultStore(str(results), sweep))
    study = optuna.load_study(study_name=spec.name, storage=storage)
    assert recorded == len(study.trials)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == len(failed)
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.FAIL:
            assert trial.value is None
    return study


def test_raising_and_nan_trials_are_recorded_failed_and_the_sweep_goes_on(
    tmp_path: Path, data_cache: Path
) -> None:
    skip_if_a_cluster_would_be_joined()
    space = tmp_path / "faulty.yaml"
    space.write_text(FAULTY)
    results = tmp_path / "results"
    rc, out = _run(space, results, data_cache, tmp_path / "driver.log")
    assert rc == 1, out[-3000:]  # the sweep ran, trials failed
    trials = query.load(str(results / "faulty")).trials
    assert len(trials) == 4, trials[["trial_id", "status", "error"]]  # reached its count
    trials["lr"] = trials["param.train.lr"].astype(float)
    nan = trials[trials["lr"] > 1]
    assert len(nan) == 2 and set(nan["status"]) == {"failed"}, nan[["status", "error"]]
    for error in nan["error"]:
        assert "non-finite loss" in error and "\n" not in error, error  # one line
    ok = trials[trials["lr"] < 1]
    assert len(ok) == 2 and set(ok["status"]) == {"completed"} and ok["error"].isna().all()
    assert ok["objective"].notna().all()
    failed = trials[trials["status"] == "failed"]
    assert failed["objective"].isna().all(), failed["objective"]  # no fake score
    assert "2 failed" in out
    _assert_told_optuna_failed(space, results, "faulty", set(failed["trial_id"]))


def test_a_constructor_conflict_is_refused_before_ray_starts(
    tmp_path: Path, data_cache: Path
) -> None:
    space = tmp_path / "faulty.yaml"
    space.write_text(FAULTY.replace("model.pooling: {choice: [max, mean]}",
                                    "model.heads: {choice: [2, 3]}"))
    results = tmp_path / "results"
    rc, out = _run(space, results, data_cache, tmp_path / "driver.log")
    assert rc == 2, out[-3000:]
    assert "model.heads" in out and "d_model % heads == 0" in out, out[-3000:]
    assert not (results / "faulty").exists() or not any((results / "faulty").rglob("*.parquet"))


def test_trials_that_do_not_fit_the_memory_budget_are_recorded_does_not_fit(
    tmp_path: Path, data_cache: Path
) -> None:
    skip_if_a_cluster_would_be_joined()
    space = Path(__file__).parent / "tiny.yaml"
    results = tmp_path / "results"
    rc, out = _run(space, results, data_cache, tmp_path / "driver.log", "--trials", "2",
                   "--set", "resources.memory_budget=1KB", "--set", "resources.max_failures=0")
    assert rc == 1, out[-3000:]
    trials = query.load(str(results / "tiny_rel")).trials
    assert len(trials) == 2
    assert set(trials["status"]) == {"does_not_fit"}, trials[["status", "error"]]
    for error in trials["error"]:
        assert "DoesNotFitError" in error and "1000" in error.replace(",", ""), error
    assert trials["objective"].isna().all()
    assert "2 failed" in out
    # the resumed study gets them as FAIL (with the overrides the sweep ran with)
    spec = load_spec(space, overrides=["resources.memory_budget=1KB"], trials=2)
    storage, _, recorded = study_with_history(spec, ResultStore(str(results), "tiny_rel"))
    study = optuna.load_study(study_name=spec.name, storage=storage)
    assert recorded == 2
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
