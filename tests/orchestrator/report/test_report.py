"""The HTML report, rendered from hand-built store files whose answers are known."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from orchestrator import query, report
from orchestrator.store import ResultStore

FOLDS = ("s1", "s2")


def _confusion(uar: float, n: int = 20) -> list[list[int]]:
    hit = int(round(uar * n))
    return [[hit if i == j else (n - hit if j == (i + 1) % 4 else 0) for j in range(4)]
            for i in range(4)]


def build(root: Path) -> str:
    """15 trials; the objective is driven by model.layers (lr and pooling barely matter)."""
    store = ResultStore(str(root), "demo")
    rng = np.random.default_rng(0)
    combos = ((1e-5, "max"), (1e-4, "mean"), (1e-3, "last"), (3e-3, "max"))
    plan = [(layers, lr, pool) for layers in (1, 2, 3) for lr, pool in combos]
    for i, (layers, lr, pool) in enumerate(plan):
        objective = 0.3 + 0.12 * layers + rng.normal(0, 0.005)
        _write(store, f"t{i}", "completed", objective, layers, lr, pool, ended=i)
    _write(store, "t_pruned", "pruned", 0.31, 1, 3e-4, "last", ended=20, epochs=2)
    _write(store, "t_collapsed", "collapsed", 0.25, 2, 3e-3, "max", ended=21, collapsed=True)
    store.write_trial({"trial_id": "t_nofit", "status": "does_not_fit", "objective": None,
                       "metric": "val_uar", "mode": "max", "epochs_run": 0, "members": None,
                       "error": "Traceback ...\ntrainables.errors.DoesNotFitError: batch of 1 "
                                "needs 30 GiB", "param.model.layers": 3, "param.train.lr": 1e-3,
                       "param.model.pooling": "mean"}, [], [])
    return store.sweep_dir


def _write(store, tid, status, objective, layers, lr, pool, ended, epochs=5, collapsed=False):
    members = [(m, FOLDS[m % 2], m // 2) for m in range(4)]
    uars = [0.25 if collapsed else objective + d for d in (-0.03, 0.03, -0.01, 0.01)]
    row = {"trial_id": tid, "status": status, "objective": objective, "metric": "val_uar",
           "mode": "max", "epochs_run": epochs, "members": 4,
           "members_collapsed": 4 if collapsed else 0, "param.model.layers": layers,
           "param.train.lr": lr, "param.model.pooling": pool,
           "ended_at": np.datetime64("2025-01-01T00:00") + np.timedelta64(ended, "m"),
           "val_uar_mean": float(np.mean(uars)), "val_uar_std": float(np.std(uars))}
    epoch_rows = [{"member": m, "fold": f, "seed": s, "epoch": e,
                   "val_uar": uars[m] * (0.5 + 0.5 * e / epochs), "val_loss": 2.0 / e}
                  for m, f, s in members for e in range(1, epochs + 1)]
    member_rows = [{"member": m, "fold": f, "seed": s, "best_epoch": epochs,
                    "val_uar": uars[m], "test_uar": uars[m],
                    "test_confusion": json.dumps(_confusion(uars[m])), "n_test": 80,
                    "collapsed": collapsed} for m, f, s in members]
    store.write_trial(row, epoch_rows, member_rows)


def test_report_embeds_every_figure_and_lists_failures(tmp_path: Path) -> None:
    sweep_dir = build(tmp_path / "results")
    page = report.write_report(sweep_dir)
    assert page == Path(sweep_dir) / "report" / "report.html"
    text = page.read_text()
    for name in ("history", "importance", "slices", "curves", "confusion"):
        png = page.parent / f"{name}.png"
        assert png.read_bytes().startswith(b"\x89PNG")
        assert base64.b64encode(png.read_bytes()).decode() in text  # self-contained
    assert "http://" not in text and "https://" not in text  # nothing fetched
    assert "DoesNotFitError: batch of 1 needs 30 GiB" in text
    assert "stopped by the scheduler after epoch 2" in text
    assert "all 4 members collapsed to one class" in text
    assert "Confusion matrix of the best trial (t" in text


def test_importance_ranks_the_parameter_that_drives_the_objective(tmp_path: Path) -> None:
    trials = query.load(build(tmp_path / "results")).trials
    found, why, log_params = report.param_importances(trials)
    assert why == "" and max(found, key=found.get) == "param.model.layers"
    assert sum(found.values()) == pytest.approx(1.0)
    assert log_params == {"param.train.lr"}  # spans more than two decades
    none, why, _ = report.param_importances(trials.head(1))
    assert none is None and "at least 2" in why


def test_failure_table_gives_one_reason_per_trial(tmp_path: Path) -> None:
    trials = query.load(build(tmp_path / "results")).trials
    table = report.failure_table(trials).set_index("trial_id")
    assert sorted(table.index) == ["t_collapsed", "t_nofit", "t_pruned"]
    assert table.loc["t_nofit", "reason"].startswith("trainables.errors.DoesNotFitError")


def test_report_command(tmp_path: Path, monkeypatch, capsys) -> None:
    build(tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    from orchestrator.cli import main

    assert main(["report", "demo", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.html").exists()
    assert main(["report", "missing"]) == 2
