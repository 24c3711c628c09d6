"""The Ray Tune function trainable: config dict -> TrialConfig (built once, trial_config.py) ->
LockstepTrainer -> tune.report, once per epoch.

Used as `tune.with_parameters(train_trial, data=prepared)` so the PreparedData travels through the
object store once. Every epoch reports the trainer's report (trainables.names) plus RUNTIME_JSON,
with a checkpoint: a directory holding `trainer.pt` (torch.save of LockstepTrainer.state_dict()).
A trial that fails deterministically reports `failure_report` (names.ERROR_REASON) and returns.
The only module of trainables/ that imports Ray.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from trainables.data import prepare_data, prepared_key
from trainables.data.base import PreparedData
from trainables.errors import SersweepError
from trainables.memory import estimate_as_run, plan_micro_batch
from trainables.names import (
    CHECKPOINT_FILE,
    DONE,
    EPOCH,
    ERROR_REASON,
    ERROR_TRACEBACK,
    MEMBER_RESULTS_JSON,
    OBJECTIVE,
    RACE_EPOCH,
    RACED_OUT,
    RUNTIME_JSON,
    VAL_UAR,
    mean_key,
)
from trainables.train import LockstepTrainer, resolve_device
from trainables.trial_config import TrialConfig, as_trial_config

__all__ = ["CHECKPOINT_FILE", "failure_report", "train_trial"]
log = logging.getLogger(__name__)


def _plan(config: TrialConfig | Mapping[str, Any], data: PreparedData) -> TrialConfig:
    """The micro-batch: the one in the config (the driver's plan, orchestrator/planner.py
    TrialPlanner, or the sweep file's train.micro_batch) is used as is; only a config that
    arrives without one, with a budget, is planned here (e.g. a batch of 1 that does not fit:
    plan_micro_batch raises DoesNotFitError and the trial is recorded as does_not_fit). A
    config without any estimate (no budget, no GPU) gets one here, for its row."""
    config = as_trial_config(config)  # the trial's own, passed through; a dict (tests) built
    budget = config.runtime.get("memory_budget")
    if not budget or config.train.micro_batch is not None:
        if config.runtime.get("estimated_peak_bytes") is not None:
            return config
        # no plan on the driver (a CPU trial without a budget: the driver's event loop is not
        # held up for a number nothing decides on): the estimate that `plan` prints, stored
        return config.updated(
            {"runtime": {"estimated_peak_bytes": estimate_as_run(config, data)}})
    plan = plan_micro_batch(config, data, int(budget))
    return config.updated({"train": {"micro_batch": int(plan.micro_batch)},
                           "runtime": {"estimated_peak_bytes": int(plan.estimated_peak),
                                       "planned_accumulation": int(plan.accumulation)}})


def _prepare(data: PreparedData | Mapping[str, PreparedData] | None,
             config: TrialConfig) -> PreparedData:
    if isinstance(data, Mapping):  # the sweep searches data.* choices: one PreparedData each
        return data[prepared_key(config.data.as_dict())]
    if data is not None:
        return data
    # without tune.with_parameters(data=...): featurize here (the data layer caches it on disk)
    return prepare_data(config.data.as_dict())


def _where() -> dict[str, Any]:
    """Where the trial runs: host, Ray node, the GPUs Ray assigned (recorded in its row)."""
    context = ray.get_runtime_context()
    return {
        "host": socket.gethostname(),
        "node_id": context.get_node_id(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "gpu_fraction": float(context.get_assigned_resources().get("GPU", 0.0)),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def failure_report(exc: BaseException, last: dict[str, Any], metric: str) -> dict[str, Any]:
    """The last report of a trial that failed with `exc`: its reason on one line (`Type:
    message`), the plain-text traceback, the metrics Tune's scheduler and searcher expect set to
    NaN (no score), and the context of the last epoch reported (`last`: epoch, members, where)."""
    report = {key: last[key] for key in (EPOCH, MEMBER_RESULTS_JSON, RUNTIME_JSON) if key in last}
    report.setdefault(EPOCH, 0)
    if RUNTIME_JSON not in report:  # failed before its first epoch
        report[RUNTIME_JSON] = json.dumps(_where())
    report.update({
        OBJECTIVE: float("nan"),
        mean_key(metric): float("nan"),
        DONE: False,
        ERROR_REASON: f"{type(exc).__name__}: {' '.join(str(exc).split())}",
        ERROR_TRACEBACK: "".join(traceback.format_exception(exc)),
    })
    return report


def train_trial(config: dict[str, Any],
                data: PreparedData | Mapping[str, PreparedData] | None = None,
                race: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None) -> None:
    """Train one trial's members, reporting and checkpointing every epoch; resume from
    tune.get_checkpoint() at the epoch after the checkpointed one.

    A SersweepError (bad config, non-finite loss, does not fit) fails the same way on every
    retry, so it is not raised: it becomes the trial's last report (failure_report) and Tune
    sees the trial end, recorded once. Anything else raises, and Tune's FailureConfig retries it
    from the last checkpoint, like a worker or node lost.

    Racing over folds (`runtime.racing` in the config, `race` the driver's judge:
    orchestrator/racing.py: keep_racing): the members are trained stage by stage (`_stages`), and
    after each stage but the last `race(config, report)` says whether to go on; a trial that
    lost ends with names.RACED_OUT (the number of test sets it trained) in its last report.
    """
    last: dict[str, Any] = {}
    try:
        # the one conversion of the trial's dict: defaults filled and checked, frozen
        trial = TrialConfig.from_dict(config)
        for trainer, report in _epochs(trial, data, race):
            with tempfile.TemporaryDirectory() as directory:
                torch.save(trainer.state_dict(), Path(directory) / CHECKPOINT_FILE)
                # report() persists the checkpoint to the run's storage before returning
                tune.report(report, checkpoint=tune.Checkpoint.from_directory(directory))
            last = report
    except SersweepError as exc:
        metric = config.get("runtime", {}).get("metric", VAL_UAR)
        tune.report(failure_report(exc, last, metric))


def _stages(trainer: LockstepTrainer, racing: Mapping[str, Any] | None) -> list[list[int]]:
    """Member indices per racing stage: every seed of the first `racing.first` test sets (folds),
    then of one more test set per stage; one stage of every member when not racing."""
    folds = list(dict.fromkeys(m.fold.name for m in trainer.members))
    if not racing:
        return [[m.index for m in trainer.members]]
    first = max(1, int(racing["first"]))
    groups = [folds[:first]] + [[fold] for fold in folds[first:]]
    return [[m.index for m in trainer.members if m.fold.name in group] for group in groups]


def _epochs(
    config: TrialConfig, data: PreparedData | Mapping[str, PreparedData] | None,
    race: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None,
) -> Iterator[tuple[LockstepTrainer, dict[str, Any]]]:
    """Build (or restore) the trial's trainer and yield it with each epoch's report."""
    data = _prepare(data, config)
    config = _plan(config, data)
    # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPUs, so "cuda" is the assigned one (cuda:0)
    device = resolve_device(config.train.device)
    trainer = LockstepTrainer(config, data, device)

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu",
                               weights_only=True)
        trainer.load_state_dict(state)
        log.info("restored trial at epoch %d", trainer.epoch)

    where = _where()
    if where["gpu_ids"] and device.type != "cuda":
        # recorded too: the trial's row holds device "cpu" beside the GPU ids Ray assigned
        log.warning(
            "Ray assigned GPU %s but torch finds no CUDA device: training on %s",
            ",".join(where["gpu_ids"]),
            device,
        )
    racing = config.runtime.get("racing")
    stages = _stages(trainer, racing)
    if len(stages) > 1 and trainer.training is None:  # a fresh racing trial: its first stage
        trainer.start_stage(0, stages[0])
    while True:
        while not trainer.finished:
            report = trainer.run_epoch()
            report[RUNTIME_JSON] = json.dumps(trainer.runtime_info() | where)
            if racing:
                if trainer.stage == 0:  # what ASHA counts when racing (names.RACE_EPOCH)
                    report[RACE_EPOCH] = trainer.epoch
                if trainer.finished and trainer.stage < len(stages) - 1:
                    report[DONE] = False  # more test sets to come
                    if race is not None and not race(config.as_dict(), report):
                        done = {m.fold.name for m in trainer.members if m.history}
                        report[RACED_OUT] = len(done)
                        yield trainer, report
                        return
            yield trainer, report
        if trainer.stage >= len(stages) - 1:
            return
        trainer.start_stage(trainer.stage + 1, stages[trainer.stage + 1])
