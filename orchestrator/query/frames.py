"""Tables made from the store: leaderboard, group-by, learning curves, and their text/CSV/JSON/
Parquet output. The CLI glue is cli.py; SQL and --where are sql.py.
"""

from __future__ import annotations

import difflib
import io
import json
import math
import textwrap
from typing import Any

import pandas as pd

from orchestrator.query.baselines import (
    DATA_VARIANT,
    baseline_for,
    confusion,
    confusion_record,
    read_baselines,
    variant_key,
)
from orchestrator.query.confirmed import CONFIRM_TRIAL, CONFIRMED, OPTIMISM, confirmations
from orchestrator.query.paired import (
    ADD_FOLDS_FLAG,
    MIN_TEST_SETS,
    TOO_FEW,
    VERDICT_RULE,
    Paired,
    compare,
    holm,
    pairing_key,
    per_test_set,
    spread_over_test_sets,
)
from orchestrator.query.results import (
    QueryError,
    Results,
    check_column,
    column_names,
    display_name,
    unknown_name,
)
from orchestrator.query.sql import filter_where
from orchestrator.store import read_dir, schema
from trainables import names
from trainables.config import DATA_DEFAULTS
from trainables.stats import mean_std

FORMATS = ("table", "csv", "json", "parquet")
SHOWN_METRICS = tuple(names.split_metric(s, m) for s in ("val", "test")
                      for m in (names.ACC, names.UAR, names.F1_MACRO))
CURVE_METRICS = schema.EPOCH_METRICS
TEST_UAR = names.split_metric("test", names.UAR)
N_TEST_SETS = "n_test_sets"
OBJECTIVE_SEED_STD = "objective_seed_std"
TRANSDUCTIVE = "transductive"
TRANSDUCTIVE_MARK = "*"
TRANSDUCTIVE_NORMALIZE = "speaker"
NORMALIZE_KEY = "data.normalize"
BASELINE_VARIANT = "baseline_variant"
BEST = "#1"  # the verdict cell of #1 itself
PAIRED_PREFIXES = ("vs_", "val_vs_", "confirmed_vs_")
PAIRED_GROUPS = ("confirmed_vs_best", "confirmed_vs_baseline", "vs_best", "vs_baseline",
                 "val_vs_best", "val_vs_baseline")
PAIRED_PARTS = ("low", "high", "n", "verdict", "p", "t_p", "p_holm", "note")


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


def test_metric(metric: str, members: pd.DataFrame | None = None) -> str:
    """The test-side twin of the selection metric (val_uar -> test_uar): what is reported; test
    UAR when the members do not record that twin."""
    twin = names.split_metric("test", metric.removeprefix("val_"))
    if members is not None and len(members.columns) and twin not in members.columns:
        return TEST_UAR
    return twin


def _higher_is_better(trials: pd.DataFrame) -> bool:
    return not _ascending(trials, names.OBJECTIVE, None)


def _baseline_row(sweep: str, rows: pd.DataFrame, metric: str) -> dict[str, Any]:
    row: dict[str, Any] = {schema.SWEEP: sweep, schema.TRIAL_ID: schema.BASELINE_ID,
                           schema.STATUS: schema.REFERENCE, schema.MEMBERS: len(rows),
                           schema.MEMBERS_COLLAPSED: 0, TRANSDUCTIVE: False}
    mean = mean_std(rows[metric])[0] if metric in rows else math.nan
    row[names.OBJECTIVE] = _none(mean)
    return row


def _none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def _transductive(row: dict[str, Any]) -> bool | None:
    """data.normalize == speaker: each test speaker z-scored with statistics over all of its own
    test utterances (the result depends on the test set's make-up)."""
    value = row.get(f"{schema.PARAM_PREFIX}{NORMALIZE_KEY}")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        text = row.get(schema.CONFIG_JSON)
        if not isinstance(text, str):
            return None
        value = (json.loads(text).get("data") or {}).get("normalize", DATA_DEFAULTS["normalize"])
    return str(value) == TRANSDUCTIVE_NORMALIZE


