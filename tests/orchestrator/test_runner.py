"""A real small sweep through the command line: real Ray, real Optuna, real Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from orchestrator import cli, query
from orchestrator.sweepfile import load_spec
from trainables.data import prepare_data
from trainables.memory import plan_micro_batch

TINY = str(Path(__file__).with_name("tiny_sweep.yaml"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


def _sweep(results: Path, cache_dir: str, *extra: str) -> int:
    args = [TINY, "--results", str(results), "--set", f"data.cache_dir={cache_dir}", *extra]
    return cli.main(args)


def test_sweep_records_every_trial_and_prints_a_leaderboard(
    ray_local, tmp_path: Path, cache_dir: str, capsys: pytest.CaptureFixture
) -> None:
    assert _sweep(tmp_path, cache_dir) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "rank" in out and "objective" in out  # the leaderboard
    sweep_dir = tmp_path / "tiny"
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
    board = query.leaderboard(query.load(str(sweep_dir)), top=3)
    best_first = trials.sort_values("objective", ascending=False).trial_id
    assert list(board["trial_id"]) == list(best_first)


def test_rerun_continues_without_rerunning_or_duplicating(
    ray_local, tmp_path: Path, cache_dir: str
) -> None:
    assert _sweep(tmp_path, cache_dir, "--trials", "2") == cli.EXIT_OK
    first = pd.read_parquet(tmp_path / "tiny" / "trials").set_index("trial_id")
    assert _sweep(tmp_path, cache_dir, "--trials", "4", "--resume") == cli.EXIT_OK
    after = pd.read_parquet(tmp_path / "tiny" / "trials").set_index("trial_id")
    assert len(after) == 4 and after.index.is_unique
    kept = after.loc[first.index]
    pd.testing.assert_series_equal(kept["objective"], first["objective"])
    # the two new trials are new configurations, not re-runs of the recorded ones
    new = after.drop(first.index)
    assert not set(new["optuna_params_json"]) & set(first["optuna_params_json"])
    # nothing left to do: a third run trains nothing and changes nothing
    assert _sweep(tmp_path, cache_dir, "--trials", "4") == cli.EXIT_OK
    assert len(pd.read_parquet(tmp_path / "tiny" / "trials")) == 4


def test_a_different_sweep_file_cannot_continue_a_recorded_sweep(
    ray_local, tmp_path: Path, cache_dir: str, capsys: pytest.CaptureFixture
) -> None:
    assert _sweep(tmp_path, cache_dir, "--trials", "1") == cli.EXIT_OK
    before = sorted(p.name for p in (tmp_path / "tiny" / "trials").iterdir())
    code = _sweep(tmp_path, cache_dir, "--trials", "2", "--set", "model.layers=2")
    assert code == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "model" in err and "different" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "tiny" / "trials").iterdir()) == before


def test_memory_budget_shrinks_the_micro_batch_and_accumulates(
    ray_local, tmp_path: Path, cache_dir: str
) -> None:
    spec = load_spec(TINY, overrides=[f"data.cache_dir={cache_dir}"])
    data = prepare_data(dict(spec.data))
    config = spec.base_config()
    # a budget at which exactly micro-batch 4 fits this model (5 does not)
    estimate = plan_micro_batch(config, data, 2**40).estimate
    budget = estimate.peak(4) + (estimate.peak(5) - estimate.peak(4)) // 2
    assert plan_micro_batch(config, data, budget).micro_batch == 4
    code = _sweep(
        tmp_path,
        cache_dir,
        "--trials", "1",
        "--set", f"resources.memory_budget={budget}B",
        "--set", "search.params={}",
    )  # fmt: skip
    assert code == cli.EXIT_OK
    trial = pd.read_parquet(tmp_path / "tiny" / "trials").iloc[0]
    assert trial["micro_batch"] == 4 and trial["accumulation"] == 4  # 4 x 4 = batch 16
    assert trial["estimated_peak_bytes"] <= budget
    assert trial["status"] == "completed"
