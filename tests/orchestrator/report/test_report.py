"""The HTML report, rendered from hand-built store files (real Parquet, real Optuna) whose
answers are known: model.layers drives the objective, train.lr is loguniform in the sweep file."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import optuna
import optuna.visualization.matplotlib as ovm
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator import query, report
from orchestrator.report import optuna_plots
from orchestrator.report.table import leaderboard_html
from orchestrator.store import ResultStore, schema, write_spec

FOLDS = ("s1", "s2")
CLASSES = ["neutral", "happy", "sad", "angry"]
SPEC_PARAMS = {"model.layers": {"int": [1, 3]}, "train.lr": {"loguniform": [1.0e-5, 3.0e-3]},
               "model.pooling": {"choice": ["max", "mean", "last"]}}


def _confusion(uar: float, n: int = 20) -> list[list[int]]:
    hit = int(round(uar * n))
    return [[hit if i == j else (n - hit if j == (i + 1) % 4 else 0) for j in range(4)]
            for i in range(4)]


def build(root: Path, *, trials: int = 12, spec: bool = True, baseline: bool = True,
          params: dict | None = None) -> str:
    """`trials` completed trials (objective driven by model.layers) + a pruned, a collapsed and
    a does-not-fit one; spec.yaml with SPEC_PARAMS (or `params`); baseline.parquet."""
    store = ResultStore(str(root), "demo")
    if spec:
        write_spec(store.sweep_dir, {"name": "demo", "search": {"params": params or SPEC_PARAMS}})
    rng = np.random.default_rng(0)
    combos = ((1e-5, "max"), (1e-4, "mean"), (1e-3, "last"), (3e-3, "max"))
    plan = [(layers, lr, pool) for layers in (1, 2, 3) for lr, pool in combos][:trials]
    for i, (layers, lr, pool) in enumerate(plan):
        objective = 0.3 + 0.12 * layers + rng.normal(0, 0.005)
        _write(store, f"t{i}", "completed", objective, layers, lr, pool, ended=i,
               noise=rng.normal(0, 0.02, 4))
    _write(store, "t_pruned", "pruned", 0.31, 1, 3e-4, "last", ended=20, epochs=2)
    _write(store, "t_collapsed", "collapsed", 0.25, 2, 3e-3, "max", ended=21, collapsed=True)
    store.write_trial({"trial_id": "t_nofit", "status": "does_not_fit", "objective": None,
                       "metric": "val_uar", "mode": "max", "epochs_run": 0, "members": None,
                       "error": "trainables.errors.DoesNotFitError: batch of 1 needs 30 GiB",
                       "param.model.layers": 3, "param.train.lr": 1e-3,
                       "param.model.pooling": "mean"}, [], [])
    if baseline:
        rows = [{"member": m, "fold": FOLDS[m % 2], "seed": m // 2, "val_uar": 0.4,
                 "test_uar": 0.4, "test_confusion": _confusion(0.4), "classes": CLASSES}
                for m in range(4)]
        pq.write_table(pa.Table.from_pylist(rows), f"{store.sweep_dir}/{schema.BASELINE_FILE}")
    return store.sweep_dir


def _write(store, tid, status, objective, layers, lr, pool, ended, epochs=5, collapsed=False,
           noise=(0.0, 0.0, 0.0, 0.0)):
    members = [(m, FOLDS[m % 2], m // 2) for m in range(4)]
    uars = [0.25 if collapsed else objective + d + e
            for d, e in zip((-0.03, 0.03, -0.01, 0.01), noise)]
    native = {"model.layers": layers, "train.lr": lr, "model.pooling": pool}
    row = {"trial_id": tid, "status": status, "objective": objective, "metric": "val_uar",
           "mode": "max", "epochs_run": epochs, "members": 4,
           "members_collapsed": 4 if collapsed else 0, "param.model.layers": layers,
           "param.train.lr": lr, "param.model.pooling": pool,
           "optuna_params_json": json.dumps(native),
           "started_at": np.datetime64("2025-01-01T00:00") + np.timedelta64(ended, "m")
           - np.timedelta64(epochs, "m"),
           "ended_at": np.datetime64("2025-01-01T00:00") + np.timedelta64(ended, "m"),
           "wall_seconds": 60.0 * epochs, "gpu_fraction": 0.25, "gpu_hours": 0.25 * epochs / 60,
           "micro_batch": 16, "accumulation": 2, "estimated_peak_bytes": 12 * 2**20,
           "measured_peak_bytes": 10 * 2**20, "device": "cuda:0", "oom_retries": 0,
           "val_uar_mean": float(np.mean(uars)), "val_uar_std": float(np.std(uars, ddof=1))}
    epoch_rows = [{"member": m, "fold": f, "seed": s, "epoch": e,
                   "val_uar": uars[m] * (0.5 + 0.5 * e / epochs), "val_loss": 2.0 / e}
                  for m, f, s in members for e in range(1, epochs + 1)]
    member_rows = [{"member": m, "fold": f, "seed": s, "best_epoch": epochs,
                    "val_uar": uars[m], "test_uar": uars[m],
                    "test_confusion": _confusion(uars[m]), "classes": CLASSES, "n_test": 80,
                    "collapsed": collapsed} for m, f, s in members]
    store.write_trial(row, epoch_rows, member_rows)


def _section(text: str, title: str) -> str:
    """The HTML from the <h2> starting with `title` to the next <h2>."""
    start = text.index(f"<h2>{title}")
    end = text.find("<h2>", start + 4)
    return text[start:end if end > 0 else None]


@pytest.fixture(scope="module")
def rich_report(tmp_path_factory) -> tuple[str, str]:
    """(sweep dir, report HTML) of the 12-trial sweep with a baseline."""
    sweep_dir = build(tmp_path_factory.mktemp("rich") / "results")
    return sweep_dir, report.write_report(sweep_dir).read_text()


@pytest.mark.slow  # the full 15-trial report: ~5 s idle, ~20 s on a loaded 2-core machine
def test_report_embeds_every_figure_and_lists_failures(rich_report) -> None:
    sweep_dir, text = rich_report
    out = Path(sweep_dir) / "report"
    for name in ("history", "importance", "slices_model_layers", "slices_train_lr",
                 "slices_model_pooling", "parallel", "contour", "curves", "confusion",
                 "timeline"):
        png = out / f"{name}.png"
        assert png.read_bytes().startswith(b"\x89PNG")
        assert base64.b64encode(png.read_bytes()).decode() in text  # self-contained
    for title in ("Best configuration", "Optimization history", "Parameter importance",
                  "Slice plots", "Parallel coordinates", "Contour", "Learning curves",
                  "Confusion matrices", "Timeline of trials", "Trials (the top 5)"):
        assert f"<h2>{title}" in text
    # one slice plot per parameter, the most important (model.layers) first
    slices = _section(text, "Slice plots")
    assert re.findall(r"<h3>([^<]+)</h3>", slices) == ["model.layers", "train.lr",
                                                        "model.pooling"]
    assert slices.count("<img") == 3
    assert "http://" not in text and "https://" not in text  # nothing fetched
    assert "<pre>" not in text
    assert "DoesNotFitError: batch of 1 needs 30 GiB" in text
    assert "stopped by the scheduler after epoch 2" in text
    assert "all 4 members collapsed" in text
    assert "indicative only" not in text  # 13 complete trials (12 + the collapsed one) >= 10


@pytest.mark.slow
def test_leaderboard_is_a_table_with_params_paired_columns_and_the_baseline(rich_report) -> None:
    _, text = rich_report
    board = _section(text, "Leaderboard")
    assert '<table class="board sortable">' in board and "<script>" in text
    headers = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th[^>]*>(.*?)</th>", board)]
    for header in ("model.layers", "train.lr", "model.pooling", "vs #1", "vs baseline",
                   "objective", "status"):
        assert header in headers, headers
    assert "test_confusion" not in headers
    rows = re.findall(r'<tr class="([^"]*)">(.*?)</tr>', board)
    classes = [c for c, _ in rows]
    assert classes[0] == "row-completed row-best"
    assert "row-collapsed" in classes and classes[-1] == "row-reference"  # baseline row last
    best_cells = rows[0][1]
    assert "#1</b> <small>(the reference)" in best_cells
    assert "(n=2)" in best_cells  # mean ± std (n test sets: 2 folds)
    # t0..t3 (1 layer) are ~0.24 below #1 (3 layers) on both test sets: 2 are too few to tell
    layer1 = next(cells for _, cells in rows if ">t0<" in cells)
    vs_best = re.findall(r'<td data-v="([^"]*)" class="paired"[^>]*>(.*?)</td>', layer1)[0]
    assert float(vs_best[0]) == pytest.approx(-0.24, abs=0.03)
    assert "p=" in vs_best[1] and "n=2" in vs_best[1] and "too few test sets" in vs_best[1]
    assert "tied" not in board and "--set data.use_folds=null" in board
    assert "row-reference" in board and "reference</span>" in board


@pytest.mark.slow
def test_confusion_section_names_the_classes(rich_report) -> None:
    _, text = rich_report
    section = _section(text, "Confusion matrices")
    for name in CLASSES:
        assert f"<th>{name}</th>" in section
    assert "baseline: all folds" in section
    assert "indices shown" not in section


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_rebuilt_study_carries_the_spec_distributions(tmp_path: Path) -> None:
    results = query.load(build(tmp_path / "results"))
    sweep = report.sweep_study(results, "demo", results.trials, "max")
    assert sweep.source == "spec.yaml" and not sweep.notes
    dists = sweep.complete[0].distributions
    assert dists["train.lr"] == optuna.distributions.FloatDistribution(1e-5, 3e-3, log=True)
    assert dists["model.layers"] == optuna.distributions.IntDistribution(1, 3)
    assert isinstance(dists["model.pooling"], optuna.distributions.CategoricalDistribution)
    # Optuna's own slice plot draws the loguniform param on a log axis, the int one linear
    axes = ovm.plot_slice(sweep.study, params=["model.layers", "train.lr"])
    scales = {ax.get_xlabel(): ax.get_xscale() for ax in np.atleast_1d(axes).flat}
    assert scales == {"model.layers": "linear", "train.lr": "log"}
    found, why = report.param_importances(sweep)
    assert why == "" and max(found, key=found.get) == "model.layers"
    assert sum(found.values()) == pytest.approx(1.0)


def test_without_spec_the_scales_are_guessed_and_said(tmp_path: Path) -> None:
    results = query.load(build(tmp_path / "results", spec=False))
    sweep = report.sweep_study(results, "demo", results.trials, "max")
    assert "guessed" in sweep.notes[0]
    assert sweep.distributions["train.lr"].log  # 1e-5 .. 3e-3 spans more than 100x


def test_table_renders_new_leaderboard_columns_generically() -> None:
    frame = pd.DataFrame({
        "rank": [1, 2], "trial_id": ["a", "b"], "status": ["completed", "collapsed"],
        "objective": [0.5, 0.4], "objective_std": [0.01, None], "members": [3, 3],
        "speed_mean": [2.0, 3.0], "speed_std": [0.5, 0.25],
        "vs_other": [0.0, -0.1], "vs_other_low": [None, -0.2], "vs_other_high": [None, 0.05],
        "vs_other_p": [None, 0.25], "vs_other_n": [3, 3], "vs_other_tied": [True, True],
        "param.model.layers": [2, 3], "test_confusion": [{"x": 1}, None],
    })
    text = leaderboard_html(frame, best_id="a")
    assert "speed" in text and "2.000<br><small>± 0.500</small>" in text
    assert "-0.100</b><br><small>[-0.200, +0.050]</small>" in text and "p=0.25" in text
    assert "model.<wbr>layers" in text and "test_confusion" not in text
    assert 'class="row-collapsed"' in text and "0.400" in text


def test_report_command_few_trials_one_param(tmp_path: Path, monkeypatch) -> None:
    """`sweep.py report NAME`: below MIN_TRIALS_FOR_IMPORTANCE the importance carries the caveat;
    with one searched param the contour says why it is not drawn."""
    few = 4
    params = {"model.layers": {"int": [1, 3]}}  # the only searched param
    build(tmp_path / "results", trials=few, params=params, baseline=False)
    monkeypatch.chdir(tmp_path)
    from orchestrator.cli import main

    assert main(["report", "demo", "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.html").read_text()
    complete = few + 1  # + the collapsed trial (Optuna was told COMPLETE)
    assert complete < report.MIN_TRIALS_FOR_IMPORTANCE
    importance = _section(text, "Parameter importance")
    assert f"not drawn: {complete} complete trials; fANOVA fits a forest" in importance
    assert "<img" not in importance
    assert "a contour needs two varying parameters (this sweep has 1)" in _section(
        text, "Contour")
    assert "vs baseline" not in _section(text, "Leaderboard")
    assert optuna_plots.importance_caveat(report.MIN_TRIALS_FOR_IMPORTANCE) == ""
    assert main(["report", "missing"]) == 2


def test_contour_is_not_drawn_below_its_trial_count(tmp_path: Path) -> None:
    build(tmp_path / "results", trials=5, baseline=False)  # 3 varying params, 6 complete
    text = report.write_report(str(tmp_path / "results" / "demo")).read_text()
    contour = _section(text, "Contour")
    assert "<img" not in contour and "not drawn: 6 complete trials" in contour
    assert f"fewer than {report.MIN_TRIALS_FOR_CONTOUR} points" in contour
    assert not (tmp_path / "results" / "demo" / "report" / "contour.png").exists()


def test_history_is_in_start_order_and_the_timeline_sums_gpu_hours(tmp_path: Path) -> None:
    from orchestrator.report.html import resource_table, start_order

    results = query.load(build(tmp_path / "results", trials=4, baseline=False))
    ordered = start_order(results.trials)
    assert list(ordered["order"]) == list(range(1, len(ordered) + 1))
    assert ordered["started_at"].dropna().is_monotonic_increasing
    # by start time, not by id ("t_collapsed" < "t_pruned" by id; started 16 vs 18 min here)
    assert list(ordered.trial_id) == ["t0", "t1", "t2", "t3", "t_collapsed", "t_pruned",
                                      "t_nofit"]  # no start time: last
    table = resource_table(results.trials).set_index("status")
    trials = results.trials
    for status in ("completed", "pruned", "collapsed"):
        expected = trials.loc[trials.status == status, "gpu_hours"].sum()
        assert table.loc[status, "gpu_hours"] == pytest.approx(round(expected, 3))
    assert table.loc["all", "trials"] == len(trials)
    text = report.write_report(results_dir := str(tmp_path / "results" / "demo")).read_text()
    assert Path(results_dir, "report", "timeline.png").exists()
    timeline = _section(text, "Timeline of trials")
    assert "gpu_hours" in timeline and "<img" in timeline
    assert "in the order the trials started" in _section(text, "Optimization history")


def test_per_trial_sections_hold_params_command_curves_confusion_and_memory(
        rich_report) -> None:
    _, text = rich_report
    section = _section(text, "Trials (the top")
    details = re.findall(r'<details class="trial" id="trial-([^"]+)"( open)?>(.*?)</details>',
                         section, re.S)
    assert len(details) == 5 and [bool(d[1]) for d in details] == [True] + [False] * 4
    details = [(trial_id, body) for trial_id, _, body in details]
    trial_id, body = details[0]
    assert ">model.layers</td>" in body and ">train.lr</td>" in body
    assert "rerun: <code>python sweep.py " in body and f"name=demo-{trial_id}" in body
    assert "planned peak 12 MiB, measured peak 10 MiB" in body
    assert "micro-batch 16 x accumulation 2" in body
    assert body.count("<img") == 1  # every member's curves
    assert "<th>neutral</th>" in body  # the confusion with class names


def test_best_command_reruns_the_best_configuration(tmp_path: Path) -> None:
    """The command line parses with the real CLI and pins every searched key to the best
    trial's value (a one-trial sweep of its own)."""
    import shlex

    from orchestrator.cli import build_parser
    from orchestrator.report.html import rerun_command
    from orchestrator.sweepfile import load_spec, load_spec_from_args

    tiny = Path(__file__).parents[1] / "tiny_sweep.yaml"
    sweep_dir = tmp_path / "tiny"
    write_spec(str(sweep_dir), load_spec(tiny).as_dict())
    row = pd.Series({"trial_id": "abc123", "param.train.lr": 0.000321,
                     "param.model.pooling": "max", "status": "completed"})
    command = rerun_command(str(sweep_dir), "tiny", row)
    argv = shlex.split(command)
    assert argv[:3] == ["python", "sweep.py", f"{sweep_dir}/spec.yaml"]
    spec = load_spec_from_args(build_parser("run").parse_args(argv[2:]))
    assert spec.search.params == () and spec.search.trials == 1
    assert spec.train["lr"] == pytest.approx(0.000321) and spec.model["pooling"] == "max"
    assert spec.name == "tiny-abc123"
    text_row = row.copy()
    text_row["param.model.pooling"] = "[128, 128]"  # a list stored as its YAML text
    assert "'model.pooling=[128, 128]'" in rerun_command(str(sweep_dir), "tiny", text_row)
