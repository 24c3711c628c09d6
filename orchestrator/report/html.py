"""One self-contained offline HTML report per sweep (PNGs embedded as base64, also written beside).

Sections: summary; the leaderboard as a sortable HTML table (params visible, status with collapsed
trials marked, mean ± std (n), each trial's fold-paired difference to #1 and to the reference
baseline with its 95 % interval, Wilcoxon p and the tie mark: query.leaderboard, table.py); the
best configuration as the command line that reruns it; the optimization history in start order
(plots.history); the Optuna figures (optuna_plots.py: importance and contour only from
MIN_TRIALS_FOR_IMPORTANCE / MIN_TRIALS_FOR_CONTOUR complete trials, one slice plot per parameter,
parallel coordinates), drawn from the study that report/study.py rebuilds with the sweep file's
distributions; learning curves (mean ± std over members) of the top trials; the best trial's (and
the baseline's) test confusion matrices with class names; the timeline of trials (start, end,
status, GPU share) and GPU-hours per status; one section per top trial (params, its rerun
command, every member's curves, its confusion, the planned and measured memory); the failed /
pruned / collapsed trials with their reasons.
`sweep.py report DIR` (report/report_command.py) writes <DIR>/report/report.html.
"""

from __future__ import annotations

import base64
import html
import json
import shlex
from pathlib import Path

import pandas as pd
import yaml

from orchestrator import query
from orchestrator.report import optuna_plots
from orchestrator.report import plots as report_plots
from orchestrator.report.plots import Figure
from orchestrator.report.study import SweepStudy, sweep_study
from orchestrator.report.table import SORT_SCRIPT, confusion_html, html_table, leaderboard_html
from orchestrator.store import schema
from trainables import names

TOP_TRIALS = 5  # learning curves, and the per-trial sections
STARTED, ENDED = "started_at", "ended_at"  # store/schema.py's TRIAL_FIELDS (driver clock, UTC)
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


