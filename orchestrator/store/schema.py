"""Columns and statuses of the result store: the one place they are spelled, typed and documented,
and `trial_status`, the one place a trial's status is decided (the store's row and the console).

Three tables, one Parquet file per trial in each (docs/design.md, "The result store"):

trials/<trial_id>.parquet   one row per trial (TRIALS, plus one `param.<dotted key>` column per
                            searched parameter)
epochs/<trial_id>.parquet   one row per member x epoch (EPOCHS)
members/<trial_id>.parquet  one row per member (MEMBERS)

`param.<dotted key>` columns (e.g. `param.train.lr`, `param.model.layers`) hold the trial's sampled
value of that key, read from the nested trial config: bool, int64, float64 and string values keep
their type; lists and dicts are stored as a JSON string. Metric names come from trainables.names.

Mean/std over members are trainables.stats.mean_std: the sample std (ddof=1), null for a
one-member trial. Collapsed members are included in every mean (their UAR of ~0.25 is the truth
about the configuration). `compact-<n>.parquet` files (orchestrator/query/compaction.py) hold many
trials with the same columns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from trainables import names

PARAM_PREFIX = "param."
OPTUNA_PARAMS_PREFIX = "optuna:"  # top-level config keys with Optuna-native values (runner.py)
COMPACT_PREFIX = "compact-"  # merged files; no "." / "_" prefix so pyarrow datasets read them
TABLES = ("trials", "epochs", "members")
# results/<sweep>/baseline.parquet, written by trainables/egemaps_baseline.py (its BASELINE_FILE;
# spelled
# again here so readers of the store do not import torch; tests/orchestrator/query checks both).
BASELINE_FILE = "baseline.parquet"
BASELINE_ID = "baseline"  # its row's trial_id in the leaderboard
REFERENCE = "reference"  # its row's status: shown, never ranked

COMPLETED, PRUNED, FAILED = "completed", "pruned", "failed"
COLLAPSED, DOES_NOT_FIT = "collapsed", "does_not_fit"
STATUSES = (COMPLETED, PRUNED, FAILED, COLLAPSED, DOES_NOT_FIT)
"""completed: ran all its epochs (or every member stopped early); pruned: stopped by the scheduler;
failed: raised; collapsed: every member collapsed to one class; does_not_fit: a batch of 1 does
not fit the memory budget (trainables.errors.DoesNotFitError)."""
SCORED_STATUSES = (COMPLETED, COLLAPSED)  # their objective is final (Optuna: COMPLETE)
# May rank as best (leaderboard #1, the console's "best", query.best_trial): a collapsed trial's
# objective is real but says the configuration failed, so it is listed after these, never best.
RANKED_STATUSES = (COMPLETED, PRUNED)
FAILED_STATUSES = (FAILED, DOES_NOT_FIT)  # raised: the `error` column says why

# Columns every reader names (the full list, typed and documented, is TRIAL_FIELDS etc. below).
TRIAL_ID, SWEEP, STATUS, ERROR = "trial_id", "sweep", "status", "error"
ERROR_TRACEBACK = names.ERROR_TRACEBACK  # "error_traceback"
OBJECTIVE = names.OBJECTIVE
OBJECTIVE_STD = names.OBJECTIVE_STD
MODE, METRIC, EPOCHS_RUN = "mode", "metric", "epochs_run"
MEMBERS, MEMBERS_COLLAPSED = "members", names.MEMBERS_COLLAPSED
CONFIG_JSON, CHECKPOINT_PATH = "config_json", "checkpoint_path"
OPTUNA_PARAMS_JSON = "optuna_params_json"
TEST_CONFUSION = "test_confusion"
CLASSES = "classes"  # members: the class names, in the order of the confusion's rows/columns

BEST_METRICS = tuple(names.split_metric("val", m) for m in names.SCALAR_METRICS)
TEST_METRICS = names.TEST_METRICS
EPOCH_METRICS = (names.TRAIN_LOSS, names.VAL_LOSS) + BEST_METRICS

_F, _I, _S, _B = pa.float64(), pa.int64(), pa.string(), pa.bool_()
_TS = pa.timestamp("us", tz="UTC")
_MATRIX = pa.list_(pa.list_(pa.int64()))  # a confusion matrix, rows = true class
_NAMES = pa.list_(pa.string())


def _agg_fields() -> list[tuple[str, pa.DataType, str]]:
    out = []
    for metric in BEST_METRICS + TEST_METRICS:
        where = "at each member's best validation epoch" if metric.startswith("val") else (
            "of each member's model at its best validation epoch"
        )
        out.append((names.mean_key(metric), _F, f"mean over members of {metric} {where}"))
        out.append((names.std_key(metric), _F, f"std over members of {metric} {where}"))
    return out


TRIAL_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("trial_id", _S, "Ray Tune trial id; the key of the row"),
    ("sweep", _S, "sweep name (results/<sweep>/)"),
    ("status", _S, "one of STATUSES"),
    ("error", _S, "why a failed / does_not_fit trial failed, one line `Type: message` (no "
                  "traceback, no colour codes), else null"),
    ("error_traceback", _S, "plain-text traceback of that failure (null when none was kept)"),
    ("objective", _F, "last reported objective: mean over members of each member's best metric"),
    ("objective_std", _F, "sample std (ddof 1) over members of each member's best metric; "
                          "null for one member"),
    ("metric", _S, "the sweep's search.metric, e.g. val_uar"),
    ("mode", _S, "max | min"),
    ("epochs_run", _I, "last reported epoch (0 if none)"),
    ("optuna_params_json", _S, "JSON of the Optuna-native sampled values (for resume)"),
    ("config_json", _S, "JSON of the trial's whole config: data, model, train (and distill)"),
    ("checkpoint_path", _S, "the trial's last Tune checkpoint (trainer.pt: each member's best)"),
    *_agg_fields(),
    ("members", _I, "number of members (folds x seeds)"),
    ("members_collapsed", _I, "members flagged collapsed"),
    ("micro_batch", _I, "micro-batch chosen by the planner (after OOM halvings)"),
    ("accumulation", _I, "gradient-accumulation steps"),
    ("gpu_fraction", _F, "GPU share of the trial (null when absent)"),
    ("estimated_peak_bytes", _I, "planner's peak-memory estimate (nullable)"),
    ("measured_peak_bytes", _I, "measured peak memory"),
    ("oom_retries", _I, "out-of-memory retries (micro-batch halvings)"),
    ("wall_seconds", _F, "wall time of the trial"),
    ("gpu_hours", _F, "wall_seconds / 3600 x GPUs of the trial"),
    ("host", _S, "host name the trial ran on"),
    ("node_id", _S, "Ray node id"),
    ("device", _S, "torch device, e.g. cuda:0 or cpu"),
    ("precision", _S, "autocast the trial trained with: fp32 | bfloat16 | float16 (train.amp)"),
    (names.DATA_SKIPPED_CLIPS, _I, "clips the corpus listed but skipped as missing or "
                                   "unreadable (MELD); 0 when none"),
    ("gpu_ids", _S, "JSON list of the GPU ids Ray gave the trial"),
    ("code_version", _S, "git describe of the repository, else the package version"),
    ("teacher_sweep", _S, "distillation: the teacher's sweep (nullable)"),
    ("teacher_trial", _S, "distillation: the teacher's trial id (nullable)"),
    ("started_at", _TS, "first time the driver saw the trial (UTC)"),
    ("ended_at", _TS, "time the trial ended (UTC)"),
]

EPOCH_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("trial_id", _S, "trial id"),
    ("sweep", _S, "sweep name"),
    ("member", _I, "member index within the trial"),
    ("fold", _S, "fold name"),
    ("seed", _I, "seed of the member"),
    ("epoch", _I, "1-based epoch; (trial_id, member, epoch) is unique"),
    ("train_loss", _F, "mean training loss of the epoch"),
    ("val_loss", _F, "validation loss"),
    ("val_acc", _F, "validation accuracy (WA)"),
    ("val_uar", _F, "validation UAR"),
    ("val_f1_macro", _F, "validation macro-F1"),
    ("val_f1_weighted", _F, "validation weighted F1"),
    ("lr", _F, "learning rate at the end of the epoch"),
    ("seconds", _F, "seconds the member's epoch took"),
    ("collapsed", _B, "member flagged collapsed at this epoch"),
    ("active", _B, "member still training at this epoch"),
]

MEMBER_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("trial_id", _S, "trial id"),
    ("sweep", _S, "sweep name"),
    ("member", _I, "member index"),
    ("fold", _S, "fold name"),
    ("seed", _I, "seed"),
    ("best_epoch", _I, "epoch of the best validation metric"),
    *[(m, _F, f"{m} at the best epoch") for m in BEST_METRICS + ("val_loss",)],
    *[(m, _F, f"{m} of the model at the best epoch") for m in TEST_METRICS],
    ("test_confusion", _MATRIX, "confusion matrix on test, integer counts (rows = true class, "
                                "columns = predicted; order of `classes`)"),
    ("classes", _NAMES, "class names: the order of test_confusion's rows and columns"),
    ("n_test", _I, "test examples"),
    ("collapsed", _B, "member stopped as collapsed (not learning)"),
    ("collapse_reason", _S, "why it was stopped as collapsed (trainables/collapse.py: single_"
                            "class, degenerate, near_chance, unchanged; null: not collapsed)"),
    ("stopped_epoch", _I, "epoch the member stopped (null: ran all epochs)"),
    ("agreement_acc", _F, "distillation: agreement with the teacher (nullable)"),
    ("agreement_confusion", _S, "distillation: JSON teacher-vs-student confusion (nullable)"),
    ("test_uar_by_corpus", _S, "multi-corpus data: JSON {corpus: test UAR} (nullable)"),
]


def _schema(fields: list[tuple[str, pa.DataType, str]]) -> pa.Schema:
    return pa.schema([pa.field(n, t, metadata={"doc": d}) for n, t, d in fields])


TRIALS_SCHEMA = _schema(TRIAL_FIELDS)
EPOCHS_SCHEMA = _schema(EPOCH_FIELDS)
MEMBERS_SCHEMA = _schema(MEMBER_FIELDS)
SCHEMAS = {"trials": TRIALS_SCHEMA, "epochs": EPOCHS_SCHEMA, "members": MEMBERS_SCHEMA}
EPOCH_KEY = ("trial_id", "member", "epoch")


def param_column(key: str) -> str:
    """`param_column("train.lr") == "param.train.lr"`."""
    return PARAM_PREFIX + key


def param_type(value: object) -> pa.DataType:
    """Arrow type of a stored param value (lists/dicts are JSON strings before this)."""
    if value is None:
        return pa.null()
    if isinstance(value, bool):
        return _B
    if isinstance(value, int):
        return _I
    if isinstance(value, float):
        return _F
    return _S


def _utc(value: object) -> datetime:
    """A timestamp-like (datetime, numpy datetime64, pandas Timestamp, unix seconds) in UTC."""
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=UTC)
    stamp = pd.Timestamp(value)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).to_pydatetime()


def as_list(value: object) -> list | None:
    """A list column's value: lists (numpy arrays too) as plain lists; a JSON text (the store's
    format before confusions became integer lists) decoded."""
    if value is None:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    if hasattr(value, "tolist"):  # numpy arrays (pyarrow's to_pandas) and numpy scalars
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [as_list(v) if isinstance(v, (list, tuple)) or hasattr(v, "tolist") else v
                for v in value]
    return value


def to_table(table: str, rows: list[dict]) -> pa.Table:
    """Rows -> an Arrow table with the fixed schema of `table` (+ typed extra columns)."""
    schema = SCHEMAS[table]
    fields = list(schema)
    extra = sorted({k for row in rows for k in row} - set(schema.names))
    for name in extra:
        values = [row.get(name) for row in rows]
        kinds = {param_type(v) for v in values} - {pa.null()}
        if kinds == {_I, _F}:
            kinds = {_F}
        kind = kinds.pop() if len(kinds) == 1 else (pa.null() if not kinds else _S)
        fields.append(pa.field(name, kind))
    columns = {}
    for field in fields:
        values = [row.get(field.name) for row in rows]
        if field.type == _S:
            values = [None if v is None else str(v) for v in values]
        elif field.type == _F:
            values = [None if v is None else float(v) for v in values]
        elif field.type == _I:
            values = [None if v is None or v != v else int(v) for v in values]
        elif field.type == _B:
            values = [None if v is None else bool(v) for v in values]
        elif field.type == _TS:
            values = [None if v is None else _utc(v) for v in values]
        elif field.type in (_MATRIX, _NAMES):
            values = [as_list(v) for v in values]
        columns[field.name] = pa.array(values, type=field.type)
    return pa.table(columns, schema=pa.schema(fields))


def report_json(report: Mapping[str, Any], key: str, default: Any) -> Any:
    """A JSON field of a trial's report (names.MEMBER_RESULTS_JSON, RUNTIME_JSON...), decoded;
    `default` when absent or unreadable (a report cut short must still give a row)."""
    text = report.get(key)
    if text is None or text == "":
        return default
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return default


def collapsed_members(report: Mapping[str, Any]) -> tuple[int, int]:
    """(members collapsed, members) of a trial's last report."""
    members = report_json(report, names.MEMBER_RESULTS_JSON, [])
    collapsed = sum(bool(m.get("collapsed")) for m in members)
    if not members and report.get(names.MEMBERS_COLLAPSED) is not None:
        collapsed = int(report[names.MEMBERS_COLLAPSED])
    return collapsed, len(members)


def trial_status(last_report: Mapping[str, Any], error: str | None = None) -> str:
    """THE status of an ended trial, from its last report and the error it raised (None: it
    did not raise; a trial that reported its own failure, names.ERROR_REASON, failed too). Used
    by the store's row (store/rows.py), the console (console.py) and search.live_trial_state."""
    if error is None:
        error = last_report.get(names.ERROR_REASON) or None
    if error is not None:
        return DOES_NOT_FIT if "DoesNotFitError" in error else FAILED
    collapsed, members = collapsed_members(last_report)
    if members and collapsed == members:
        return COLLAPSED
    return COMPLETED if last_report.get(names.DONE) else PRUNED