def _spread_columns(own: pd.DataFrame, metric: str, reported: str) -> dict[str, Any]:
    """The `±` of every shown metric recomputed per test set: the mean over test sets of the
    seed-means, the sample std across test sets, n test sets, and the seed spread apart."""
    out: dict[str, Any] = {}
    if not len(own):
        return out
    key = pairing_key(own)
    _, sd, n, seed_sd = spread_over_test_sets(own, metric, key)
    out[N_TEST_SETS] = n
    out[schema.OBJECTIVE_STD], out[OBJECTIVE_SEED_STD] = _none(sd), _none(seed_sd)
    for name in dict.fromkeys((*SHOWN_METRICS, reported)):
        if name not in own.columns:
            continue
        mean, sd, _, seed_sd = spread_over_test_sets(own, name, key)
        out[names.mean_key(name)], out[names.std_key(name)] = _none(mean), _none(sd)
        out[f"{name}_seed_std"] = _none(seed_sd)
    return out


def _variant(row: dict[str, Any]) -> str:
    """The trial's searched data choices as the baseline's `data_variant` key."""
    return variant_key({k.removeprefix(schema.PARAM_PREFIX): v for k, v in row.items()
                        if str(k).startswith(f"{schema.PARAM_PREFIX}data.")
                        and not _missing(v)})


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _members_of(members: pd.DataFrame, sweep: str, trial_id: str) -> pd.DataFrame:
    if not len(members):
        return members
    return members[(members[schema.SWEEP] == sweep) & (members[schema.TRIAL_ID] == trial_id)]


def _paired_columns(
    board: pd.DataFrame, results: Results, trials: pd.DataFrame, baselines: pd.DataFrame
) -> pd.DataFrame:
    """Per row: its paired difference (query/paired.py: one value per test set) to its sweep's
    #1 and to the baseline of its data variant, on the TEST twin of the selection metric
    (`vs_best*`, `vs_baseline*`: what is reported) and on the selection metric itself
    (`val_vs_best*`, `val_vs_baseline*`). The comparisons against #1 form one Holm family per
    sweep (every ranked trial but #1). Unranked trials (failed, does_not_fit, collapsed) get
    none; the spread columns are recomputed per test set (_spread_columns)."""
    members = results.members
    metric = _member_metric(trials)
    reported = test_metric(metric, members)
    out: dict[int, dict[str, Any]] = {i: {} for i in board.index}
    for sweep in board[schema.SWEEP].unique():
        sweep_trials = trials[trials[schema.SWEEP] == sweep]
        higher = _higher_is_better(sweep_trials)
        best = best_trial(sweep_trials)
        best_rows = (_members_of(members, sweep, best[schema.TRIAL_ID]) if best is not None
                     else pd.DataFrame())
        sweep_base = (baselines[baselines[schema.SWEEP] == sweep] if len(baselines)
                      else pd.DataFrame())
        family: dict[str, dict[str, Paired]] = {"vs_best": {}, "val_vs_best": {}}
        ranked = sweep_trials[sweep_trials[schema.STATUS].isin(schema.RANKED_STATUSES)
                              & sweep_trials[names.OBJECTIVE].notna()]
        if best is not None:  # the whole family, also the trials below --top
            for tid in ranked[schema.TRIAL_ID]:
                if tid == best[schema.TRIAL_ID]:
                    continue
                own = _members_of(members, sweep, tid)
                family["vs_best"][tid] = compare(own, best_rows, reported, higher)
                family["val_vs_best"][tid] = compare(own, best_rows, metric, higher)
        for prefix, results_of in family.items():
            ids = list(results_of)
            family[prefix] = dict(zip(ids, holm([results_of[t] for t in ids]), strict=True))
        for i, row in board[board[schema.SWEEP] == sweep].iterrows():
            tid, status = row[schema.TRIAL_ID], row[schema.STATUS]
            record = row.to_dict()
            values = out[i]
            values[TRANSDUCTIVE] = (False if status == schema.REFERENCE
                                    else _transductive(record))
            is_reference = tid == schema.BASELINE_ID and status == schema.REFERENCE
            if is_reference:
                own = sweep_base[sweep_base.get(DATA_VARIANT, pd.Series("", sweep_base.index))
                                 .fillna("") == ""] if DATA_VARIANT in sweep_base else sweep_base
            else:
                own = _members_of(members, sweep, tid)
            values.update(_spread_columns(own, metric, reported))
            if not is_reference and status not in schema.RANKED_STATUSES:
                continue  # listed apart: never ranked, never given a verdict
            for prefix, column in (("vs_best", reported), ("val_vs_best", metric)):
                if best is None:
                    continue
                if tid == best[schema.TRIAL_ID]:
                    values.update({prefix: 0.0, f"{prefix}_n": len(per_test_set(own, column)),
                                   f"{prefix}_verdict": BEST})
                    continue
                result = family[prefix].get(tid) or compare(own, best_rows, column, higher)
                values.update(result.columns(prefix))
            if len(sweep_base) and not is_reference:
                ref = baseline_for(sweep_base, _variant(record))
                for prefix, column in (("vs_baseline", reported), ("val_vs_baseline", metric)):
                    values.update(compare(own, ref, column, higher).columns(prefix))
                values[BASELINE_VARIANT] = (ref[DATA_VARIANT].iloc[0] if DATA_VARIANT in ref
                                            and len(ref) else "")
    return pd.DataFrame.from_dict(out, orient="index").reindex(board.index)


