"""Columns and statuses of the result store: the one place they are spelled, typed and documented,
and `trial_status`, the one place a trial's status is decided (the store's row and the console).

Three tables, one Parquet file per trial in each (docs/design.md, "The result store"):

trials/<trial_id>.parquet   one row per trial (TRIALS, plus one `param.<dotted key>` column per
                            searched parameter)
epochs/<trial_id>.parquet   one row per member x epoch (EPOCHS)
members/<trial_id>.parquet  one row per member (MEMBERS)

`param.<dotted key>` columns (e.g. `param.train.lr`, `param.model.layers`) hold the trial's sampled
value of that key, read from the nested trial config. Their types are fixed by the sweep's search
space (`param_types`), never by the values drawn, so every file of a sweep has one schema: ranges
are double (int: int64), a choice is bool / int64 / double (`[0, 0.1]`) when all its values are,
else string (lists and dicts as JSON). Metric names come from trainables.names.

Mean/std over members are trainables.stats.mean_std: the sample std (ddof=1), null for a
one-member trial. Collapsed members are included in every mean (their UAR of ~0.25 is the truth
about the configuration). `compact-<n>.parquet` files (orchestrator/query/compaction.py) hold many
trials with the same columns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from orchestrator.dotted import get_dotted
from trainables import names

PARAM_PREFIX = "param."
OPTUNA_PARAMS_PREFIX = "optuna:"  # top-level config keys with Optuna-native values (runner.py)
COMPACT_PREFIX = "compact-"  # merged files; no "." / "_" prefix so pyarrow datasets read them
TABLES = ("trials", "epochs", "members")
# results/<sweep>/baseline.parquet: the reference baseline computed by
# trainables/egemaps_baseline.py (run_baseline), written and read by
# orchestrator/store/baseline_table.py. One row per member.
BASELINE_FILE = "baseline.parquet"
_MATRIX = pa.list_(pa.list_(pa.int64()))
BASELINE_FIELDS: list[tuple[str, pa.DataType, str]] = [  # (column, type, doc)
    ("member", pa.int64(), "member index (config.member_pairs order: folds outer, seeds inner)"),
    ("fold", pa.string(), "fold name"),
    ("seed", pa.int64(), "seed of the member (the baseline itself is deterministic)"),
    *[(names.split_metric(s, m), pa.float64(), f"{m} of the baseline on the {s} split")
      for s in ("val", "test") for m in names.SCALAR_METRICS],
    ("val_confusion", _MATRIX, "confusion matrix on validation, rows = true class"),
    ("test_confusion", _MATRIX, "confusion matrix on test, rows = true class"),
    ("classes", pa.list_(pa.string()), "class names: the order of the confusion's rows/columns"),
    ("n_train", pa.int64(), "training utterances"),
    ("n_val", pa.int64(), "validation utterances"),
    ("n_test", pa.int64(), "test utterances"),
    ("test_set_id", pa.string(), "identity of the test set (trainables/data/folds.py: "
                                 "test_set_id): the pairing key of a comparison"),
    ("data_variant", pa.string(), "the searched data choices it was computed on (JSON; null: the "
                                  "sweep file's own data section)"),
    ("converged", pa.bool_(), "L-BFGS converged before max_iter"),
    ("fit_seconds", pa.float64(), "seconds to fit and score the fold"),
    ("baseline", pa.string(), "which reference, e.g. egemaps88_logreg (egemaps_baseline.py)"),
]
BASELINE_SCHEMA = pa.schema([pa.field(n, t, metadata={"doc": d}) for n, t, d in BASELINE_FIELDS])
BASELINE_ID = "baseline"  # its row's trial_id in the leaderboard
REFERENCE = "reference"  # its row's status: shown, never ranked

COMPLETED, PRUNED, FAILED = "completed", "pruned", "failed"
COLLAPSED, DOES_NOT_FIT = "collapsed", "does_not_fit"
RACED_OUT = names.RACED_OUT  # racing over folds: stopped after some test sets (racing.py)
STATUSES = (COMPLETED, PRUNED, FAILED, COLLAPSED, DOES_NOT_FIT, RACED_OUT)
"""completed: ran all its epochs (or every member stopped early); pruned: stopped by the scheduler;
failed: raised; collapsed: every member collapsed to one class; does_not_fit: a batch of 1 does
not fit the memory budget (trainables.errors.DoesNotFitError); raced_out: search.racing stopped
it after the test sets it trained (its objective covers only those: partial)."""
# their objective is final (Optuna: COMPLETE; a raced_out one marked partial, search.py)
SCORED_STATUSES = (COMPLETED, COLLAPSED, RACED_OUT)
# May rank as best (leaderboard #1, the console's "best", query.best_trial): a collapsed trial's
# objective is real but says the configuration failed, so it is listed after these, never best.
RANKED_STATUSES = (COMPLETED, PRUNED)
FAILED_STATUSES = (FAILED, DOES_NOT_FIT)  # raised: the `error` column says why

# Columns every reader names (the full list, typed and documented, is TRIAL_FIELDS etc. below).
TRIAL_ID, SWEEP, STATUS, ERROR = "trial_id", "sweep", "status", "error"
SWEEP_ID = "sweep_id"  # the sweep's identity (<sweep>/sweep_id): a row counts only in its sweep
ERROR_TRACEBACK = names.ERROR_TRACEBACK  # "error_traceback"
OBJECTIVE = names.OBJECTIVE
OBJECTIVE_STD = names.OBJECTIVE_STD
MODE, METRIC, EPOCHS_RUN = "mode", "metric", "epochs_run"
OBJECTIVE_BY_EPOCH = "objective_by_epoch"
STARTED_AT, ENDED_AT = "started_at", "ended_at"
MEMBER_EPOCHS = "member_epochs"
# search rows vs confirmation rows (orchestrator/confirm.py): only search rows feed the study
STAGE, CONFIRMS, SEARCH_STAGE, CONFIRM_STAGE = "stage", "confirms", "search", "confirm"
RACED_AGAINST, TEST_SETS = "raced_against", "test_sets"
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
_SWEEP_ID_DOC = ("identity of the sweep that wrote the row (<sweep>/sweep_id); a row of another "
                 "sweep is moved aside, never counted (null: written before sweep ids)")
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
    (SWEEP_ID, _S, _SWEEP_ID_DOC),
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
    (OBJECTIVE_BY_EPOCH, _S, "JSON {epoch: objective} of every report (what Optuna heard as "
                             "intermediate values; null when none)"),
    ("member_epochs", _I, "member-epochs trained: one per member per epoch it trained (the "
                          "cost of the trial; racing and early stops lower it)"),
    ("optuna_params_json", _S, "JSON of the Optuna-native sampled values (for resume)"),
    ("config_json", _S, "JSON of the trial's whole config: data, model, train (and distill)"),
    ("checkpoint_path", _S, "the trial's last Tune checkpoint (trainer.pt: each member's best)"),
    *_agg_fields(),
    ("members", _I, "number of members (folds x seeds)"),
    ("members_collapsed", _I, "members flagged collapsed"),
    ("micro_batch", _I, "micro-batch chosen by the planner (after OOM halvings)"),
    ("accumulation", _I, "gradient-accumulation steps"),
    ("gpu_fraction", _F, "GPU share of the trial (null when absent)"),
    ("estimated_peak_bytes", _I, "the planner's peak-memory estimate at the planned micro-batch "
                                 "(before any OOM halving; at 1 for does_not_fit), tensor bytes "
                                 "of the whole trial: every trial row, as `sweep.py plan` prints "
                                 "it (null in stores from before it was stored without a budget)"),
    ("measured_peak_bytes", _I, "measured peak memory; what it measures: measured_peak_kind"),
    (names.MEASURED_PEAK_KIND, _S, "cuda_max_allocated: torch.cuda.max_memory_allocated, tensor "
                                   "bytes, comparable with estimated_peak_bytes | cpu_rss: the "
                                   "worker process' peak resident set, NOT comparable (code, Ray, "
                                   "data and allocator caches too) | null: not measured"),
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
    ("stage", _S, "search (a trial of the search) | confirm (a finalist retrained with fresh "
                  "seeds after it: orchestrator/confirm.py)"),
    ("confirms", _S, "stage confirm: the trial_id of the search trial it confirms, else null"),
    ("raced_against", _S, "search.racing: the incumbent trial it raced against (null: none)"),
    ("test_sets", _I, "distinct test sets (folds) the trial trained"),
    ("started_at", _TS, "first time the driver saw the trial (UTC)"),
    ("ended_at", _TS, "time the trial ended (UTC)"),
]

EPOCH_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("trial_id", _S, "trial id"),
    ("sweep", _S, "sweep name"),
    (SWEEP_ID, _S, _SWEEP_ID_DOC),
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
    (SWEEP_ID, _S, _SWEEP_ID_DOC),
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
    ("test_set_id", _S, "identity of the member's test set: hash of its sorted utterance ids "
                        "(the pairing unit of query/paired.py; null in older stores)"),
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


def search_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """The rows of the search itself: confirmation rows (stage confirm) left out."""
    if STAGE not in trials.columns:
        return trials
    return trials[trials[STAGE].isna() | (trials[STAGE] != CONFIRM_STAGE)]


def param_column(key: str) -> str:
    """`param_column("train.lr") == "param.train.lr"`."""
    return PARAM_PREFIX + key


def _choice_type(choices: list[Any]) -> pa.DataType:
    """The column type of a choice: bool (all bools), int64 (all integers), double (numbers,
    e.g. `[0, 0.1]`), string (text, lists as JSON, or a mix). None choices do not count."""
    kinds = {param_type(param_store_value(c)) for c in choices} - {pa.null()}
    if not kinds:
        return _S
    if kinds <= {_I, _F}:
        return _F if _F in kinds else _I
    return kinds.pop() if len(kinds) == 1 else _S


def param_types(
    params: Iterable[Any], base: Mapping[str, Any] | None = None
) -> dict[str, pa.DataType]:
    """{`param.<key>` column: its Arrow type} fixed by the search-space declaration
    (orchestrator.sweepfile.ParamSpec: key, kind, real_choices()), so every trials file of a
    sweep has one schema whatever values were drawn: uniform / loguniform -> double, int ->
    int64, choice -> `_choice_type` (bool, int64, double, or string for text, lists (JSON) and
    mixes). `base`: the sweep's base config; a conditional param a trial did not sample keeps
    its base value (or null), so that value's type joins the declared ones."""
    out = {}
    for p in params:
        values = list(p.real_choices()) if p.kind == "choice" else [
            0 if p.kind == "int" else 0.0]
        if base is not None:
            values.append(get_dotted(base, p.key))
        out[param_column(p.key)] = _choice_type(values)
    return out


def param_store_value(value: Any) -> Any:
    """A param's value as stored: typed scalars stay; lists, tuples and dicts become JSON."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:  # numpy scalars
        return value.item()
    except AttributeError:
        return str(value)


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


def to_table(
    table: str, rows: list[dict], types: Mapping[str, pa.DataType] | None = None
) -> pa.Table:
    """Rows -> an Arrow table with the fixed schema of `table`, plus one column per name in
    `types` (the sweep's `param_types`: present in every file, null where a row lacks it) and
    any other extra column typed from its values. A value that does not fit its declared type
    (a text in a double column) is a bug upstream and raises."""
    schema = SCHEMAS[table]
    fields = list(schema)
    declared = {k: v for k, v in (types or {}).items() if k not in schema.names}
    extra = sorted(({k for row in rows for k in row} - set(schema.names)) | set(declared))
    for name in extra:
        if name in declared:
            fields.append(pa.field(name, declared[name]))
            continue
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
    if last_report.get(names.RACED_OUT):
        return RACED_OUT
    collapsed, members = collapsed_members(last_report)
    if members and collapsed == members:
        return COLLAPSED
    return COMPLETED if last_report.get(names.DONE) else PRUNED
