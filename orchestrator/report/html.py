"""One self-contained offline HTML report per sweep (PNGs embedded as base64, also written beside).

Sections: summary; the leaderboard as a sortable HTML table (params visible, status with collapsed
trials marked, mean ± std (n), each trial's fold-paired difference to #1 and to the reference
baseline with its 95 % interval, Wilcoxon p and the tie mark: query.leaderboard, table.py); the
Optuna figures (optuna_plots.py: history, importance with a caveat below
MIN_TRIALS_FOR_IMPORTANCE, slice, parallel coordinates, contour), drawn from the study that
report/study.py rebuilds with the sweep file's distributions; learning curves (mean ± std over
members) of the top trials; the best trial's (and the baseline's) test confusion matrices with
class names; the failed / pruned / collapsed trials with their reasons.
`sweep.py report DIR` (report/cli.py) writes <DIR>/report/report.html.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from orchestrator import query
from orchestrator.report import optuna_plots
from orchestrator.report import plots as report_plots
from orchestrator.report.plots import Figure
from orchestrator.report.study import SweepStudy, sweep_study
from orchestrator.report.table import SORT_SCRIPT, confusion_html, html_table, leaderboard_html
from orchestrator.store import schema
from trainables import names

TOP_TRIALS = 5  # learning curves
BOARD_ROWS = 20  # leaderboard rows (>= TOP_TRIALS)


def param_importances(sweep: SweepStudy) -> tuple[dict[str, float] | None, str]:
    """(importances by dotted key, sum 1, most important first; or None, and why not)."""
    found = optuna_plots.importances(sweep)
    if found is not None:
        return found, ""
    if len(sweep.complete) < 2:
        return None, f"needs at least 2 complete trials (have {len(sweep.complete)})"
    return None, "no parameter varied over the complete trials"


def _count(value) -> str:
    return "?" if value is None or pd.isna(value) else str(int(value))


def failure_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that did not complete (and collapsed ones), with the reason in one line."""
    rows = []
    ended = trials[trials[schema.STATUS] != schema.COMPLETED].sort_values(schema.TRIAL_ID)
    for row in ended.to_dict("records"):
        status = row[schema.STATUS]
        if status in schema.FAILED_STATUSES:
            lines = [ln for ln in str(row.get(schema.ERROR) or "").splitlines() if ln.strip()]
            reason = lines[-1].strip() if lines else "no error text"
        elif status == schema.PRUNED:
            reason = f"stopped by the scheduler after epoch {_count(row.get('epochs_run'))}"
        else:
            reason = f"all {_count(row.get('members'))} members collapsed"
        rows.append({schema.TRIAL_ID: row[schema.TRIAL_ID], schema.STATUS: status,
                     schema.EPOCHS_RUN: row.get(schema.EPOCHS_RUN), "reason": reason})
    columns = [schema.TRIAL_ID, schema.STATUS, schema.EPOCHS_RUN, "reason"]
    return pd.DataFrame(rows, columns=columns)


def _first(column: pd.Series, default: str) -> str:
    """The column's first recorded value (mode, metric: one per sweep), else `default`."""
    known = column.dropna()
    return str(known.iloc[0]) if len(known) else default


def _optuna_figures(sweep: SweepStudy, target: str, out: Path) -> list[Figure]:
    found, _ = param_importances(sweep)
    varying = sweep.varying_params()
    # most important first where known: slices / contour show the parameters that matter
    ordered = [p for p in (found or {}) if p in varying] + [
        p for p in varying if p not in (found or {})]
    return [
        optuna_plots.history(sweep, target, out / "history.png"),
        optuna_plots.importance(sweep, found, target, out / "importance.png"),
        optuna_plots.slices(sweep, ordered, target, out / "slices.png"),
        optuna_plots.parallel(sweep, ordered, target, out / "parallel.png"),
        optuna_plots.contour(sweep, ordered, target, out / "contour.png"),
    ]


def _curves(results: query.Results, board: pd.DataFrame, metric: str, out: Path) -> Figure:
    """Learning curves of the TOP_TRIALS best rows of `board` (the leaderboard) with a score."""
    board = board[board[names.OBJECTIVE].notna() & (board[schema.STATUS] != schema.REFERENCE)]
    board = board.head(TOP_TRIALS)
    frame = query.curves(results, list(board[schema.TRIAL_ID])) if len(board) else pd.DataFrame()
    title = f"Learning curves of the top {len(board)} trials"
    if not len(frame):
        return Figure("Learning curves", None, "no epochs recorded")
    labels = {t: f"#{r} {t} ({o:.3f})" for r, t, o in
              zip(board["rank"], board[schema.TRIAL_ID], board[names.OBJECTIVE])}
    return Figure(title, report_plots.curves(frame, metric, labels, out / "curves.png"),
                  "mean over members (line) ± one sample std (band) per epoch")