def _confirmed_columns(board: pd.DataFrame, results: Results, trials: pd.DataFrame,
                       baselines: pd.DataFrame, reported: str) -> pd.DataFrame:
    """Per finalist with a confirmation run (search.confirm: fresh seeds, every fold;
    query/confirmed.py): `confirmed` (that run's objective), `optimism` (search objective minus
    confirmed: what selection added), `confirmed_<reported>` (its test metric, mean over test
    sets) and the final verdict on the confirmation runs only, never on the runs #1 was chosen
    on: `confirmed_vs_best*` (against #1's confirmation, one Holm family over the finalists) and
    `confirmed_vs_baseline*` (against the baseline of its data variant)."""
    members = results.members
    out: dict[int, dict[str, Any]] = {i: {} for i in board.index}
    for sweep in board[schema.SWEEP].unique():
        sweep_trials = trials[trials[schema.SWEEP] == sweep]
        higher = _higher_is_better(sweep_trials)
        table = confirmations(sweep_trials, "max" if higher else "min")
        if table.empty:
            continue
        table = table.set_index(schema.TRIAL_ID)
        runs = {tid: _members_of(members, sweep, str(row[CONFIRM_TRIAL]))
                for tid, row in table.iterrows()}
        best = best_trial(schema.search_rows(sweep_trials))
        best_id = None if best is None else best[schema.TRIAL_ID]
        others = [tid for tid in runs if tid != best_id]
        family = (dict(zip(others, holm([compare(runs[t], runs[best_id], reported, higher)
                                          for t in others]), strict=True))
                  if best_id in runs else {})
        sweep_base = (baselines[baselines[schema.SWEEP] == sweep] if len(baselines)
                      else pd.DataFrame())
        for i, row in board[board[schema.SWEEP] == sweep].iterrows():
            tid = row[schema.TRIAL_ID]
            if tid not in runs or row[schema.STATUS] == schema.REFERENCE:
                continue
            values = out[i]
            values[CONFIRMED] = _none(table.at[tid, CONFIRMED])
            values[OPTIMISM] = _none(table.at[tid, OPTIMISM])
            values[f"{CONFIRMED}_{reported}"] = _none(per_test_set(runs[tid], reported).mean())
            if tid == best_id:
                values.update({"confirmed_vs_best": 0.0,
                               "confirmed_vs_best_n": len(per_test_set(runs[tid], reported)),
                               "confirmed_vs_best_verdict": BEST})
            elif tid in family:
                values.update(family[tid].columns("confirmed_vs_best"))
            if len(sweep_base):
                ref = baseline_for(sweep_base, _variant(row.to_dict()))
                values.update(compare(runs[tid], ref, reported, higher)
                              .columns("confirmed_vs_baseline"))
    return pd.DataFrame.from_dict(out, orient="index").reindex(board.index)


