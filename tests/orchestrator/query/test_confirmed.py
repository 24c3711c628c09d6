"""The final verdict uses the confirmation runs (issue 21, item 4): a finalist's fresh-seed run
(search.confirm) is a column of its finalist, never a ranked row of its own; the table shows each
finalist's confirmed value and selection optimism and the verdict against #1 on those runs only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from orchestrator import query
from orchestrator.query.paired import compare
from orchestrator.store import ResultStore
from tests.orchestrator.query.test_verdict import _members

FOLDS = ["f0", "f1", "f2", "f3"]
IDS = {f: f"ts_{f}" for f in FOLDS}


def _record(store: ResultStore, tid: str, val: dict[str, float], test: dict[str, float],
            seeds: list[int], confirms: str | None = None) -> None:
    members = _members(FOLDS, seeds, val, test, ids=IDS)
    values = np.array([m["val_uar"] for m in members])
    row = {"trial_id": tid, "status": "completed", "metric": "val_uar", "mode": "max",
           "objective": float(values.mean()), "objective_std": float(values.std(ddof=1)),
           "members": len(members), "epochs_run": 2, "members_collapsed": 0,
           "config_json": json.dumps({"data": {}}), "param.train.lr": 1e-3,
           "stage": "confirm" if confirms else "search", "confirms": confirms}
    epochs = [{"member": m["member"], "fold": m["fold"], "seed": m["seed"], "epoch": 1,
               "val_uar": 0.3} for m in members]
    store.write_trial(row, epochs, members)


def _flat(value: float, spread: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)) -> dict[str, float]:
    return {f: value + d for f, d in zip(FOLDS, spread, strict=True)}


@pytest.fixture
def confirmed_store(tmp_path: Path) -> ResultStore:
    store = ResultStore(str(tmp_path / "results"), "confirmed")
    # the search: A is #1 on validation, B second, C third
    _record(store, "A", _flat(0.70), _flat(0.66), [0])
    _record(store, "B", _flat(0.65), _flat(0.64), [0])
    _record(store, "C", _flat(0.60), _flat(0.58), [0])
    # their confirmations (fresh seeds 1, 2): A's margin was luck, B holds up
    _record(store, "cA", _flat(0.62), _flat(0.60, (0.0, 0.01, -0.01, 0.0)), [1, 2], "A")
    _record(store, "cB", _flat(0.64), _flat(0.63, (0.01, 0.0, 0.02, 0.01)), [1, 2], "B")
    return store


def test_confirmation_runs_are_columns_of_their_finalist_not_ranked_rows(
        confirmed_store: ResultStore) -> None:
    board = query.leaderboard(query.load(confirmed_store.sweep_dir)).set_index("trial_id")
    assert list(board.index) == ["A", "B", "C"]  # cA, cB are no trials of the ranking
    assert board.loc["A", "confirmed"] == pytest.approx(0.62)
    assert board.loc["A", "optimism"] == pytest.approx(0.70 - 0.62)
    assert board.loc["B", "optimism"] == pytest.approx(0.65 - 0.64)
    assert board.loc["A", "confirmed_test_uar"] == pytest.approx(0.60)
    assert board["confirmed"].isna().loc["C"]  # not a finalist: nothing confirmed


def test_the_final_verdict_uses_the_confirmation_runs_only(
        confirmed_store: ResultStore) -> None:
    results = query.load(confirmed_store.sweep_dir)
    board = query.leaderboard(results).set_index("trial_id")
    # on the search runs B looks worse than #1 on test; on the fresh runs it is better
    assert board.loc["B", "vs_best"] == pytest.approx(0.64 - 0.66)
    members = results.members
    expected = compare(members[members.trial_id == "cB"], members[members.trial_id == "cA"],
                       "test_uar")
    assert board.loc["B", "confirmed_vs_best"] == pytest.approx(expected.mean)
    assert board.loc["B", "confirmed_vs_best_n"] == 4  # test sets, not (fold, seed) members
    assert board.loc["B", "confirmed_vs_best_verdict"] == expected.verdict == "better"
    assert board.loc["A", "confirmed_vs_best_verdict"] == "#1"
    table = query.format_frame(board.reset_index(), "table")
    assert "confirmed (optimism)" in table and "final vs #1" in table
    assert "0.620 (+0.080)" in table
    assert max(len(line) for line in table.splitlines()) <= 120


def test_the_report_table_shows_the_final_verdict_and_the_optimism(
        confirmed_store: ResultStore) -> None:
    from orchestrator.report.table import leaderboard_html

    board = query.leaderboard(query.load(confirmed_store.sweep_dir))
    page = leaderboard_html(board, "A")
    assert "final vs #1 (confirmation runs)" in page and ">optimism<" in page
    assert "the verdict on those runs only" in " ".join(board.attrs["footer"])
