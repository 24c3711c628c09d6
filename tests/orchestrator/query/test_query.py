"""Leaderboard, where, group-by, read-only SQL, curves, compaction over hand-built stores."""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator import query
from orchestrator.query import results_command as results_cli
from orchestrator.store import ResultStore

# trial id -> (objective, status, layers, lr, pooling); failed trials have no objective
TRIALS = {
    "t1": (0.61, "completed", 2, 1e-3, "max"),
    "t2": (0.55, "completed", 1, 3e-4, "mean"),
    "t3": (0.72, "completed", 2, 5e-4, "max"),
    "t4": (0.40, "pruned", 3, 1e-4, "last"),
    "t5": (None, "failed", 1, 2e-3, "mean"),
}


def _write(store: ResultStore, tid: str, objective, status, layers, lr, pooling, shift=0.0):
    objective = None if objective is None else objective + shift
    base = objective if objective is not None else 0.3
    uars = [base - 0.02, base + 0.02]
    row = {"trial_id": tid, "status": status, "objective": objective, "metric": "val_uar",
           "mode": "max", "epochs_run": 3, "members": 2,
           "members_collapsed": int(status == "pruned"),
           "param.model.layers": layers, "param.train.lr": lr, "param.model.pooling": pooling,
           "error": "RuntimeError: boom" if status == "failed" else None}
    for split, off in (("val", 0.0), ("test", -0.03)):
        for metric in ("acc", "uar", "f1_macro", "f1_weighted"):
            values = np.array(uars) + off
            row[f"{split}_{metric}_mean"] = values.mean()
            row[f"{split}_{metric}_std"] = values.std()
    epochs = [{"member": m, "fold": f"s{m}", "seed": 0, "epoch": e, "val_uar": uars[m] * e / 3,
               "val_loss": 1.0 / e + m, "train_loss": 1.2 / e, "val_acc": uars[m]}
              for m in range(2) for e in range(1, 4)]
    members = [{"member": m, "fold": f"s{m}", "seed": 0, "best_epoch": 3, "val_uar": uars[m],
                "test_uar": uars[m] - 0.03, "test_confusion": json.dumps([[5, 1], [2, 4]]),
                "n_test": 12, "collapsed": False} for m in range(2)]
    store.write_trial(row, epochs, members)


def build(root: Path, sweep: str = "alpha", shift: float = 0.0) -> str:
    store = ResultStore(str(root), sweep)
    for tid, spec in TRIALS.items():
        _write(store, tid, *spec, shift=shift)
    return store.sweep_dir


@pytest.fixture
def sweep_dir(tmp_path: Path) -> str:
    return build(tmp_path / "results")


def test_leaderboard_orders_by_objective_and_counts_statuses(sweep_dir: str) -> None:
    board = query.leaderboard(query.load(sweep_dir), top=3)
    assert list(board["trial_id"]) == ["t3", "t1", "t2"]
    assert list(board["rank"]) == [1, 2, 3]
    assert board.attrs["status_counts"] == {"completed": 3, "pruned": 1, "failed": 1}
    assert {"val_uar_mean", "val_uar_std", "test_f1_macro_mean", "param.model.layers"} <= set(
        board.columns)
    everything = query.leaderboard(query.load(sweep_dir), top=10)
    assert everything["trial_id"].iloc[-1] == "t5"  # no objective: last
    by_loss = query.leaderboard(query.load(sweep_dir), by="param.train.lr", ascending=True)
    assert list(by_loss["trial_id"]) == list(pd.Series(
        {k: v[3] for k, v in TRIALS.items()}).sort_values().index)


def test_where_quotes_dotted_params_and_reports_bad_columns(sweep_dir: str) -> None:
    results = query.load(sweep_dir)
    board = query.leaderboard(results, where="param.model.layers = 2 AND status = 'completed'")
    assert set(board["trial_id"]) == {"t1", "t3"}
    literal = query.leaderboard(results, where="param.model.pooling = 'max' OR "
                                               "'param.x' = 'param.y'")
    assert set(literal["trial_id"]) == {"t1", "t3"}
    with pytest.raises(query.QueryError, match="param.model.layers"):
        query.leaderboard(results, where="param.model.layer = 2")
    with pytest.raises(query.QueryError, match="no column 'val_uarr'"):
        query.leaderboard(results, by="val_uarr")


def test_group_by_matches_pandas(sweep_dir: str) -> None:
    results = query.load(sweep_dir)
    groups = query.group_by(results, "model.layers").set_index("param.model.layers")
    trials = results.trials
    expected = trials.groupby("param.model.layers")["objective"]
    assert groups["trials"].to_dict() == trials["param.model.layers"].value_counts().to_dict()
    pd.testing.assert_series_equal(groups["objective_mean"], expected.mean(), check_names=False)
    pd.testing.assert_series_equal(groups["objective_std"], expected.std(), check_names=False)
    pd.testing.assert_series_equal(groups["objective_best"], expected.max(), check_names=False)
    assert groups.loc[2, "best_trial"] == "t3"


def test_sql_reads_views_and_refuses_writes(sweep_dir: str, tmp_path: Path) -> None:
    frame = query.sql(sweep_dir, "select t.trial_id, count(*) n from trials t join epochs e "
                                 "using (trial_id) group by 1 order by 1")
    assert list(frame["trial_id"]) == list(TRIALS) and set(frame["n"]) == {6}
    target = tmp_path / "stolen.csv"
    for statement in ("create table x as select * from trials",
                      "insert into trials select * from trials",
                      f"copy (select * from trials) to '{target}'",
                      "select 1; drop view trials"):
        with pytest.raises(query.QueryError, match="SELECT"):
            query.sql(sweep_dir, statement)
    assert not target.exists()
    with pytest.raises(query.QueryError, match="bad SQL"):
        query.sql(sweep_dir, "selec * from trials")
    with pytest.raises(query.QueryError, match="no_such_col"):
        query.sql(sweep_dir, "select no_such_col from trials")