def leaderboard(
    results: Results,
    top: int = 10,
    by: str | None = None,
    where: str | None = None,
    ascending: bool | None = None,
) -> pd.DataFrame:
    """The `top` trials by `by` (default: the objective; direction from the sweep's mode, or
    ascending for losses/costs), with the objective, the test metric, val/test acc, UAR,
    macro-F1, the params, status and collapsed members. `where`: a SQL boolean over the trials
    columns (stored or display names). Failed, does_not_fit and collapsed trials are listed
    after the others with no rank and no verdict (schema.RANKED_STATUSES).

    The unit is the test set (query/paired.py): `n_test_sets`; every `x_mean` / `x_std` (and
    `objective_std`) is the mean / sample std across test sets of the seed-means, `x_seed_std`
    the spread over seeds within a test set (null with one seed). Paired columns, each a group
    `p`, `p_low`/`_high` (95 % t-interval), `p_n` (test sets), `p_p` (Wilcoxon exact), `p_t_p`
    (t-test), `p_p_holm`, `p_verdict` (paired.VERDICT_RULE), `p_note`: `vs_best` / `vs_baseline`
    on the test twin of the selection metric (`reported_metric` in attrs: what a paper reports),
    `val_vs_best` / `val_vs_baseline` on the selection metric. With a baseline.parquet: one
    reference row (trial_id "baseline", status "reference", rank null) after the trials, and each
    trial compared with the baseline of its own data variant (`baseline_variant`).
    `transductive`: the trial z-scores each test speaker with its own test statistics.
    `test_confusion`: {"classes", "matrix"} summed over the trial's members (JSON output).
    `frame.attrs`: "status_counts", "summary", "verdict_rule", "reported_metric",
    "selection_metric", "footer" (the lines the table prints under itself)."""
    recorded = filter_where(results.trials, where)
    trials = schema.search_rows(recorded)  # confirmation runs are columns of their finalist
    by = check_column(trials, by or names.OBJECTIVE)
    unranked = ~(trials[schema.STATUS].isin(schema.RANKED_STATUSES)
                 & trials[names.OBJECTIVE].notna())
    order = trials.assign(_unranked=unranked.astype(int)).sort_values(
        ["_unranked", by], ascending=[True, _ascending(trials, by, ascending)],
        na_position="last", kind="stable")
    board = order.head(top).reset_index(drop=True)
    ranks = (board["_unranked"] == 0).cumsum().where(board["_unranked"] == 0)
    board = board.drop(columns="_unranked")
    board.insert(0, "rank", pd.array(ranks.tolist(), dtype="Int64") if len(board)
                 else pd.array([], dtype="Int64"))
    head = [schema.SWEEP] if trials[schema.SWEEP].nunique() > 1 else []
    head += [schema.TRIAL_ID, schema.STATUS, names.OBJECTIVE, schema.OBJECTIVE_STD,
             OBJECTIVE_SEED_STD, N_TEST_SETS, TRANSDUCTIVE]
    metric = _member_metric(trials)
    reported = test_metric(metric, results.members if len(board) else None)
    columns = [by] if by not in (names.OBJECTIVE, schema.OBJECTIVE_STD) else []
    for name in dict.fromkeys((reported, *SHOWN_METRICS)):
        columns += [names.mean_key(name), names.std_key(name), f"{name}_seed_std"]
    columns += [schema.MEMBERS, schema.MEMBERS_COLLAPSED, schema.EPOCHS_RUN]
    columns += param_columns(trials)
    baselines = read_baselines(results) if len(board) else pd.DataFrame()
    if len(baselines):
        shown = [s for s in board[schema.SWEEP].unique() if s in set(baselines[schema.SWEEP])]
        extra = pd.DataFrame([_baseline_row(s, baselines[baselines[schema.SWEEP] == s], metric)
                              for s in shown])
        board = pd.concat([board, extra], ignore_index=True)
        board["rank"] = board["rank"].astype("Int64")
    if len(board):
        paired = _paired_columns(board, results, trials, baselines)
        board = board.drop(columns=[c for c in paired.columns if c in board.columns])
        board = pd.concat([board, paired], axis=1)
        confirmed = _confirmed_columns(board, results, recorded, baselines, reported)
        board = pd.concat([board.drop(columns=[c for c in confirmed.columns
                                               if c in board.columns]), confirmed], axis=1)
        board[schema.TEST_CONFUSION] = [_confusion_or_none(results, r) for r in
                                        board[[schema.SWEEP, schema.TRIAL_ID]].itertuples()]
    paired_names = [f"{prefix}{part}" for prefix in PAIRED_GROUPS
                    for part in ("", *(f"_{p}" for p in PAIRED_PARTS))
                    if f"{prefix}{part}" in board.columns]
    confirmed_names = [c for c in (CONFIRMED, OPTIMISM, f"{CONFIRMED}_{reported}")
                       if c in board.columns]
    keep = ["rank", *head, *confirmed_names, *paired_names, BASELINE_VARIANT, *columns,
            schema.TEST_CONFUSION]
    board = board[[c for c in dict.fromkeys(keep) if c in board.columns]]
    for column in (schema.MEMBERS, schema.MEMBERS_COLLAPSED, schema.EPOCHS_RUN, N_TEST_SETS,
                   *[c for c in board.columns if str(c).endswith("_n")]):
        if column in board.columns:  # integers stay integers (JSON/CSV too)
            board[column] = pd.array(
                [None if _missing(v) else int(v) for v in board[column]], dtype="Int64")
    board.attrs = {"status_counts": status_counts(trials), "summary": summary(trials),
                   "verdict_rule": VERDICT_RULE, "reported_metric": reported,
                   "selection_metric": metric,
                   "footer": footer_lines(board, reported, metric)}
    return board


