"""search.loggers: the trackers through Ray Tune's own callbacks, on a real tiny sweep (real Ray,
a real MLflow SQLite store, real TensorBoard event files); Tune's own files only when asked."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from orchestrator import cli
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
