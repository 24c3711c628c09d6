"""Tables made from the store: leaderboard, group-by, learning curves, and their text/CSV/JSON/
Parquet output. The CLI glue is cli.py; SQL and --where are sql.py.
"""

from __future__ import annotations

import difflib
import io
import math
from typing import Any

import pandas as pd

from orchestrator.query.baselines import confusion, confusion_record, read_baselines
from orchestrator.query.paired import TIE_RULE, member_values, paired_difference
from orchestrator.query.results import QueryError, Results, check_column, display_name
from orchestrator.query.sql import filter_where
from orchestrator.store import read_dir, schema
from trainables import names
from trainables.stats import mean_std

FORMATS = ("table", "csv", "json", "parquet")
SHOWN_METRICS = tuple(names.split_metric(s, m) for s in ("val", "test")
                      for m in (names.ACC, names.UAR, names.F1_MACRO))
CURVE_METRICS = schema.EPOCH_METRICS
TEST_UAR = names.split_metric("test", names.UAR)


def _ascending(frame: pd.DataFrame, by: str, ascending: bool | None) -> bool:
    if ascending is not None:
        return ascending
    if "loss" in by or "seconds" in by or "bytes" in by or "hours" in by:
        return True
    modes = frame[schema.MODE].dropna().unique() if "mode" in frame else []
    return len(modes) > 0 and modes[0] == "min"


def param_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if str(c).startswith(schema.PARAM_PREFIX)]


def status_counts(frame: pd.DataFrame) -> dict[str, int]:
    if not len(frame):
        return {}
    return {k: int(v) for k, v in frame[schema.STATUS].value_counts().items()}


def summary(frame: pd.DataFrame) -> str:
    """`12 trials: 8 completed, 3 pruned, 1 failed; 5 of 48 members collapsed`."""
    counts = ", ".join(f"{v} {k}" for k, v in status_counts(frame).items())
    members = int(frame[schema.MEMBERS].fillna(0).sum()) if "members" in frame else 0
    collapsed = int(frame[schema.MEMBERS_COLLAPSED].fillna(0).sum()) if len(frame) else 0
    return f"{len(frame)} trials: {counts or 'none'}; {collapsed} of {members} members collapsed"


def best_trial(trials: pd.DataFrame) -> pd.Series | None:
    """THE best trial of `trials`: the best objective (the sweep's mode) among trials whose status
    may rank (schema.RANKED_STATUSES: never a collapsed or failed one); None when there is none."""
    if not len(trials):
        return None
    ranked = trials[trials[schema.STATUS].isin(schema.RANKED_STATUSES)
                    & trials[names.OBJECTIVE].notna()]
    if not len(ranked):
        return None
    low = _ascending(ranked, names.OBJECTIVE, None)
    pick = ranked[names.OBJECTIVE].idxmin() if low else ranked[names.OBJECTIVE].idxmax()
    return ranked.loc[pick]


def _member_metric(trials: pd.DataFrame) -> str:
    """The per-member value the objective averages: the sweep's search.metric (column metric)."""
    metrics = trials[schema.METRIC].dropna().unique() if schema.METRIC in trials else []
    return str(metrics[0]) if len(metrics) else names.VAL_UAR


def _baseline_row(sweep: str, rows: pd.DataFrame, metric: str) -> dict[str, Any]:
    row: dict[str, Any] = {schema.SWEEP: sweep, schema.TRIAL_ID: schema.BASELINE_ID,
                           schema.STATUS: schema.REFERENCE, schema.MEMBERS: len(rows),
                           schema.MEMBERS_COLLAPSED: 0}
    mean, std = mean_std(rows[metric]) if metric in rows else (math.nan, math.nan)
    row[names.OBJECTIVE], row[schema.OBJECTIVE_STD] = _none(mean), _none(std)
    for name in SHOWN_METRICS:
        if name in rows:
            mean, std = mean_std(rows[name])
            row[names.mean_key(name)], row[names.std_key(name)] = _none(mean), _none(std)
    return row


def _none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def _paired_columns(
    board: pd.DataFrame, results: Results, trials: pd.DataFrame, baselines: pd.DataFrame
) -> pd.DataFrame:
    """Per row: its fold-paired difference to its sweep's best trial (`vs_best*`) and to the
    sweep's baseline (`vs_baseline*`, only when a baseline exists), on each member's best
    validation metric (what the objective averages) and on test UAR (`test_uar_vs_*`)."""
    members = results.members
    metric = _member_metric(trials)
    out: list[dict[str, Any]] = []
    for row in board.to_dict("records"):
        sweep, values = row[schema.SWEEP], {}
        own = members[(members[schema.SWEEP] == sweep)
                      & (members[schema.TRIAL_ID] == row[schema.TRIAL_ID])]
        if row[schema.TRIAL_ID] == schema.BASELINE_ID and row[schema.STATUS] == schema.REFERENCE:
            own = baselines[baselines[schema.SWEEP] == sweep]
        best = best_trial(trials[trials[schema.SWEEP] == sweep])
        references = {"best": None, "baseline": None}
        if best is not None:
            references["best"] = members[(members[schema.SWEEP] == sweep)
                                         & (members[schema.TRIAL_ID] == best[schema.TRIAL_ID])]
        if len(baselines):
            references["baseline"] = baselines[baselines[schema.SWEEP] == sweep]
        for name, ref in references.items():
            if ref is None or (name == "baseline" and not len(baselines)):
                continue
            for column, prefix in ((metric, f"vs_{name}"), (TEST_UAR, f"test_uar_vs_{name}")):
                result = paired_difference(member_values(own, column), member_values(ref, column))
                values.update(result.columns(prefix))
        out.append(values)
    return pd.DataFrame(out, index=board.index)