def footer_lines(board: pd.DataFrame, reported: str, metric: str) -> list[str]:
    """What the table prints under itself: what `±`, n and the verdicts mean, the winner's
    curse, the protocol mark and how to get a verdict when there are too few test sets."""
    lines = [f"objective = {metric} (selection metric, validation); {reported} = the reported "
             "test metric; ± = sample std across test sets of the seed-means, n = test sets"
             + ("; seed spread in *_seed_std (--wide)" if OBJECTIVE_SEED_STD in board
                and board[OBJECTIVE_SEED_STD].notna().any() else ""),
             f"vs #1{' / vs baseline' if 'vs_baseline' in board else ''}: paired difference "
             f"on {reported} per test set; "
             + VERDICT_RULE,
             "#1 chosen on validation; its margin on validation is optimistic "
             "(val_vs_best, --wide: selection metric)"]
    if CONFIRMED in board:
        lines.append("confirmed = each finalist retrained with fresh seeds on every fold "
                     "(search.confirm); optimism = objective - confirmed (what selection on "
                     "validation added); final vs #1 (confirmed_vs_best) and "
                     "confirmed_vs_baseline: the verdict on those runs only")
    if TRANSDUCTIVE in board and board[TRANSDUCTIVE].eq(True).any():
        lines.append(f"{TRANSDUCTIVE_MARK} transductive: data.normalize=speaker z-scores each "
                     "test speaker with its own test utterances' statistics")
    verdicts = [board[c] for c in ("vs_best_verdict", "vs_baseline_verdict") if c in board]
    if any(v.eq(TOO_FEW).any() for v in verdicts):
        lines.append(f"{TOO_FEW}: fewer than {MIN_TEST_SETS}; rerun with {ADD_FOLDS_FLAG} "
                     "for every fold")
    return lines


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
TABLE_WIDTH = 120  # the default table fits this many columns (--wide: every column)


