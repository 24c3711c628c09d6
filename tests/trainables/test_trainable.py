"""train_trial under a real local Ray Tune: reports, checkpoints, and resume after a crash."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ray import cloudpickle, tune
from torch import nn

from trainables import memory, names
from trainables.config import TRAIN_DEFAULTS, with_defaults
from trainables.data.base import Fold, PreparedData
from trainables.models import MODELS
from trainables.train import LockstepTrainer
from trainables.trainable import CHECKPOINT_FILE, _plan, train_trial

CPU = torch.device("cpu")
# Ray workers cannot import this test module: ship its functions and classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class CrashOnceNet(nn.Module):
    """Masked-mean MLP; the first model to pass `crash_after` training forwards while
    `crash_marker` does not exist creates it and raises (a process dying mid-trial)."""

    INPUTS = ("logmel",)

    def __init__(self, *, n_classes: int, n_features: int, dropout: float = 0.2,
                 crash_marker: str = "", crash_after: int = 0) -> None:
        super().__init__()
        self.proj = nn.Linear(n_features, 8)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(8, n_classes)
        self.crash_marker, self.crash_after, self.calls = crash_marker, crash_after, 0

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, return_hidden: bool = False):
        if self.training:
            self.calls += 1
            marker = Path(self.crash_marker) if self.crash_marker else None
            if marker and self.calls > self.crash_after and not marker.exists():
                marker.touch()
                raise RuntimeError("injected crash")
        mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).float()[..., None]
        h = (torch.tanh(self.proj(x)) * mask).sum(1) / mask.sum(1)
        return self.out(self.drop(h))


@pytest.fixture(autouse=True)
def test_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS, "crash_once", CrashOnceNet)


def tiny_data(n: int = 96) -> PreparedData:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 4
    lengths = torch.randint(5, 11, (n,), generator=g)
    x = torch.randn(n, 10, 6, generator=g) + labels[:, None, None] * 0.7
    x = x * (torch.arange(10)[None, :, None] < lengths[:, None, None])
    parts = np.array_split(torch.randperm(n, generator=g).numpy(), 6)
    folds = [Fold(f"fold{k}", np.concatenate([parts[(k + j) % 6] for j in range(4)]),
                  parts[(k + 4) % 6], parts[(k + 5) % 6]) for k in range(2)]
    return PreparedData(features=x, lengths=lengths, labels=labels, classes=list("nhsa"),
                        ids=[str(i) for i in range(n)], speakers=["s"] * n, sessions=["1"] * n,
                        folds=folds, feature_kind="logmel", frame_rate=100.0)


def trial_with_test_model(config: dict, data: PreparedData | None = None) -> None:
    """The production trainable, in a worker that also knows the test model."""
    # imported here: a module-level MODELS would be shipped by value, a copy of the registry
    from trainables.models import MODELS as registry

    registry["crash_once"] = CrashOnceNet
    train_trial(config, data=data)


def config(marker: Path, lr: object = 1e-2) -> dict:
    train = {"epochs": 3, "batch_size": 16, "lr": lr, "seeds": [0], "amp": "off",
             "device": "auto", "rebalance": True}
    return {"data": {}, "model": {"name": "crash_once", "crash_marker": str(marker),
                                  "crash_after": 8},  # 4 steps/epoch: crash in epoch 3
            "train": with_defaults(train, TRAIN_DEFAULTS),
            "runtime": {"metric": "val_uar", "mode": "max"}}


def comparable(report: dict) -> dict:
    """The report without wall-clock seconds, runtime info and DONE (= Ray's own "done" key,
    which Ray overwrites)."""
    rows = json.loads(report[names.MEMBER_ROWS_JSON])
    skip = (names.MEMBER_ROWS_JSON, names.RUNTIME_JSON, names.DONE)
    return {k: v for k, v in report.items() if k not in skip} | {
        "rows": [{k: v for k, v in r.items() if k != "seconds"} for r in rows]}


def run_tuner(tmp_path: Path, data: PreparedData, param_space: dict, **run) -> tune.ResultGrid:
    tuner = tune.Tuner(
        tune.with_parameters(trial_with_test_model, data=data),
        param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(name="t", storage_path=str(tmp_path / "ray"), verbose=0, **run),
    )
    return tuner.fit()


@pytest.mark.slow  # 11 s on an idle 2-core machine (Ray start + 2 trial actors), 25 s loaded
def test_tuner_reports_and_checkpoints_restore(ray_local, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Tune's own loggers (metrics_dataframe reads their files): a sweep in this process turns
    # them off for the whole process (orchestrator/trackers.py: TUNE_FILES_ENV)
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
    data = tiny_data()
    space = config(tmp_path / "never", lr=tune.grid_search([1e-2, 3e-3]))
    space["model"]["crash_after"] = 10**9
    results = run_tuner(tmp_path, data, space, stop={names.EPOCH: 2})
    assert not results.errors and len(results) == 2
    for result in results:
        assert result.metrics_dataframe[names.EPOCH].tolist() == [1, 2]
        final = result.metrics
        for key in (names.OBJECTIVE, names.MEMBERS_ACTIVE, names.MEMBERS_COLLAPSED, "val_uar_mean",
                    "val_uar_std", "train_loss_mean", "val_f1_macro_mean", names.DONE):
            assert key in final, key
        # names.DONE ("done") is also Ray's own result key: Ray sets it True on the last result
        assert len(json.loads(final[names.MEMBER_RESULTS_JSON])) == 2  # 2 folds x 1 seed
        runtime = json.loads(final[names.RUNTIME_JSON])
        assert runtime["device"] == "cpu" and runtime["gpu_ids"] == []
        assert runtime["gpu_fraction"] == 0.0
        assert runtime["micro_batch"] == 16 and runtime["oom_retries"] == 0
        assert runtime["host"] and runtime["node_id"]
        # the trial's epoch-2 checkpoint continues to the epoch 3 of an uninterrupted run
        local = LockstepTrainer(result.config, data, CPU)
        want = [comparable(local.run_epoch()) for _ in range(3)]
        assert {k: v for k, v in comparable(final).items() if k in want[1]} == want[1]
        with result.checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / CHECKPOINT_FILE, weights_only=True)
        resumed = LockstepTrainer(result.config, data, CPU)
        resumed.load_state_dict(state)
        assert resumed.epoch == 2
        assert comparable(resumed.run_epoch()) == want[2]


class EpochLog(tune.Callback):
    """The epochs each trial reported, as the driver saw them (not Tune's result files, whose
    rewrite after a restore depends on timing)."""

    def __init__(self) -> None:
        self.epochs: dict[str, list[int]] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.epochs.setdefault(trial.trial_id, []).append(result[names.EPOCH])


@pytest.mark.slow
def test_a_crashed_trial_resumes_from_its_last_checkpoint(ray_local, tmp_path: Path) -> None:
    data = tiny_data()
    marker = tmp_path / "crashed"
    log = EpochLog()
    results = run_tuner(tmp_path, data, config(marker, lr=tune.grid_search([1e-2, 3e-3])),
                        failure_config=tune.FailureConfig(max_failures=1), callbacks=[log])
    assert not results.errors and len(results) == 2
    assert marker.exists()  # one trial crashed in epoch 3 ...
    # ... and resumed from its epoch-2 checkpoint instead of starting over (1, 2, 1, 2, 3)
    assert sorted(log.epochs.values()) == [[1, 2, 3], [1, 2, 3]]
    for result in results:
        assert result.metrics[names.DONE] and result.metrics[names.MEMBERS_ACTIVE] == 0
        local = LockstepTrainer(result.config, data, CPU)
        want = [comparable(local.run_epoch()) for _ in range(3)][2]
        assert {k: v for k, v in comparable(result.metrics).items() if k in want} == want


def test_memory_budget_uses_the_planner() -> None:
    cfg = config(Path("unused"))
    cfg["runtime"]["memory_budget"] = 2**30
    data = tiny_data()
    planned = _plan(cfg, data)
    plan = memory.plan_micro_batch(cfg, data, 2**30)
    assert planned["train"]["micro_batch"] == plan.micro_batch
    assert planned["runtime"]["estimated_peak_bytes"] == plan.estimated_peak
    assert cfg["train"]["micro_batch"] is None  # the caller's config is left alone
