"""Tables made from the store: leaderboard, group-by, learning curves, and their text/CSV/JSON/
Parquet output. The CLI glue is cli.py; SQL and --where are sql.py.
"""

from __future__ import annotations

import io

import pandas as pd

from orchestrator.query.results import QueryError, Results, check_column
from orchestrator.query.sql import filter_where
from orchestrator.store import read_dir, schema
from trainables import names

FORMATS = ("table", "csv", "json", "parquet")
SHOWN_METRICS = tuple(names.split_metric(s, m) for s in ("val", "test")
                      for m in (names.ACC, names.UAR, names.F1_MACRO))
CURVE_METRICS = schema.EPOCH_METRICS


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


def leaderboard(
    results: Results,
    top: int = 10,
    by: str | None = None,
    where: str | None = None,
    ascending: bool | None = None,
) -> pd.DataFrame:
    """The `top` trials by `by` (default: the objective; direction from the sweep's mode, or
    ascending for losses/costs), with mean and std of val/test acc, UAR, macro-F1, the params,
    status and collapsed members. `where`: a SQL boolean over the trials columns.
    `frame.attrs["status_counts"]` / `["summary"]` describe all trials that passed `where`."""
    trials = filter_where(results.trials, where)
    by = check_column(trials, by or names.OBJECTIVE)
    order = trials.sort_values(by, ascending=_ascending(trials, by, ascending),
                               na_position="last", kind="stable")
    columns = [schema.SWEEP] if trials[schema.SWEEP].nunique() > 1 else []
    columns += [schema.TRIAL_ID, schema.STATUS, names.OBJECTIVE]
    columns += [by] if by != names.OBJECTIVE else []
    for metric in SHOWN_METRICS:
        columns += [names.mean_key(metric), names.std_key(metric)]
    columns += [schema.MEMBERS, schema.MEMBERS_COLLAPSED, schema.EPOCHS_RUN]
    columns += param_columns(trials)
    board = order.head(top)[[c for c in columns if c in order.columns]].reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    board.attrs = {"status_counts": status_counts(trials), "summary": summary(trials)}
    return board


def group_by(
    results: Results, param: str, by: str | None = None, where: str | None = None
) -> pd.DataFrame:
    """Per value of `param` (`model.layers` or `param.model.layers`): trials, scored trials,
    mean, std (ddof=1), best of `by` (default objective) and the best trial."""
    trials = filter_where(results.trials, where)
    column = check_column(trials, param)
    by = check_column(trials, by or names.OBJECTIVE)
    best_low = _ascending(trials, by, None)
    rows = []
    for value, group in trials.groupby(column, dropna=False, sort=True):
        scored = group.dropna(subset=[by])
        pick = scored[by].idxmin() if best_low else scored[by].idxmax()
        rows.append({
            column: value, "trials": len(group), "scored": len(scored),
            schema.COMPLETED: int((group[schema.STATUS] == schema.COMPLETED).sum()),
            f"{by}_mean": scored[by].mean(), f"{by}_std": scored[by].std(),
            f"{by}_best": scored[by].min() if best_low else scored[by].max(),
            "best_trial": scored.loc[pick, schema.TRIAL_ID] if len(scored) else None,
        })
    return pd.DataFrame(rows)


# --- learning curves and output ------------------------------------------------------------


def curves(results: Results, trial_ids: list[str], metrics=CURVE_METRICS) -> pd.DataFrame:
    """Per trial and epoch: members reporting, and mean / std (ddof=0) over members of each
    metric. Reads only the asked trials' rows unless the epochs table is already loaded."""
    wanted = {str(t) for t in trial_ids}
    if "epochs" in results._frames:
        epochs = results.epochs[results.epochs[schema.TRIAL_ID].isin(wanted)]
    else:
        frames = [read_dir(results.fs, f"{p}/epochs", wanted) for p in results.sweeps.values()]
        frames = [f for f in frames if not f.empty]
        epochs = pd.concat(frames, ignore_index=True) if frames else results.epochs
    metrics = [m for m in metrics if m in epochs.columns]
    grouped = epochs.groupby([schema.SWEEP, schema.TRIAL_ID, "epoch"], sort=True)
    out = grouped[metrics].agg(["mean", lambda s: s.std(ddof=0)])
    out.columns = [f"{m}_{'mean' if a == 'mean' else 'std'}" for m, a in out.columns]
    out.insert(0, schema.MEMBERS, grouped["member"].nunique())
    return out.reset_index()


def format_frame(frame: pd.DataFrame, fmt: str) -> str | bytes:
    """table (aligned text, `x_mean`/`x_std` shown as `m ± s`) | csv | json (records) |
    parquet (bytes)."""
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
    shown = frame.copy()
    for column in list(shown.columns):
        base = str(column).removesuffix("_mean")
        if column == base or f"{base}_std" not in shown.columns:
            continue
        mean, std = shown[column], shown[f"{base}_std"]
        text = [("-" if pd.isna(m) else f"{m:.3f}±{0 if pd.isna(s) else s:.3f}")
                for m, s in zip(mean, std)]
        shown[column] = text
        shown = shown.drop(columns=f"{base}_std").rename(columns={column: base})
    shown.columns = [str(c).removeprefix(schema.PARAM_PREFIX) for c in shown.columns]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