def format_frame(frame: pd.DataFrame, fmt: str, *, columns: list[str] | None = None,
                 wide: bool = False, width: int = TABLE_WIDTH) -> str | bytes:
    """table | csv | json (records) | parquet (bytes). CSV/JSON/Parquet keep every column
    (integers as integers). The table of a leaderboard (query.leaderboard: it has a
    `vs_best_verdict`, `n_test_sets` or `transductive` column) is compact by default (fits
    `width` columns); `columns` picks the columns shown (stored or display names), `wide`
    shows them all (generic_table). Any other frame prints generically. Unranked trials
    (failed, does_not_fit, collapsed) are printed apart, under the ranked ones."""
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
    is_board = any(c in frame.columns for c in (N_TEST_SETS, "vs_best_verdict", TRANSDUCTIVE))
    if not is_board:
        return generic_table(frame)
    if columns:
        names_of = column_names(frame)
        picked = []
        for name in columns:
            stored = names_of.get(name) or names_of.get(f"{schema.PARAM_PREFIX}{name}")
            if stored is None:
                raise unknown_name(name, names_of, "leaderboard")
            picked.append(stored)
        keep = []
        for stored in picked:  # in the order asked, each with the parts its cell shows
            base = str(stored).removesuffix("_mean")
            keep += [c for c in (stored, f"{base}_std", f"{stored}_low", f"{stored}_high",
                                 f"{stored}_n") if c in frame.columns and c not in keep]
        render = lambda part: generic_table(part[keep])  # noqa: E731
    elif wide:
        render = generic_table
    else:
        return compact_table(frame, width)
    return _apart(frame, render) + _footer(frame)


def _unranked(frame: pd.DataFrame) -> pd.Series:
    if "rank" not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame["rank"].isna() & (frame[schema.STATUS] != schema.REFERENCE)


def _apart(frame: pd.DataFrame, render: Any) -> str:
    """The ranked rows (and the reference), then the unranked ones under their own heading."""
    apart = _unranked(frame)
    text = render(frame[~apart]) if (~apart).any() or not apart.any() else ""
    if apart.any():
        text += ("\n\n" if text else "") + "not ranked (failed / does_not_fit / collapsed: no " \
            "rank, no verdict):\n" + render(frame[apart])
    return text


def _footer(frame: pd.DataFrame, extra: list[str] | None = None,
            width: int = TABLE_WIDTH) -> str:
    lines = list(frame.attrs.get("footer", [])) + (extra or [])
    return "".join("\n" + textwrap.fill(line, width, initial_indent="  ",
                                        subsequent_indent="    ") for line in lines)


def _spread_text(mean: Any, std: Any) -> str:
    if _missing(mean) or mean is None:
        return "-"
    return f"{mean:.3f}" if _missing(std) or std is None else f"{mean:.3f}±{std:.3f}"


def _verdict_cell(row: dict[str, Any], prefix: str) -> str:
    verdict = row.get(f"{prefix}_verdict")
    if row.get(schema.STATUS) == schema.REFERENCE and prefix.endswith("baseline"):
        return "reference"
    if verdict == BEST:
        return BEST
    if _missing(row.get(prefix)) or verdict is None or _missing(verdict):
        return "-"
    return f"{row[prefix]:+.3f} {verdict}"


def _short(value: Any) -> str:
    if _missing(value) or value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.3g}"
    return str(value)


def _varying(frame: pd.DataFrame) -> list[str]:
    params = param_columns(frame)
    trials = frame[frame[schema.STATUS] != schema.REFERENCE] if len(frame) else frame
    return [c for c in params
            if len(trials) < 2 or trials[c].astype(str).nunique(dropna=False) > 1]


def _param_headers(params: list[str]) -> dict[str, str]:
    """The names queries accept (results.display_name: model.layers, train.lr)."""
    return {column: display_name(column) for column in params}