def leaderboard(
    results: Results,
    top: int = 10,
    by: str | None = None,
    where: str | None = None,
    ascending: bool | None = None,
) -> pd.DataFrame:
    """The `top` trials by `by` (default: the objective; direction from the sweep's mode, or
    ascending for losses/costs), with mean and std of the objective and of val/test acc, UAR,
    macro-F1, the params, status and collapsed members. `where`: a SQL boolean over the trials
    columns (stored or display names). Collapsed / failed trials are listed after the others
    (they never rank as best: schema.RANKED_STATUSES).

    Fold-paired columns (query/paired.py; the tie rule is paired.TIE_RULE): `vs_best` (mean
    difference to the sweep's best trial on each member's best validation metric),
    `vs_best_low`/`_high` (95 % t-interval), `vs_best_p` (Wilcoxon), `vs_best_n`,
    `vs_best_tied`, `vs_best_note`; the same on test UAR as `test_uar_vs_best*`; and, when the
    sweep has a baseline.parquet, `vs_baseline*` / `test_uar_vs_baseline*` and one reference row
    (trial_id "baseline", status "reference", rank null) after the trials. `test_confusion`:
    {"classes", "matrix"} summed over the trial's members (JSON output; the table omits it).
    `frame.attrs["status_counts"]` / `["summary"]` describe all trials that passed `where`."""
    trials = filter_where(results.trials, where)
    by = check_column(trials, by or names.OBJECTIVE)
    ranks = (~trials[schema.STATUS].isin(schema.RANKED_STATUSES)).astype(int).rename("_ranked")
    order = trials.assign(_ranked=ranks).sort_values(
        ["_ranked", by], ascending=[True, _ascending(trials, by, ascending)],
        na_position="last", kind="stable").drop(columns="_ranked")
    head = [schema.SWEEP] if trials[schema.SWEEP].nunique() > 1 else []
    head += [schema.TRIAL_ID, schema.STATUS, names.OBJECTIVE, schema.OBJECTIVE_STD]
    columns = [by] if by not in (names.OBJECTIVE, schema.OBJECTIVE_STD) else []
    for metric in SHOWN_METRICS:
        columns += [names.mean_key(metric), names.std_key(metric)]
    columns += [schema.MEMBERS, schema.MEMBERS_COLLAPSED, schema.EPOCHS_RUN]
    columns += param_columns(trials)
    board = order.head(top).reset_index(drop=True)
    board.insert(0, "rank", pd.array(range(1, len(board) + 1), dtype="Int64"))
    baselines = read_baselines(results) if len(board) else pd.DataFrame()
    if len(baselines):
        metric = _member_metric(trials)
        shown = [s for s in board[schema.SWEEP].unique() if s in set(baselines[schema.SWEEP])]
        extra = pd.DataFrame([_baseline_row(s, baselines[baselines[schema.SWEEP] == s], metric)
                              for s in shown])
        board = pd.concat([board, extra], ignore_index=True)
        board["rank"] = board["rank"].astype("Int64")
    if len(board):
        board = pd.concat([board, _paired_columns(board, results, trials, baselines)], axis=1)
        board[schema.TEST_CONFUSION] = [_confusion_or_none(results, r) for r in
                                        board[[schema.SWEEP, schema.TRIAL_ID]].itertuples()]
    paired = [c for c in board.columns if str(c).startswith(("vs_", "test_uar_vs_"))]
    keep = ["rank", *head, *paired, *columns, schema.TEST_CONFUSION]
    board = board[[c for c in dict.fromkeys(keep) if c in board.columns]]
    board.attrs = {"status_counts": status_counts(trials), "summary": summary(trials),
                   "tie_rule": TIE_RULE}
    return board


def _confusion_or_none(results: Results, row: Any) -> dict[str, object] | None:
    try:
        return confusion_record(confusion(results, row.trial_id, sweep=row.sweep))
    except QueryError:  # a failed trial has no members: nothing to show
        return None