def test_truncated_file_is_skipped_everywhere(sweep_dir: str, caplog) -> None:
    bad = Path(sweep_dir) / "trials" / "t2.parquet"
    bad.write_bytes(bad.read_bytes()[:50])
    with caplog.at_level(logging.WARNING):
        assert "t2" not in set(query.load(sweep_dir).trials["trial_id"])
        assert str(bad) in caplog.text
        assert query.sql(sweep_dir, "select count(*) n from trials")["n"].iloc[0] == 4


def test_curves_match_pandas(sweep_dir: str) -> None:
    results = query.load(sweep_dir)
    got = query.curves(results, ["t1", "t3"])
    epochs = pd.read_parquet(Path(sweep_dir) / "epochs")
    epochs = epochs[epochs["trial_id"].isin(["t1", "t3"])]
    expected = epochs.groupby(["trial_id", "epoch"])["val_uar"]
    assert len(got) == 6 and set(got["members"]) == {2}
    np.testing.assert_allclose(got["val_uar_mean"], expected.mean().to_numpy())
    np.testing.assert_allclose(got["val_uar_std"], expected.std(ddof=1).to_numpy())  # sample


def _answers(path: str) -> list[pd.DataFrame]:
    results = query.load(path)
    return [
        query.leaderboard(results, top=10),
        query.group_by(results, "param.model.pooling"),
        query.curves(results, ["t1", "t4"]),
        query.sql(path, "select sum(val_uar) s, count(*) n from epochs"),
        results.members.sort_values(["trial_id", "member"]).reset_index(drop=True),
    ]


def _same(left: list[pd.DataFrame], right: list[pd.DataFrame]) -> None:
    for a, b in zip(left, right, strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_compaction_gives_the_same_answers(sweep_dir: str) -> None:
    before = _answers(sweep_dir)
    merged = query.compact(sweep_dir)
    assert merged == {"trials": 5, "epochs": 5, "members": 5}
    for table in ("trials", "epochs", "members"):
        names = [p.name for p in (Path(sweep_dir) / table).iterdir()]
        assert len(names) == 1 and names[0].startswith("compact-")
    _same(_answers(sweep_dir), before)
    assert len(pd.read_parquet(Path(sweep_dir) / "trials")) == 5  # plain pandas still works
    # a trial rewritten after compaction: the newer per-trial file wins, never twice
    _write(ResultStore(str(Path(sweep_dir).parent), "alpha"), "t2", 0.99, "completed", 1, 3e-4,
           "mean")
    results = query.load(sweep_dir)
    assert results.trials["trial_id"].is_unique and len(results.trials) == 5
    assert query.leaderboard(results, top=1)["trial_id"].iloc[0] == "t2"
    n = query.sql(sweep_dir, "select count(*) n, max(objective) m from trials")
    assert n["n"].iloc[0] == 5 and n["m"].iloc[0] == 0.99
    assert query.compact(sweep_dir)["trials"] == 2
    assert query.leaderboard(query.load(sweep_dir), top=1)["trial_id"].iloc[0] == "t2"


def test_two_sweeps_under_one_root_and_file_uri(tmp_path: Path) -> None:
    root = tmp_path / "results"
    build(root, "alpha")
    build(root, "beta", shift=0.1)
    results = query.load(root.as_uri())
    assert sorted(results.sweeps) == ["alpha", "beta"] and len(results.trials) == 10
    board = query.leaderboard(results, top=2)
    assert list(zip(board["sweep"], board["trial_id"])) == [("beta", "t3"), ("alpha", "t3")]
    counts = query.sql(str(root), "select sweep, count(*) n from members group by 1 order by 1")
    assert counts.to_dict("list") == {"sweep": ["alpha", "beta"], "n": [10, 10]}


def test_formats_round_trip(sweep_dir: str) -> None:
    board = query.leaderboard(query.load(sweep_dir), top=3)
    assert "±" in query.format_frame(board, "table")
    assert list(pd.read_csv(io.StringIO(query.format_frame(board, "csv")))["trial_id"]) == [
        "t3", "t1", "t2"]
    assert json.loads(query.format_frame(board, "json"))[0]["trial_id"] == "t3"
    assert pd.read_parquet(io.BytesIO(query.format_frame(board, "parquet"))).shape == board.shape


def test_cli_resolves_sweep_names_and_reports_errors(sweep_dir: str, tmp_path: Path,
                                                      monkeypatch, capsys) -> None:
    monkeypatch.chdir(Path(sweep_dir).parent.parent)  # results/alpha is beside us
    parser = argparse.ArgumentParser()
    results_cli.add_arguments(parser)
    out = tmp_path / "top.csv"
    code = results_cli.run(parser.parse_args(
        ["alpha", "--where", "param.model.layers = 2", "--format", "csv", "--output", str(out)]))
    assert code == 0 and list(pd.read_csv(out)["trial_id"]) == ["t3", "t1"]
    assert results_cli.run(parser.parse_args(["alpha", "--group-by", "param.model.layers"])) == 0
    assert "model.layers" in capsys.readouterr().out
    with pytest.raises(query.QueryError, match="no results at 'nope'"):
        results_cli.run(parser.parse_args(["nope"]))
    from orchestrator.cli import main

    assert main(["results", "alpha", "--sql", "drop view trials"]) == 2
    assert "SELECT" in capsys.readouterr().err
    assert main(["results", "alpha", "--compact"]) == 0
    assert main(["results", "alpha", "--top", "2"]) == 0
