"""#24: every trial row carries the planner's estimate (with or without a memory budget), the
number `sweep.py plan` prints for the same config, and says what its measured peak measures
(measured_peak_kind): the driver's TrialPlanner -> the trial's own plan step (trainable._plan,
which estimates a config the driver had nothing to decide for) -> a real LockstepTrainer on the
CPU -> the store's row (store/rows.py) -> its Arrow table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from orchestrator.planner import TrialPlanner, plan_configs
from orchestrator.store import schema
from orchestrator.store.rows import TrialBuffer, trial_rows
from orchestrator.sweepfile import load_spec
from trainables import names
from trainables.data import prepare_data
from trainables.errors import DoesNotFitError
from trainables.memory import plan_micro_batch
from trainables.train import LockstepTrainer
from trainables.trainable import _plan, failure_report

TINY = str(Path(__file__).parents[1] / "tiny_sweep.yaml")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    spec = load_spec(TINY, overrides=[f"data.cache_dir={tmp_path_factory.mktemp('cache')}"])
    return spec, prepare_data(dict(spec.data))


def _planned(spec, data, budget: int | None) -> dict:
    """The base config as the driver hands it to a trial (search.TrialSpace merges the plan)."""
    config = spec.base_config()
    config["runtime"] = {"metric": spec.search.metric, "mode": spec.search.mode,
                         "memory_budget": budget}
    planner = TrialPlanner(tuple(data.features.shape[1:]), data.n_features, data.n_classes,
                           len(data.folds), budget)
    for section, values in planner(config).items():
        config[section] = {**config.get(section, {}), **values}
    return config


def _row(config: dict, report: dict) -> dict:
    buffer = TrialBuffer(started_at=1_700_000_000.0)
    buffer.add(report)
    row, _, _ = trial_rows(trial_id="t", config=config, buffer=buffer, param_keys=[],
                           metric="val_uar", mode="max", status=None, error=None,
                           trial_gpus=0.0, ended_at=1_700_000_100.0)
    table = schema.to_table("trials", [{**row, schema.SWEEP: "tiny"}])
    return table.to_pylist()[0]


def _plan_row(spec, data, budget: int | None):
    resources = {**dict(spec.resources), "memory_budget": budget}
    (row,) = plan_configs([spec.base_config()], data_shape=tuple(data.features.shape[1:]),
                          n_features=data.n_features, n_classes=data.n_classes,
                          n_folds=len(data.folds), resources=resources)
    return row


def test_a_cpu_trial_without_budget_stores_the_estimate_plan_prints_and_its_peak_kind(
        tiny) -> None:
    spec, data = tiny
    config = _planned(spec, data, budget=None)
    assert config["train"]["micro_batch"] is None  # no budget: the logical batch runs as is
    config = _plan(config, data)  # what the trial does first (train_trial): it estimates
    trainer = LockstepTrainer(config, data, torch.device("cpu"))
    report = trainer.run_epoch()
    report[names.RUNTIME_JSON] = json.dumps(trainer.runtime_info())
    row = _row(config, report)
    planned = _plan_row(spec, data, None)  # what `sweep.py plan` prints for this config
    assert planned.micro_batch == row["micro_batch"] == spec.train["batch_size"]
    assert row["estimated_peak_bytes"] == planned.estimated_peak > 0
    assert row[names.MEASURED_PEAK_KIND] == names.PEAK_CPU_RSS  # not comparable: says so
    assert row["measured_peak_bytes"] > 0


def test_a_budget_plan_and_a_does_not_fit_trial_keep_the_estimate_in_their_rows(tiny) -> None:
    spec, data = tiny
    logical = int(spec.train["batch_size"])
    estimate = plan_micro_batch(spec.base_config(), data, 2**40).estimate
    budget = estimate.peak(logical // 2)  # half the batch fits: the estimate at that half
    config = _planned(spec, data, budget=budget)
    assert config["train"]["micro_batch"] == logical // 2
    assert (config["runtime"]["estimated_peak_bytes"] == estimate.peak(logical // 2)
            == _plan_row(spec, data, budget).estimated_peak)
    # a budget below micro-batch 1: the trial fails before its first epoch (does_not_fit) and
    # its row still carries the estimate, at micro-batch 1 as `plan` shows it
    tiny_budget = 1024
    config = _planned(spec, data, budget=tiny_budget)
    assert config["train"]["micro_batch"] is None
    with pytest.raises(DoesNotFitError) as failed:
        _plan(config, data)
    report = failure_report(failed.value, {names.RUNTIME_JSON: json.dumps({"host": "h"})},
                            "val_uar")
    row = _row(config, report)
    assert row["status"] == schema.DOES_NOT_FIT
    unfit = _plan_row(spec, data, tiny_budget)
    assert not unfit.fits and row["estimated_peak_bytes"] == unfit.estimated_peak > tiny_budget
    assert row["measured_peak_bytes"] is None and row[names.MEASURED_PEAK_KIND] is None