def group_by(
    results: Results, param: str, by: str | None = None, where: str | None = None
) -> pd.DataFrame:
    """Per value of `param` (`model.layers` or `param.model.layers`): trials, scored trials
    (= n of the mean), mean, sample std (ddof 1, trainables.stats.mean_std: null for n = 1),
    best of `by` (default objective) and the best trial. No trial left after `where` raises
    QueryError ("no trials match ...")."""
    trials = filter_where(results.trials, where)
    column = check_column(results.trials, param)
    if not len(trials):
        raise QueryError(f"no trials match --where {where!r}" if where else "no trials recorded")
    by = check_column(trials, by or names.OBJECTIVE)
    best_low = _ascending(trials, by, None)
    rows = []
    for value, group in trials.groupby(column, dropna=False, sort=True):
        scored = group.dropna(subset=[by])
        pick = scored[by].idxmin() if best_low else scored[by].idxmax()
        mean, std = mean_std(scored[by])
        rows.append({
            column: value, "trials": len(group), "scored": len(scored),
            schema.COMPLETED: int((group[schema.STATUS] == schema.COMPLETED).sum()),
            f"{by}_mean": _nan(mean), f"{by}_std": _nan(std),
            f"{by}_best": scored[by].min() if best_low else scored[by].max(),
            "best_trial": scored.loc[pick, schema.TRIAL_ID] if len(scored) else None,
        })
    return pd.DataFrame(rows)


def _nan(value: float) -> float:
    return float("nan") if value is None else value


# --- learning curves and output ------------------------------------------------------------


def curves(results: Results, trial_ids: list[str], metrics=CURVE_METRICS) -> pd.DataFrame:
    """Per trial and epoch: members reporting, and mean / sample std (ddof 1,
    trainables.stats.mean_std; null for one member) over members of each metric. Reads only the
    asked trials' rows unless the epochs table is already loaded. An id no trial has raises
    QueryError naming the ids that exist."""
    wanted = {str(t) for t in trial_ids}
    if not wanted:
        raise QueryError("--curves needs at least one trial id")
    known = set(results.trials[schema.TRIAL_ID].astype(str))
    unknown = sorted(wanted - known)
    if unknown:
        listed = sorted(known)
        shown = ", ".join(listed[:20]) + (f" (and {len(listed) - 20} more)" if len(listed) > 20
                                          else "")
        close = [m for u in unknown for m in difflib.get_close_matches(u, listed, n=1)]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise QueryError(f"no trial {', '.join(map(repr, unknown))}{hint} "
                         f"(trials: {shown or 'none recorded'})")
    if "epochs" in results._frames:
        epochs = results.epochs[results.epochs[schema.TRIAL_ID].isin(wanted)]
    else:
        frames = [read_dir(results.fs, f"{p}/epochs", wanted) for p in results.sweeps.values()]
        frames = [f for f in frames if not f.empty]
        epochs = pd.concat(frames, ignore_index=True) if frames else results.epochs
    metrics = [m for m in metrics if m in epochs.columns]
    grouped = epochs.groupby([schema.SWEEP, schema.TRIAL_ID, "epoch"], sort=True)
    out = grouped[metrics].agg(["mean", _sample_std])
    out.columns = [f"{m}_{'mean' if a == 'mean' else 'std'}" for m, a in out.columns]
    out.insert(0, schema.MEMBERS, grouped["member"].nunique())
    return out.reset_index()


def _sample_std(values: pd.Series) -> float:
    return mean_std(values)[1]


HIDDEN_IN_TABLE = (schema.TEST_CONFUSION,)  # JSON-shaped cells: --format json shows them


def format_frame(frame: pd.DataFrame, fmt: str) -> str | bytes:
    """table | csv | json (records) | parquet (bytes). The table shows each `x`/`x_mean` with
    its `x_std` as one `m±s` cell named `x` (the value alone where the std is null: n = 1),
    paired differences `d [low, high]`, params without `param.` (results.display_name: the names
    every query accepts) and omits HIDDEN_IN_TABLE and the test-UAR paired columns."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", date_format="iso")
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue()
    if fmt != "table":
        raise QueryError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    paired = [str(c) for c in frame.columns if str(c).startswith(("vs_", "test_uar_vs_"))]
    shown = frame.drop(columns=[c for c in frame.columns if c in HIDDEN_IN_TABLE
                                or str(c).startswith("test_uar_vs_")
                                or (c in paired and str(c).endswith(("_note", "_n")))])
    for column in list(shown.columns):
        base = str(column).removesuffix("_mean")
        if f"{base}_std" not in shown.columns or column == f"{base}_std":
            continue
        text = [("-" if pd.isna(m) else f"{m:.3f}" if pd.isna(s) else f"{m:.3f}±{s:.3f}")
                for m, s in zip(shown[column], shown[f"{base}_std"])]
        shown[column] = text
        shown = shown.drop(columns=f"{base}_std")
    for column in [c for c in shown.columns if f"{c}_low" in shown.columns]:
        text = [("-" if pd.isna(d) else f"{d:+.3f}" if pd.isna(lo) else
                 f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
                for d, lo, hi in zip(shown[column], shown[f"{column}_low"],
                                     shown[f"{column}_high"])]
        shown[column] = text
        shown = shown.drop(columns=[f"{column}_low", f"{column}_high"])
    for column in shown.columns:  # na_rep covers float NaN only: nullable ints and None too
        if not pd.api.types.is_float_dtype(shown[column]) and shown[column].isna().any():
            shown[column] = shown[column].astype(object).where(shown[column].notna(), "-")
    columns = [str(c) for c in frame.columns]
    shown.columns = [display_name(str(c), columns) for c in shown.columns]
    return shown.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}")