def start_order(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials in the order they started (started_at; ended_at, then the id, where a time is
    missing), numbered from 1 in column `order`."""
    frame = trials.copy()
    for column in (STARTED, ENDED):
        if column not in frame:
            frame[column] = pd.NaT
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame["_when"] = frame[STARTED].fillna(frame[ENDED])
    frame = frame.sort_values(["_when", schema.TRIAL_ID], na_position="last", kind="stable")
    frame["order"] = range(1, len(frame) + 1)
    return frame.drop(columns="_when").reset_index(drop=True)


def _set_value(value) -> str:
    """A value as `--set` parses it (YAML): strings that are YAML of something else (a stored
    `[128, 128]`) as they are, everything else as JSON (valid YAML flow)."""
    if isinstance(value, str):
        try:
            return value if not isinstance(yaml.safe_load(value), str) or (
                yaml.safe_load(value) == value) else json.dumps(value)
        except yaml.YAMLError:
            return json.dumps(value)
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    return json.dumps(value.tolist() if hasattr(value, "tolist") else value)


def rerun_command(sweep_dir: str, sweep: str, row: pd.Series | dict) -> str:
    """The command line that trains `row`'s configuration again, as a one-trial sweep of its own
    (the sweep file as run, every searched key pinned by --set, another results name)."""
    parts = ["python", "sweep.py", f"{str(sweep_dir).rstrip('/')}/spec.yaml", "--trials", "1",
             "--set", f"name={sweep}-{row[schema.TRIAL_ID]}"]
    for column, value in dict(row).items():
        if not str(column).startswith(schema.PARAM_PREFIX):
            continue
        if value is None or (not isinstance(value, list | tuple | dict) and pd.isna(value)):
            continue  # a conditional param that did not apply to this trial
        key = str(column).removeprefix(schema.PARAM_PREFIX)
        parts += ["--set", f"{key}={_set_value(value)}"]
    return " ".join(shlex.quote(part) for part in parts)


def resource_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per status: trials, trial-hours (wall) and GPU-hours, with a total row."""
    frame = trials.assign(
        wall_hours=trials.get("wall_seconds", pd.Series(dtype=float)).astype(float) / 3600,
        gpu_hours=trials.get("gpu_hours", pd.Series(dtype=float)).astype(float))
    table = frame.groupby(schema.STATUS).agg(trials=(schema.TRIAL_ID, "size"),
                                              trial_hours=("wall_hours", "sum"),
                                              gpu_hours=("gpu_hours", "sum")).reset_index()
    total = {schema.STATUS: "all", "trials": int(table["trials"].sum()),
             "trial_hours": table["trial_hours"].sum(), "gpu_hours": table["gpu_hours"].sum()}
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    return table.round({"trial_hours": 3, "gpu_hours": 3})


def _timeline(trials: pd.DataFrame, out: Path) -> Figure:
    title = "Timeline of trials and GPU-hours"
    ordered = start_order(trials)
    timed = ordered[ordered[STARTED].notna() & ordered[ENDED].notna()]
    table = html_table(resource_table(trials))
    caveat = ("bars: each trial from its start to its end (driver clock), coloured by status, "
              "with its GPU share; the table: trial-hours (wall) and GPU-hours per status")
    if not len(timed):
        return Figure(title, None, "no start / end times recorded: no timeline", table)
    if len(timed) < len(ordered):
        left = len(ordered) - len(timed)
        caveat += f"; {left} trial{'s' if left > 1 else ''} without both times left out"
    if "gpu_fraction" not in timed:
        timed = timed.assign(gpu_fraction=float("nan"))
    return Figure(title, report_plots.timeline(timed, out / "timeline.png"), caveat, table)


def _history(trials: pd.DataFrame, mode: str, target: str, out: Path) -> Figure:
    ordered = start_order(trials)
    if not ordered[names.OBJECTIVE].notna().any():
        return Figure("Optimization history", None, "no trial has an objective: nothing to draw")
    return Figure("Optimization history",
                  report_plots.history(ordered, mode, target, out / "history.png"),
                  "every trial with an objective, in the order the trials started; the line is "
                  "the best so far over completed and pruned trials (collapsed ones never rank)")


def _memory_html(row: dict) -> str:
    """The planned and measured memory of one trial, one line."""
    def size(value) -> str:
        return "-" if value is None or pd.isna(value) else f"{float(value) / 2**20:.0f} MiB"

    def number(value) -> str:
        return "-" if value is None or pd.isna(value) else f"{value:g}"

    kind = row.get(names.MEASURED_PEAK_KIND)
    what = {names.PEAK_CUDA_ALLOCATED: " (CUDA allocated)",
            names.PEAK_CPU_RSS: " (the worker's RSS, not comparable with the plan)"}.get(
                kind if isinstance(kind, str) else None, "")
    return (f"<p>memory: micro-batch {number(row.get('micro_batch'))} x accumulation "
            f"{number(row.get('accumulation'))}; planned peak "
            f"{size(row.get('estimated_peak_bytes'))}, measured peak "
            f"{size(row.get('measured_peak_bytes'))}{what}; GPU share "
            f"{number(row.get('gpu_fraction'))} on {html.escape(str(row.get('device') or '-'))}"
            f"; {number(row.get('oom_retries'))} out-of-memory retries</p>")


def trial_sections(results: query.Results, board: pd.DataFrame, sweep: str, sweep_dir: str,
                   metric: str, out: Path) -> str:
    """One collapsible section per top-ranked trial: params, rerun command, every member's
    curves, its test confusion (summed over members), the planned memory."""
    ranked = board[board[names.OBJECTIVE].notna() & (board[schema.STATUS] != schema.REFERENCE)]
    trials = results.trials.set_index(schema.TRIAL_ID)
    epochs = results.epochs
    parts = [f"<h2>Trials (the top {min(TOP_TRIALS, len(ranked))})</h2>"]
    for rank, trial_id in zip(ranked["rank"].head(TOP_TRIALS),
                              ranked[schema.TRIAL_ID].head(TOP_TRIALS), strict=True):
        row = trials.loc[trial_id].to_dict() | {schema.TRIAL_ID: trial_id}
        params = {k.removeprefix(schema.PARAM_PREFIX): v for k, v in row.items()
                  if str(k).startswith(schema.PARAM_PREFIX) and not (
                      v is None or (not isinstance(v, list | tuple) and pd.isna(v)))}
        body = [f"<p>status {html.escape(str(row[schema.STATUS]))}, objective "
                f"{row[names.OBJECTIVE]:.4f}, {int(row.get(schema.EPOCHS_RUN) or 0)} epochs</p>",
                html_table(pd.DataFrame({"param": list(params),
                                         "value": [str(v) for v in params.values()]})),
                f'<p class="cmd">rerun: <code>'
                f"{html.escape(rerun_command(sweep_dir, sweep, row))}</code></p>",
                _memory_html(row)]
        own = epochs[epochs[schema.TRIAL_ID] == trial_id] if len(epochs) else epochs
        if len(own):
            png = report_plots.member_curves(own, metric, trial_id,
                                             out / f"trial_{trial_id}_curves.png")
            body.append(_img(png))
        try:
            body.append("<h4>test confusion, summed over members</h4>"
                        + confusion_html(query.confusion(results, trial_id, sweep=sweep)))
        except query.QueryError as exc:
            body.append(f'<p class="caveat">confusion: {html.escape(str(exc))}</p>')
        shown = " open" if rank == 1 else ""  # the best trial's section open
        parts.append(f'<details class="trial" id="trial-{html.escape(trial_id)}"{shown}><summary>'
                     f"#{rank} {html.escape(trial_id)} ({row[names.OBJECTIVE]:.3f})</summary>"
                     + "\n".join(body) + "</details>")
    return "\n".join(parts)


def _optuna_figures(sweep: SweepStudy, target: str, out: Path) -> list[Figure]:
    found, _ = param_importances(sweep)
    varying = sweep.varying_params()
    # most important first where known: slices / contour show the parameters that matter
    ordered = [p for p in (found or {}) if p in varying] + [
        p for p in varying if p not in (found or {})]
    return [
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
    for caption, png in figure.more:
        parts.append(f"<h3>{html.escape(caption)}</h3>{_img(png)}")
    if figure.caveat:
        cls = "caveat" if figure.png is not None or figure.more else "caveat missing"
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
    if best_row is not None:
        parts.append(f"<h2>Best configuration ({html.escape(best)})</h2>"
                     f'<p class="cmd"><code>'
                     f"{html.escape(rerun_command(sweep_dir, sweep, best_row))}</code></p>"
                     '<p class="caveat">reruns it as a one-trial sweep of its own (the sweep '
                     "file as run, each searched key pinned by --set); its results go to "
                     "another folder, so this sweep's record stays as it is</p>")
    objective_name = f"objective ({metric})"
    figures = [_history(trials, mode, objective_name, out)]
    figures += _optuna_figures(study, objective_name, out)
    figures += [_curves(results, board, metric, out), _confusions(results, sweep, best, out),
                _timeline(trials, out)]
    if study.notes:
        parts.append(f'<p class="caveat">{html.escape("; ".join(study.notes))}</p>')
    parts.extend(_section(f) for f in figures)
    parts.append(trial_sections(results, board, sweep, sweep_dir, metric, out))
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
.cmd code{{background:#f6f6f6;padding:4px 6px;display:block;white-space:pre-wrap;
word-break:break-all;font-size:12px}}
details.trial{{margin:.6em 0;border:1px solid #ddd;padding:.3em .8em}}
details.trial summary{{cursor:pointer;font-weight:bold}}
</style></head>
<body>
{body}
{script}
</body></html>
"""
