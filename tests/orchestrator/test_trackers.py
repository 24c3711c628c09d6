"""search.loggers: the trackers through Ray Tune's own callbacks, on a real tiny sweep (real Ray,
a real MLflow SQLite store, real TensorBoard event files); Tune's own files only when asked."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.cluster import USAGE_STATS_ENV
from orchestrator.sweepfile import SpecError, load_spec
from orchestrator.trackers import MLFLOW_DB, trial_params

TINY = Path(__file__).with_name("tiny_sweep.yaml")


def test_loggers_default_to_none_and_are_checked() -> None:
    spec = load_spec(TINY)
    assert spec.search.loggers == () and spec.as_dict()["search"]["loggers"] == []
    assert load_spec(TINY, overrides=["search.loggers=[mlflow, tensorboard]"]).search.loggers == (
        "mlflow", "tensorboard")
    with pytest.raises(SpecError, match=r"search.loggers.0.*one of 'tensorboard', 'mlflow'"):
        load_spec(TINY, overrides=["search.loggers=[mlflowx]"])
    with pytest.raises(SpecError, match="each tracker once"):
        load_spec(TINY, overrides=["search.loggers=[wandb, wandb]"])


def test_trial_params_are_the_sampled_values_by_dotted_key() -> None:
    config = {"optuna:train.lr": 1e-3, "optuna:model.pooling": "max", "runtime": {"sweep": "x"},
              "train": {"epochs": 2}}
    assert trial_params(config) == {"train.lr": 1e-3, "model.pooling": "max"}


@pytest.mark.slow  # two tiny sweeps (2 trials with trackers, 1 without): ~90 s on 2 cores
@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed")
def test_mlflow_and_tensorboard_hold_each_trial_and_tune_files_only_when_asked(
        ray_local, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    import pandas as pd

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    common = [str(TINY), "--results", str(tmp_path), "--set", f"data.cache_dir={tmp_path / 'c'}"]
    assert cli.main([*common, "--trials", "2", "--set", "name=tracked",
                     "--set", "search.loggers=[mlflow, tensorboard]"]) == cli.EXIT_OK
    sweep_dir = tmp_path / "tracked"
    trials = pd.read_parquet(sweep_dir / "trials")

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{sweep_dir / MLFLOW_DB}")
    experiment = client.get_experiment_by_name("tracked")  # the sweep's name
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_name for run in runs) == sorted(trials.trial_id)
    for run in runs:
        row = trials.set_index("trial_id").loc[run.info.run_name]
        assert run.data.tags["sweep"] == "tracked"
        assert set(run.data.params) == {"train.lr", "model.pooling"}
        assert float(run.data.params["train.lr"]) == pytest.approx(row["param.train.lr"])
        history = client.get_metric_history(run.info.run_id, "val_uar_mean")
        assert [m.step for m in history] == [1, 2]  # one value per epoch
        assert run.info.status == "FINISHED"
    for trial_id in trials.trial_id:  # TensorBoard event files in each trial's Tune folder
        assert list(sweep_dir.glob(f"_tune/run-*/{trial_id}/events.out.tfevents.*"))

    assert cli.main([*common, "--trials", "1", "--set", "name=plain"]) == cli.EXIT_OK
    (plain,) = pd.read_parquet(tmp_path / "plain" / "trials").trial_id
    (folder,) = (tmp_path / "plain").glob(f"_tune/run-*/{plain}")
    tune_files = {p.name for p in folder.iterdir()}
    assert not tune_files & {"progress.csv", "result.json", "params.json", "params.pkl"}
    assert not any(name.startswith("events.out") for name in tune_files), tune_files
    assert not (tmp_path / "plain" / MLFLOW_DB).exists()
    # each trial keeps its latest checkpoint only (2 epochs, 2 checkpoints written)
    assert sorted(p.name for p in folder.glob("checkpoint_*")) == ["checkpoint_000001"]


def test_wandb_offline_logs_each_trial(ray_local, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    (tmp_path / "wandb").mkdir()
    assert cli.main([str(TINY), "--results", str(tmp_path), "--trials", "1",
                     "--set", f"data.cache_dir={tmp_path / 'c'}",
                     "--set", "search.loggers=[wandb]"]) == cli.EXIT_OK
    assert list((tmp_path / "wandb").rglob("offline-run-*"))


COUNT_CALLBACKS = """
import json, sys
from ray import tune
from ray.air._internal import usage  # what Tune's run() calls before every experiment
from orchestrator.cluster import usage_stats_off
from orchestrator.runner import build_tuner
usage_stats_off()  # as `sweep.py` (cli.main) and ray_init do
build_tuner(lambda config: None, param_space={}, search_alg=None, scheduler=None, num_samples=1,
            storage_path=sys.argv[1], max_failures=0, callbacks=[tune.Callback()])
usage.tag_callbacks([tune.Callback()])
print(json.dumps("mlflow" in sys.modules))
"""


@pytest.mark.parametrize(("exported", "imports_mlflow"), [(None, False), ("1", True)])
def test_usage_count_of_callbacks_imports_mlflow_only_with_usage_stats_on(
        tmp_path: Path, exported: str | None, imports_mlflow: bool) -> None:
    """Issue 25.3: by default a sweep turns Ray's usage statistics off (RAY_USAGE_STATS_ENABLED=0;
    the RAY_DISABLE_USAGE_STATS it set before is read by nothing) and its Tuner does not import
    mlflow (about 2 CPU-s of the driver) to count its callbacks for them; with the statistics
    exported on, Tune counts them as before."""
    if importlib.util.find_spec("mlflow") is None:
        pytest.skip("mlflow not installed: nothing to import")
    env = {key: value for key, value in os.environ.items() if key != USAGE_STATS_ENV}
    env.update({USAGE_STATS_ENV: exported} if exported else {},
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-c", COUNT_CALLBACKS, str(tmp_path)], env=env,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) is imports_mlflow
