"""A real small sweep through the command line: real Ray, real Optuna, real Parquet; and the
refusal and the memory budget, which need no Ray, on their own path without it."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import optuna
import pandas as pd
import pytest
import torch

from orchestrator import cli, query
from orchestrator.planner import TrialPlanner, trial_budget_bytes
from orchestrator.runner import check_same_sweep
from orchestrator.search import TrialSpace
from orchestrator.store import ResultStore, schema, write_spec
from orchestrator.sweepfile import load_spec
from trainables import names
from trainables.data import prepare_data
from trainables.memory import plan_micro_batch
from trainables.train import LockstepTrainer

TINY = str(Path(__file__).with_name("tiny_sweep.yaml"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


def _sweep(results: Path, cache_dir: str, *extra: str) -> int:
    args = [TINY, "--results", str(results), "--set", f"data.cache_dir={cache_dir}", *extra]
    return cli.main(args)


@pytest.fixture(scope="module")
def recorded(ray_local, tmp_path_factory: pytest.TempPathFactory, cache_dir: str
             ) -> tuple[Path, str]:
    """(results folder, printed output) of the tiny sweep run once through the CLI (3 trials):
    the records test reads it, the resume test continues a copy of it."""
    results = tmp_path_factory.mktemp("recorded")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert _sweep(results, cache_dir) == cli.EXIT_OK
    return results, out.getvalue()


def test_sweep_records_every_trial_and_prints_a_leaderboard(recorded: tuple[Path, str]) -> None:
    results, out = recorded
    assert "rank" in out and "objective" in out  # the leaderboard
    sweep_dir = results / "tiny"
    trials = pd.read_parquet(sweep_dir / "trials")
    assert len(trials) == 3 and trials.trial_id.is_unique
    assert set(trials.status) == {"completed"}
    assert trials["objective"].between(0, 1).all()
    assert trials["param.model.pooling"].isin(["max", "mean"]).all()
    assert trials["param.train.lr"].between(1e-4, 3e-3).all()
    # each trial's config is what Optuna sampled, applied to the sweep file's base config
    for row in trials.to_dict("records"):
        config = json.loads(row["config_json"])
        assert config["train"]["lr"] == pytest.approx(row["param.train.lr"])
        assert config["model"]["pooling"] == row["param.model.pooling"]
        assert config["model"]["d_model"] == 32 and config["train"]["epochs"] == 2
    epochs = duckdb.sql(f"select * from '{sweep_dir}/epochs/*.parquet'").df()
    assert len(epochs) == 3 * 2  # 3 trials x 1 member x 2 epochs
    assert not epochs.duplicated(["trial_id", "member", "epoch"]).any()
    members = pd.read_parquet(sweep_dir / "members")
    assert len(members) == 3 and members["test_uar"].between(0, 1).all()
    assert (sweep_dir / "spec.yaml").is_file()
    # no memory budget on the CPU: every row still carries the planner's estimate (#24), and
    # says that its measured peak is the worker's RSS, not comparable with it
    assert trials["estimated_peak_bytes"].gt(0).all()
    assert (trials[names.MEASURED_PEAK_KIND] == names.PEAK_CPU_RSS).all()
    board = query.leaderboard(query.load(str(sweep_dir)), top=3)
    best_first = trials.sort_values("objective", ascending=False).trial_id
    assert list(board["trial_id"]) == list(best_first)


def test_rerun_continues_without_rerunning_or_duplicating(
    recorded: tuple[Path, str], tmp_path: Path, cache_dir: str
) -> None:
    shutil.copytree(recorded[0], tmp_path, dirs_exist_ok=True)  # the 3 recorded trials
    first = pd.read_parquet(tmp_path / "tiny" / "trials").set_index("trial_id")
    assert len(first) == 3
    assert _sweep(tmp_path, cache_dir, "--trials", "4", "--resume") == cli.EXIT_OK
    after = pd.read_parquet(tmp_path / "tiny" / "trials").set_index("trial_id")
    assert len(after) == 4 and after.index.is_unique
    kept = after.loc[first.index]
    pd.testing.assert_series_equal(kept["objective"], first["objective"])
    # the new trial is a new configuration, not a re-run of a recorded one
    new = after.drop(first.index)
    assert len(new) == 1
    assert not set(new["optuna_params_json"]) & set(first["optuna_params_json"])
    # nothing left to do: a third run trains nothing and changes nothing
    assert _sweep(tmp_path, cache_dir, "--trials", "4") == cli.EXIT_OK
    assert len(pd.read_parquet(tmp_path / "tiny" / "trials")) == 4


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_different_sweep_file_cannot_continue_a_recorded_sweep(
    tmp_path: Path, cache_dir: str, capsys: pytest.CaptureFixture
) -> None:
    """The refusal comes before Ray starts (no ray_local): a sweep recorded by the store (its
    spec.yaml, as run_sweep writes it) and the same command with another model value."""
    recorded = load_spec(TINY, overrides=[f"data.cache_dir={cache_dir}"])
    write_spec(ResultStore(str(tmp_path), recorded.name).sweep_dir, recorded.as_dict())
    before = _files(tmp_path)
    code = _sweep(tmp_path, cache_dir, "--trials", "2", "--set", "model.layers=2")
    assert code == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "model" in err and "different" in err and "Traceback" not in err
    assert _files(tmp_path) == before  # nothing written, no lease left behind
    # the same file continues it (refused only by what differs)
    check_same_sweep(ResultStore(str(tmp_path), recorded.name), recorded)


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    """A TrialSpace result as the trial receives it (Tune un-flattens the "/" keys)."""
    config: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith(schema.OPTUNA_PARAMS_PREFIX) or "/" not in key:
            continue
        *parents, last = key.split("/")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return config


def test_memory_budget_shrinks_the_micro_batch_and_accumulates(cache_dir: str) -> None:
    """resources.memory_budget -> the driver's TrialPlanner -> the sampled trial config -> the
    trainer's micro-batch and accumulation: the path run_sweep takes, without Ray."""
    spec = load_spec(TINY, overrides=[f"data.cache_dir={cache_dir}"])
    data = prepare_data(dict(spec.data))
    config = spec.base_config()
    # a budget at which exactly micro-batch 4 fits this model (5 does not)
    estimate = plan_micro_batch(config, data, 2**40).estimate
    budget = estimate.peak(4) + (estimate.peak(5) - estimate.peak(4)) // 2
    assert plan_micro_batch(config, data, budget).micro_batch == 4
    spec = load_spec(TINY, overrides=[f"data.cache_dir={cache_dir}",
                                      f"resources.memory_budget={budget}B", "search.params={}"])
    planner = TrialPlanner(tuple(data.features.shape[1:]), data.n_features, data.n_classes,
                           len(data.folds), trial_budget_bytes(dict(spec.resources), None))
    flat = TrialSpace(spec, plan=planner)(optuna.create_study().ask())
    trial = _nested(flat) | {"runtime": {**_nested(flat).get("runtime", {}),
                                         "metric": spec.search.metric, "mode": spec.search.mode}}
    trainer = LockstepTrainer(trial, data, torch.device("cpu"))
    while not trainer.finished:
        trainer.run_epoch()
    ran = trainer.runtime_info()
    assert ran["micro_batch"] == 4 and ran["accumulation"] == 4  # 4 x 4 = batch 16
    assert ran["estimated_peak_bytes"] <= budget
