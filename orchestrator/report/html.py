"""One self-contained offline HTML report per sweep (PNGs embedded as base64, also written beside).

Sections: summary and leaderboard, optimization history, parameter importance (Optuna's
evaluator over a study rebuilt from the stored trials by orchestrator/search.py), slice plots of
the top parameters, learning curves (mean ± std over members) of the top trials, the best trial's
test confusion matrices per fold and summed, and the failed / pruned / collapsed trials with
their reasons.
`sweep.py report DIR` (report/cli.py) writes <DIR>/report/report.html.
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path

import optuna
import pandas as pd

from orchestrator import query
from orchestrator.report import plots as report_plots
from orchestrator.search import study_from_trials
from orchestrator.store import schema
from trainables import names

log = logging.getLogger(__name__)
TOP_TRIALS = 5
TOP_PARAMS = 4


def _distribution(values: pd.Series):
    """An Optuna distribution covering the stored values, or None if they are constant."""
    values = values.dropna()
    if values.nunique() < 2:
        return None
    dists = optuna.distributions
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return dists.CategoricalDistribution(sorted(values.astype(str).unique()))
    low, high = float(values.min()), float(values.max())
    if (values == values.round()).all() and not pd.api.types.is_float_dtype(values):
        return dists.IntDistribution(int(low), int(high))
    return dists.FloatDistribution(low, high, log=low > 0 and high / low >= 100)


def _native(value, dist):
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return str(value)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return int(value)
    return float(value)


def param_importances(trials: pd.DataFrame) -> tuple[dict[str, float] | None, str, set[str]]:
    """(importances, why-not message, log-scale params) from the scored trials."""
    done = trials[trials[schema.STATUS].isin(schema.SCORED_STATUSES)
                  & trials[names.OBJECTIVE].notna()]
    dists = {c: _distribution(done[c]) for c in query.param_columns(done)}
    log_params = {c for c, d in dists.items() if getattr(d, "log", False)}
    dists = {c: d for c, d in dists.items() if d is not None}
    if len(done) < 2:
        return None, f"needs at least 2 completed trials (have {len(done)})", log_params
    if not dists:
        return None, "every parameter was constant over the completed trials", log_params
    mode = _first(done[schema.MODE], "max")

    def params_of(row: dict) -> tuple[dict, dict]:
        params = {c: _native(row[c], d) for c, d in dists.items() if pd.notna(row[c])}
        return params, {c: dists[c] for c in params}

    study = study_from_trials(done, direction=mode, params_of=params_of)
    try:
        found = optuna.importance.get_param_importances(study, evaluator=_evaluator())
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        return None, f"Optuna could not compute importances: {exc}", log_params
    return dict(found), "", log_params


def _evaluator() -> optuna.importance.BaseImportanceEvaluator:
    """fANOVA, Optuna's default (scikit-learn is a dependency of sersweep), seeded."""
    return optuna.importance.FanovaImportanceEvaluator(seed=0)


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
            reason = f"all {_count(row.get('members'))} members collapsed to one class"
        rows.append({schema.TRIAL_ID: row[schema.TRIAL_ID], schema.STATUS: status,
                     schema.EPOCHS_RUN: row.get(schema.EPOCHS_RUN), "reason": reason})
    columns = [schema.TRIAL_ID, schema.STATUS, schema.EPOCHS_RUN, "reason"]
    return pd.DataFrame(rows, columns=columns)


def _first(column: pd.Series, default: str) -> str:
    """The column's first recorded value (mode, metric: one per sweep), else `default`."""
    known = column.dropna()
    return str(known.iloc[0]) if len(known) else default


def _figures(results: query.Results, out: Path) -> list[tuple[str, Path | None, str]]:
    """(section title, PNG or None, note) for every figure section."""
    trials = results.trials
    mode = _first(trials[schema.MODE], "max")
    metric = _first(trials[schema.METRIC], names.VAL_UAR)
    scored = trials[trials[names.OBJECTIVE].notna()]
    sections: list[tuple[str, Path | None, str]] = []
    if len(scored):
        sections.append(("Optimization history",
                          report_plots.history(scored, mode, out / "history.png"), ""))
    else:
        sections.append(("Optimization history", None, "no trial reported an objective"))
    found, why, log_params = param_importances(trials)
    if found:
        sections.append(("Parameter importance",
                         report_plots.importance(found, out / "importance.png"), ""))
        top = list(found)[:TOP_PARAMS]
    else:
        sections.append(("Parameter importance", None, f"skipped: {why}"))
        top = [c for c in query.param_columns(scored) if scored[c].nunique() > 1][:TOP_PARAMS]
    if top and len(scored):
        sections.append(("Slice plots", report_plots.slices(scored, top, log_params,
                                                             out / "slices.png"), ""))
    else:
        sections.append(("Slice plots", None, "no varying parameter with a scored trial"))
    board = query.leaderboard(results, top=TOP_TRIALS)
    board = board[board[names.OBJECTIVE].notna()]
    frame = query.curves(results, list(board[schema.TRIAL_ID]))
    if len(frame):
        labels = {t: f"#{r} {t} ({o:.3f})" for r, t, o in
                  zip(board["rank"], board[schema.TRIAL_ID], board[names.OBJECTIVE])}
        sections.append((f"Learning curves of the top {len(board)} trials",
                         report_plots.curves(frame, metric, labels, out / "curves.png"), ""))
    else:
        sections.append(("Learning curves", None, "no epochs recorded"))
    if len(board):
        best = board[schema.TRIAL_ID].iloc[0]
        members = results.members[results.members[schema.TRIAL_ID] == best]
        if members[schema.TEST_CONFUSION].notna().any():
            path = report_plots.confusion(members, f"best trial {best}: test confusion",
                                          out / "confusion.png")
            sections.append((f"Confusion matrix of the best trial ({best})", path, ""))
    return sections


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


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
    parts = [f"<h1>Sweep {html.escape(sweep)}</h1>",
             f"<p>{html.escape(query.summary(trials))}</p>",
             "<h2>Leaderboard</h2>",
             _table(query.leaderboard(results, top=10))]
    for title, png, note in _figures(results, out):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(_img(png) if png else f"<p class=note>{html.escape(note)}</p>")
    failures = failure_table(trials)
    parts.append("<h2>Failed, pruned and collapsed trials</h2>")
    parts.append(failures.to_html(index=False, escape=True) if len(failures) else "<p>none</p>")
    page = out / "report.html"
    page.write_text(_PAGE.format(title=html.escape(sweep), body="\n".join(parts)),
                    encoding="utf-8")
    return page


def _table(frame: pd.DataFrame) -> str:
    text = query.format_frame(frame, "table")
    return f"<pre>{html.escape(str(text))}</pre>"


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>sersweep report: {title}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;}}
img{{max-width:100%;}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:2px 6px}} pre{{font-size:12px;overflow-x:auto}}
.note{{color:#777}}</style></head>
<body>
{body}
</body></html>
"""