def compact_table(frame: pd.DataFrame, width: int = TABLE_WIDTH) -> str:
    """The default leaderboard table: rank, id, status, the objective (selection metric, ± across
    test sets, n test sets), the reported test metric, the verdict against #1 and against the
    baseline (one cell each), and the params that vary, dropped from the right until the table
    fits `width` characters (the footer says how many were left out)."""
    reported = frame.attrs.get("reported_metric", TEST_UAR)
    params = _varying(frame)
    headers = _param_headers(params)
    rows = []
    for row in frame.to_dict("records"):
        tid = str(row.get(schema.TRIAL_ID))
        mark = TRANSDUCTIVE_MARK if row.get(TRANSDUCTIVE) is True else ""
        n = row.get(N_TEST_SETS)
        objective = _spread_text(row.get(names.OBJECTIVE), row.get(schema.OBJECTIVE_STD))
        if not _missing(n) and n is not None and objective != "-":
            objective += f" n={int(n)}"
        cells = {"rank": "-" if _missing(row.get("rank")) else str(int(row["rank"])),
                 schema.TRIAL_ID: tid + mark,
                 "status": str(row.get(schema.STATUS)),
                 "objective": objective,
                 reported: _spread_text(row.get(names.mean_key(reported)),
                                        row.get(names.std_key(reported))),
                 "vs #1": _verdict_cell(row, "vs_best")}
        if "vs_baseline" in frame.columns or "vs_baseline_verdict" in frame.columns:
            cells["vs baseline"] = _verdict_cell(row, "vs_baseline")
        if CONFIRMED in frame.columns:  # search.confirm: the finalists' fresh-seed runs
            confirmed, optimism = row.get(CONFIRMED), row.get(OPTIMISM)
            cells["confirmed (optimism)"] = "-" if _missing(confirmed) or confirmed is None else (
                f"{confirmed:.3f} ({optimism:+.3f})")
            cells["final vs #1"] = _verdict_cell(row, "confirmed_vs_best")
        for column in params:
            cells[headers[column]] = _short(row.get(column))
        rows.append(cells)
    table = pd.DataFrame(rows, index=frame.index)
    dropped = 0
    while True:
        text = _apart(frame, lambda part, t=table: t.loc[part.index].to_string(index=False))
        if max((len(line) for line in text.splitlines()), default=0) <= width or not params:
            break
        table = table.drop(columns=headers[params.pop()])
        dropped += 1
    extra = [f"{dropped} more varying params: --wide or --columns"] if dropped else []
    return text + _footer(frame, extra, width)


def generic_table(frame: pd.DataFrame) -> str:
    """Any frame as text: each `x`/`x_mean` with its `x_std` as one `m±s` cell named `x` (the
    value alone where the std is null: n = 1), paired differences `d [low, high] n=K` (n beside
    every interval), params without `param.` (results.display_name: the names every query
    accepts); HIDDEN_IN_TABLE and the paired notes are omitted."""
    notes = [c for c in frame.columns if str(c).startswith(PAIRED_PREFIXES)
             and str(c).endswith("_note")]
    shown = frame.drop(columns=[c for c in frame.columns if c in HIDDEN_IN_TABLE or c in notes])
    for column in list(shown.columns):
        base = str(column).removesuffix("_mean")
        if f"{base}_std" not in shown.columns or column == f"{base}_std":
            continue
        shown[column] = [_spread_text(m, s) for m, s in zip(shown[column], shown[f"{base}_std"])]
        shown = shown.drop(columns=f"{base}_std")
    for column in [c for c in shown.columns if f"{c}_low" in shown.columns]:
        counts = (shown[f"{column}_n"] if f"{column}_n" in shown.columns
                  else pd.Series([None] * len(shown), index=shown.index))
        text = [("-" if _missing(d) or d is None else f"{d:+.3f}" if _missing(lo) or lo is None
                 else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
                + ("" if _missing(n) or n is None else f" n={int(n)}")
                for d, lo, hi, n in zip(shown[column], shown[f"{column}_low"],
                                        shown[f"{column}_high"], counts)]
        shown[column] = text
        shown = shown.drop(columns=[c for c in (f"{column}_low", f"{column}_high",
                                                f"{column}_n") if c in shown.columns])
    for column in shown.columns:  # na_rep covers float NaN only: nullable ints and None too
        if not pd.api.types.is_float_dtype(shown[column]) and shown[column].isna().any():
            shown[column] = shown[column].astype(object).where(shown[column].notna(), "-")
    columns = [str(c) for c in frame.columns]
    shown.columns = [display_name(str(c), columns) for c in shown.columns]
    return shown.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}")
