"""Confirm the winner (orchestrator/confirm.py): finalists retrained with fresh seeds, recorded as
confirmation rows once, resumed without rerunning; real Ray, Optuna, Parquet on the tiny sweep."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from orchestrator import cli, confirm
from orchestrator.query import confirmed
from orchestrator.store import schema

TINY = str(Path(__file__).with_name("tiny_sweep.yaml"))


def _rows(**columns: list) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_finalists_are_the_best_rankable_search_rows() -> None:
    trials = _rows(trial_id=["a", "b", "c", "d", "e", "f"],
                   status=["completed", "collapsed", "failed", "pruned", "completed",
                           "raced_out"],
                   objective=[0.5, 0.9, None, 0.6, 0.4, 0.95],
                   stage=["search", "search", "search", "search", "search", "search"])
    assert list(confirm.finalists(trials, 2, "max").trial_id) == ["d", "a"]
    assert list(confirm.finalists(trials, 2, "min").trial_id) == ["e", "a"]
    trials.loc[trials.trial_id == "a", "stage"] = "confirm"  # a confirmation never is a finalist
    assert list(confirm.finalists(trials, 2, "max").trial_id) == ["d", "e"]


def test_fresh_seeds_are_unused() -> None:
    assert confirm.fresh_seeds([0], 2) == [1, 2]
    assert confirm.fresh_seeds([0, 1, 2], 2) == [3, 4]


def test_optimism_is_search_objective_minus_confirmed() -> None:
    trials = _rows(trial_id=["a", "b", "ca", "cb"],
                   status=["completed", "completed", "completed", "failed"],
                   objective=[0.6, 0.5, 0.45, None],
                   test_uar_mean=[0.5, 0.4, 0.42, None],
                   stage=["search", "search", "confirm", "confirm"],
                   confirms=[None, None, "a", "b"])
    table = confirmed.confirmations(trials, "max")
    assert list(table.trial_id) == ["a"]  # b's confirmation failed: no confirmed value
    row = table.iloc[0]
    assert row[confirmed.CONFIRMED] == pytest.approx(0.45)
    assert row[confirmed.OPTIMISM] == pytest.approx(0.15)
    assert row[confirmed.CONFIRM_TRIAL] == "ca"
    loss = confirmed.confirmations(trials, "min")  # for a loss the search understates: positive
    assert loss.iloc[0][confirmed.OPTIMISM] == pytest.approx(0.45 - 0.6)


def _sweep(results: Path, cache: Path, *extra: str) -> int:
    return cli.main([TINY, "--results", str(results), "--set", f"data.cache_dir={cache}",
                     "--set", "data.use_folds=3", "--set", "train.epochs=1",
                     "--set", "search.confirm={top: 2, seeds: 1}", *extra])


@pytest.mark.slow
def test_confirmations_recorded_once_and_resumed(ray_local, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    cache = tmp_path / "cache"
    assert _sweep(tmp_path, cache, "--set", "search.trials=3") == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "member-epochs: 15 (completed 9; confirm 6)" in out
    assert "confirmation (fresh seeds, every fold)" in out
    sweep_dir = tmp_path / "tiny"
    trials = pd.read_parquet(sweep_dir / "trials")
    search = trials[trials.stage == "search"]
    confirmed = trials[trials.stage == "confirm"]
    assert len(search) == 3 and len(confirmed) == 2 and search.confirms.isna().all()
    top2 = search.sort_values(["objective", "trial_id"], ascending=[False, True]).trial_id[:2]
    assert sorted(confirmed.confirms) == sorted(top2)
    assert (trials.member_epochs == 3).all()  # 3 folds x 1 seed x 1 epoch, search and confirm
    members = pd.read_parquet(sweep_dir / "members")
    fresh = members[members.trial_id.isin(confirmed.trial_id)]
    assert set(fresh.seed) == {1} and fresh.fold.nunique() == 3  # fresh seed, every fold
    for row in confirmed.to_dict("records"):  # the finalist's params, fixed
        origin = search.set_index("trial_id").loc[row["confirms"]]
        assert row["param.train.lr"] == pytest.approx(origin["param.train.lr"])
        assert row["param.model.pooling"] == origin["param.model.pooling"]

    # resume with one more search trial: the confirmation rows are no search trials (exactly one
    # search trial runs) and no finalist is confirmed twice
    assert _sweep(tmp_path, cache, "--set", "search.trials=4") == cli.EXIT_OK
    trials = pd.read_parquet(sweep_dir / "trials")
    search = trials[trials.stage == "search"]
    confirmed = trials[trials.stage == "confirm"]
    assert len(search) == 4 and confirmed.confirms.is_unique
    top2 = search.sort_values(["objective", "trial_id"], ascending=[False, True]).trial_id[:2]
    assert set(top2) <= set(confirmed.confirms)
    before = set(trials.trial_id)

    # the subcommand on the results folder: only the third finalist is new
    assert cli.main(["confirm", str(sweep_dir), "--top", "3"]) == cli.EXIT_OK
    trials = pd.read_parquet(sweep_dir / "trials")
    new = trials[~trials.trial_id.isin(before)]
    top3 = search.sort_values(["objective", "trial_id"], ascending=[False, True]).trial_id[:3]
    assert (new.stage == "confirm").all() and set(trials[trials.stage == "confirm"].confirms) \
        == set(top3) | set(confirmed.confirms)
    assert trials[trials.stage == "confirm"].confirms.is_unique
    assert len(trials[trials.stage == "search"]) == 4
    assert schema.STAGE in trials.columns