def _confusions(results: query.Results, sweep: str, best: str | None, out: Path) -> Figure:
    title = "Test confusion matrices"
    if best is None:
        return Figure(title, None, "no ranked trial: nothing to show")
    matrices: dict[str, pd.DataFrame] = {}
    members = results.members
    folds = sorted(members.loc[members[schema.TRIAL_ID] == best, "fold"].astype(str).unique())
    try:
        for fold in folds if len(folds) > 1 else []:
            matrices[f"fold {fold}"] = query.confusion(results, best, sweep=sweep, fold=fold)
        matrices[f"{best}: all folds"] = query.confusion(results, best, sweep=sweep)
    except query.QueryError as exc:
        return Figure(title, None, f"not drawn: {exc}")
    try:
        matrices["baseline: all folds"] = query.confusion(results, schema.BASELINE_ID,
                                                          sweep=sweep)
    except query.QueryError:  # a sweep without baseline.parquet
        pass
    named = not all(str(c).isdigit() for c in next(iter(matrices.values())).index)
    caveat = "rows: true class, columns: predicted; summed over seeds" + (
        "" if named else "; class names were not stored with this sweep (indices shown)")
    path = report_plots.confusion(matrices, f"best trial {best}: test confusion",
                                  out / "confusion.png")
    counts = "".join(f"<h3>{html.escape(name)}</h3>{confusion_html(frame)}"
                     for name, frame in matrices.items() if "all folds" in name)
    extra = f"<details><summary>the summed counts as tables</summary>{counts}</details>"
    return Figure(f"Confusion matrices of the best trial ({best})", path, caveat, extra)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _section(figure: Figure) -> str:
    parts = [f"<h2>{html.escape(figure.title)}</h2>"]
    if figure.png is not None:
        parts.append(_img(figure.png))
    if figure.caveat:
        cls = "caveat" if figure.png is not None else "caveat missing"
        parts.append(f'<p class="{cls}">{html.escape(figure.caveat)}</p>')
    if figure.extra_html:
        parts.append(figure.extra_html)
    return "\n".join(parts)


def write_report(sweep_dir: str, out_dir: str | None = None) -> Path:
    """Write report.html (+ the PNGs) for the one sweep at `sweep_dir`; returns the HTML path.
    Default `out_dir`: <sweep_dir>/report for a local sweep, ./report-<sweep> for a URI."""
    results = query.load(sweep_dir)
    if len(results.sweeps) != 1:
        raise query.QueryError(f"{sweep_dir} holds {len(results.sweeps)} sweeps; give one")
    sweep = next(iter(results.sweeps))
    if out_dir is None:
        out_dir = f"report-{sweep}" if "://" in str(sweep_dir) else f"{sweep_dir}/report"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trials = results.trials
    if trials.empty:
        raise query.QueryError(f"no trials recorded under {sweep_dir}")
    mode = _first(trials[schema.MODE], "max")
    metric = _first(trials[schema.METRIC], names.VAL_UAR)
    study = sweep_study(results, sweep, trials, mode)
    best_row = query.best_trial(trials)
    best = None if best_row is None else str(best_row[schema.TRIAL_ID])
    board = query.leaderboard(results, top=BOARD_ROWS)
    verdict_rule = board.attrs.get("verdict_rule", "")
    reported = board.attrs.get("reported_metric", "test_uar")
    compared = "“vs #1” / “vs baseline”" if "vs_baseline" in board.columns else "“vs #1”"
    parts = [f"<h1>Sweep {html.escape(sweep)}</h1>",
             f"<p>{html.escape(query.summary(trials))}; objective: {html.escape(metric)} "
             f"({html.escape(mode)}), mean over members of each member's best epoch.</p>",
             f"<h2>Leaderboard (top {min(BOARD_ROWS, len(trials))} of {len(trials)})</h2>",
             leaderboard_html(board, best),
             '<p class="caveat">Click a header to sort. '
             f"{compared}: paired difference on {html.escape(reported)} per test set (the "
             "mean over its seeds; this trial − the other), its 95 % t-interval, n test sets; "
             f"{html.escape(verdict_rule)}. Failed, does_not_fit and collapsed trials are "
             "listed after the ranked ones, with no rank and no verdict.</p>"]
    objective_name = f"objective ({metric})"
    figures = _optuna_figures(study, objective_name, out)
    figures += [_curves(results, board, metric, out), _confusions(results, sweep, best, out)]
    if study.notes:
        parts.append(f'<p class="caveat">{html.escape("; ".join(study.notes))}</p>')
    parts.extend(_section(f) for f in figures)
    failures = failure_table(trials)
    parts.append("<h2>Failed, pruned and collapsed trials</h2>")
    parts.append(html_table(failures) if len(failures) else "<p>none</p>")
    page = out / "report.html"
    page.write_text(_PAGE.format(title=html.escape(sweep), body="\n".join(parts),
                                 script=SORT_SCRIPT), encoding="utf-8")
    return page


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>sersweep report: {title}</title>
<style>
body{{font-family:sans-serif;margin:1.5em 2em;max-width:1500px;color:#222}}
img{{max-width:100%;height:auto;display:block}}
h2{{margin-top:1.6em;border-bottom:1px solid #ddd}}
.scroll{{overflow-x:auto}}
table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;vertical-align:top}}
th{{background:#f2f2f2;cursor:pointer;position:sticky;top:0}}
th.param{{background:#e8f0fb}} th.paired{{background:#fbf3e4}}
td.num{{text-align:right;white-space:nowrap}} td.paired{{white-space:nowrap}}
td.na{{color:#aaa;text-align:center}}
tr.row-best td{{background:#eef8ee}}
tr.row-collapsed td{{background:#fdecec}}
tr.row-reference td{{background:#eef2f8;font-style:italic}}
tr.row-failed td,tr.row-does_not_fit td{{color:#888}}
.status{{padding:0 4px;border-radius:3px}}
.status.collapsed{{background:#c0392b;color:#fff}}
.status.pruned{{background:#e67e22;color:#fff}}
.status.failed,.status.does_not_fit{{background:#777;color:#fff}}
.status.reference{{background:#34609b;color:#fff}}
.tied{{background:#f1c40f;border-radius:3px;padding:0 4px;font-size:11px}}
.warn{{color:#c0392b;font-weight:bold}}
.caveat{{color:#666;font-size:13px}} .missing{{font-style:italic}}
small{{color:#555}}
</style></head>
<body>
{body}
{script}
</body></html>
"""
