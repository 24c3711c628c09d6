"""Rankings a researcher can trust (issue 13) and one name per number (issue 14), over real
Parquet stores and real DuckDB: fold-paired comparison, the baseline reference row, collapsed
trials never best, sample std with n, confusions with class names, display names in queries,
and the Optuna history being the same after a resume rebuild."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from orchestrator import query
from orchestrator.query import results_command as results_cli
from orchestrator.store import ResultStore

FOLDS = [f"session_{i}" for i in range(1, 6)]
SEEDS = [0, 1]
KEYS = [(f, s) for f in FOLDS for s in SEEDS]  # 10 members
CLASSES = ["angry", "happy", "neutral", "sad"]
NOISE = np.random.default_rng(0).normal(0, 0.03, len(KEYS))  # fold difficulty, shared


def _trial(store: ResultStore, tid: str, per_member: np.ndarray, status: str = "completed",
           layers: int = 2, shuffle: int | None = None) -> None:
    """A trial whose members (fold x seed) score `per_member` (val_uar; test = val - 0.02)."""
    rows = [{"member": i, "fold": f, "seed": s, "best_epoch": 2, "val_uar": float(v),
             "test_uar": float(v) - 0.02, "n_test": 12, "collapsed": status == "collapsed",
             "test_confusion": [[3, 0, 0, 0], [0, 2, 1, 0], [0, 0, 3, 0], [1, 0, 0, 2]],
             "classes": CLASSES}
            for i, ((f, s), v) in enumerate(zip(KEYS, per_member, strict=True))]
    if shuffle is not None:  # rows in another order: pairing must use the member key
        rows = [rows[i] for i in np.random.default_rng(shuffle).permutation(len(rows))]
    row = {"trial_id": tid, "status": status, "objective": float(np.mean(per_member)),
           "objective_std": float(np.std(per_member, ddof=1)), "metric": "val_uar",
           "mode": "max", "epochs_run": 2, "members": len(KEYS),
           "members_collapsed": len(KEYS) if status == "collapsed" else 0,
           "val_uar_mean": float(np.mean(per_member)),
           "val_uar_std": float(np.std(per_member, ddof=1)),
           "test_uar_mean": float(np.mean(per_member)) - 0.02,
           "test_uar_std": float(np.std(per_member, ddof=1)),
           "param.model.layers": layers, "param.train.lr": 1e-3}
    epochs = [{"member": i, "fold": f, "seed": s, "epoch": e, "val_uar": 0.3}
              for i, (f, s) in enumerate(KEYS) for e in (1, 2)]
    store.write_trial(row, epochs, rows)


@pytest.fixture
def sweep(tmp_path: Path) -> str:
    store = ResultStore(str(tmp_path / "results"), "rank")
    base = 0.60 + NOISE
    _trial(store, "best", base + 0.05, layers=3, shuffle=1)
    jitter = np.random.default_rng(1).normal(0, 0.004, len(KEYS))
    _trial(store, "noise", base + 0.05 + jitter - jitter.mean() - 0.001, layers=2, shuffle=2)
    _trial(store, "worse", base, layers=1)
    _trial(store, "stuck", base + 0.20, status="collapsed", layers=4)  # best number, collapsed
    return store.sweep_dir


# --- A: the paired comparison (one value per test set: test_verdict.py has the defects) --------
def test_paired_difference_separates_a_clear_gain_from_noise() -> None:
    base = pd.Series(0.6 + NOISE[::2], index=FOLDS)  # one value per test set
    clear = query.paired_difference(base + 0.05, base)
    assert clear.n == 5 and clear.mean == pytest.approx(0.05)
    assert clear.verdict == "better" and clear.low > 0 and clear.t_p < 0.01
    assert clear.p_value == pytest.approx(0.0625)  # exact Wilcoxon: 5 non-zero, all positive
    jitter = np.random.default_rng(3).normal(0, 0.01, len(FOLDS))
    noise = query.paired_difference(base + jitter - jitter.mean(), base)
    assert noise.verdict == "no evidence" and noise.low < 0 < noise.high
    same = query.paired_difference(base, base)
    assert same.verdict == "no evidence" and same.p_value == 1.0 and "zero" in same.note
    one = query.paired_difference(base.iloc[:1] + 0.1, base.iloc[:1])
    assert one.n == 1 and one.verdict == "too few test sets" and np.isnan(one.low)
    assert "1 test set" in one.note
    small = query.paired_difference(base.iloc[:4] + 0.05, base.iloc[:4])
    assert "cannot reach 0.05" in small.note


def test_pairing_uses_the_test_set_not_row_order() -> None:
    members = pd.DataFrame({"fold": [k[0] for k in KEYS], "seed": [k[1] for k in KEYS],
                            "val_uar": 0.6 + NOISE})
    better = members.assign(val_uar=members["val_uar"] + 0.05).sample(frac=1, random_state=4)
    paired = query.compare(better, members, "val_uar")
    assert paired.n == 5 and paired.mean == pytest.approx(0.05)
    assert paired.high - paired.low < 1e-9
    by_row = better["val_uar"].to_numpy() - members["val_uar"].to_numpy()
    assert by_row.std() > 0.01  # row order would have paired unrelated folds


def test_leaderboard_shows_paired_columns_and_verdicts(sweep: str) -> None:
    board = query.leaderboard(query.load(sweep)).set_index("trial_id")
    assert board.loc["best", "vs_best"] == pytest.approx(0.0) and board.loc["best", "rank"] == 1
    assert board.loc["best", "vs_best_verdict"] == "#1"
    assert board.loc["noise", "vs_best_verdict"] == "no evidence"
    assert board.loc["worse", "vs_best_verdict"] == "worse"
    assert board.loc["worse", "vs_best"] == pytest.approx(-0.05)  # on test UAR
    assert board.loc["worse", "val_vs_best"] == pytest.approx(-0.05)  # the selection metric
    assert board.loc["worse", "vs_best_high"] < 0 and board.loc["worse", "vs_best_t_p"] < 0.01
    assert board.loc["worse", "vs_best_n"] == 5  # 5 test sets, not 10 members
    assert "vs_baseline" not in board.columns and "baseline" not in board.index  # none: silent
    record = json.loads(query.format_frame(board.reset_index(), "json"))[0]
    assert {"vs_best", "vs_best_low", "vs_best_high", "vs_best_p", "vs_best_verdict",
            "val_vs_best", "vs_best_p_holm"} <= set(record)
    table = query.format_frame(board.reset_index(), "table")
    assert "-0.050 worse" in table
    wide = query.format_frame(board.reset_index(), "table", wide=True)
    assert "-0.050 [" in wide and "n=5" in wide


# --- B: the baseline as a reference row --------------------------------------------------------
def test_baseline_is_a_reference_row_with_paired_differences(sweep: str) -> None:
    from orchestrator.store.baseline_table import write_baseline
    from orchestrator.store.schema import BASELINE_FIELDS

    rows = []
    for i, (fold, seed) in enumerate(KEYS):
        row = {name: None for name, _, _ in BASELINE_FIELDS}
        row.update(member=i, fold=fold, seed=seed, val_uar=0.55 + NOISE[i],
                   test_uar=0.53 + NOISE[i], classes=CLASSES, baseline="egemaps88_logreg",
                   test_confusion=[[2, 1, 0, 0], [0, 3, 0, 0], [0, 1, 2, 0], [0, 0, 0, 3]],
                   val_confusion=[[1]])
        rows.append(row)
    write_baseline(pd.DataFrame(rows, columns=[n for n, _, _ in BASELINE_FIELDS]), sweep)
    board = query.leaderboard(query.load(sweep))
    reference = board[board["trial_id"] == "baseline"].iloc[0]
    assert reference["status"] == "reference" and pd.isna(reference["rank"])
    assert reference["objective"] == pytest.approx(0.55 + NOISE.mean())
    ranked = board[board["rank"].notna()]
    assert list(ranked["rank"]) == [1, 2, 3]  # the reference (and the collapsed) not ranked
    best = board.set_index("trial_id").loc["best"]
    assert best["vs_baseline"] == pytest.approx(0.10) and best["vs_baseline_verdict"] == "better"
    assert best["val_vs_baseline"] == pytest.approx(0.10)
    confusion = query.confusion(query.load(sweep), "baseline")
    assert list(confusion.index) == CLASSES and int(confusion.to_numpy().sum()) == 120


# --- E: collapsed trials never best ------------------------------------------------------------
def test_collapsed_trial_is_listed_after_and_never_best(sweep: str) -> None:
    results = query.load(sweep)
    board = query.leaderboard(results)
    assert board["trial_id"].iloc[0] == "best"
    assert board["trial_id"].iloc[-1] == "stuck" and board["status"].iloc[-1] == "collapsed"
    assert query.best_trial(results.trials)["trial_id"] == "best"
    only_collapsed = results.trials[results.trials["status"] == "collapsed"]
    assert query.best_trial(only_collapsed) is None


def test_console_best_line_skips_collapsed_trials(capsys) -> None:
    from orchestrator.console import ConsoleCallback

    console = ConsoleCallback(total=2, already=0)
    members = json.dumps([{"collapsed": True}, {"collapsed": True}])
    for tid, objective, collapsed in (("ok", 0.40, False), ("stuck", 0.90, True)):
        trial = SimpleNamespace(trial_id=tid, config={})  # Tune's Trial: only these are read
        result = {"objective": objective, "epoch": 2, "trial_finished": True,
                  "member_results_json": members if collapsed else "[]"}
        console.on_trial_result(0, [], trial, result)
        console.on_trial_complete(0, [], trial)
    console.close()
    out = capsys.readouterr().out
    assert "stuck collapsed" in out
    assert "best objective 0.4000: trial ok" in out and "trial stuck" not in out.splitlines()[-1]


# --- C: sample std with n; D: confusion with names ---------------------------------------------
def test_one_member_shows_the_value_alone_and_curves_use_sample_std(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path), "single")
    store.write_trial({"trial_id": "t1", "status": "completed", "objective": 0.5,
                       "objective_std": None, "val_uar_mean": 0.5, "val_uar_std": None,
                       "members": 1, "metric": "val_uar", "mode": "max"},
                      [{"member": 0, "fold": "a", "seed": 0, "epoch": 1, "val_uar": 0.5}],
                      [{"member": 0, "fold": "a", "seed": 0, "val_uar": 0.5}])
    results = query.load(store.sweep_dir)
    table = query.format_frame(query.leaderboard(results), "table").split("\n  objective =")[0]
    assert "±" not in table and "0.500" in table  # the rows; the footer names "±"
    curve = query.curves(results, ["t1"])
    assert curve["members"].iloc[0] == 1 and pd.isna(curve["val_uar_std"].iloc[0])


def test_confusion_is_stored_as_integers_with_class_names(sweep: str) -> None:
    results = query.load(sweep)
    stored = results.members.iloc[0]
    assert [list(r) for r in stored["test_confusion"]][0] == [3, 0, 0, 0]
    assert list(stored["classes"]) == CLASSES
    matrix = query.confusion(results, "best")
    assert list(matrix.index) == CLASSES and list(matrix.columns) == CLASSES
    assert matrix.loc["sad", "angry"] == 10 and matrix.to_numpy().dtype.kind == "i"
    one_fold = query.confusion(results, "best", fold="session_1")
    assert int(one_fold.to_numpy().sum()) == 2 * 12
    record = json.loads(query.format_frame(query.leaderboard(results), "json"))[0]
    assert record["test_confusion"]["classes"] == CLASSES
    assert record["test_confusion"]["matrix"][3] == [10, 0, 0, 20]


# --- G: one name per number -------------------------------------------------------------------
def test_the_names_the_leaderboard_prints_are_the_names_queries_accept(sweep: str) -> None:
    results = query.load(sweep)
    table = query.format_frame(query.leaderboard(results), "table")
    header = table.splitlines()[0].split()
    assert {"trial_id", "objective", "test_uar", "model.layers"} <= set(header)
    wide = query.format_frame(query.leaderboard(results), "table", wide=True)
    assert "val_uar" in wide.splitlines()[0].split()
    board = query.leaderboard(results, where="val_uar > 0.62 AND model.layers >= 2")
    assert set(board["trial_id"]) == {"best", "noise", "stuck"}
    quoted = query.leaderboard(results, where='"model.layers" = 1')
    assert list(quoted["trial_id"]) == ["worse"]
    by_layers = query.leaderboard(results, by="model.layers", ascending=True)
    assert list(by_layers["trial_id"][:3]) == ["worse", "noise", "best"]
    assert "model.layers" in query.group_by(results, "model.layers", by="val_uar").columns[0]
    frame = query.sql(sweep, 'select trial_id, val_uar, "model.layers" from trials '
                             'where val_uar > 0.62 order by "model.layers"')
    assert list(frame["trial_id"]) == ["noise", "best", "stuck"]
    assert query.sql(sweep, "select val_uar_mean from trials").shape == (4, 1)  # stored names too


def test_unknown_names_get_did_you_mean_not_a_binder_error(sweep: str) -> None:
    results = query.load(sweep)
    with pytest.raises(query.QueryError, match="did you mean val_uar"):
        query.leaderboard(results, where="val_uarr > 0.5")
    with pytest.raises(query.QueryError, match="did you mean model.layers"):
        query.leaderboard(results, where="model.layer = 2")
    with pytest.raises(query.QueryError, match="did you mean model.layers"):
        query.leaderboard(results, by="model.layer")
    with pytest.raises(query.QueryError, match='quote dotted column names, e.g. "model.layers"'):
        query.sql(sweep, "select model.layers from trials")
    with pytest.raises(query.QueryError, match="no column 'val_uarr'.*did you mean"):
        query.sql(sweep, "select val_uarr from trials")


def test_empty_results_and_unknown_curve_ids_say_so(sweep: str, monkeypatch, capsys) -> None:
    monkeypatch.chdir(Path(sweep).parent.parent)
    parser = argparse.ArgumentParser()
    results_cli.add_arguments(parser)
    with pytest.raises(query.QueryError, match="no trials match --where"):
        results_cli.run(parser.parse_args(["rank", "--group-by", "model.layers",
                                           "--where", "val_uar > 5"]))
    assert results_cli.run(parser.parse_args(["rank", "--where", "val_uar > 5"])) == 0
    captured = capsys.readouterr()
    assert "no trials match --where 'val_uar > 5'" in captured.err
    assert "Empty DataFrame" not in captured.out
    with pytest.raises(query.QueryError, match=r"no trial 'bestt'; did you mean best\?.*"
                                               r"trials: best, noise, stuck, worse"):
        query.curves(query.load(sweep), ["best", "bestt"])
