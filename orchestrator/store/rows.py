"""Turn a trial's buffered tune.report dicts into the store's rows (columns: schema.py):
`trial_rows` builds the trial row, one row per member x epoch, one row per member.

Pure functions of the reports and the trial config, so they are tested without Ray.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.dotted import get_dotted
from orchestrator.store import schema
from trainables import names
from trainables.stats import mean_std

log = logging.getLogger(__name__)
_KEYS = (schema.TRIAL_ID, schema.SWEEP, schema.SWEEP_ID)  # ResultStore.write_trial adds them
_EPOCH_COLUMNS = [n for n in schema.EPOCHS_SCHEMA.names if n not in _KEYS]
_MEMBER_COLUMNS = [n for n in schema.MEMBERS_SCHEMA.names if n not in _KEYS]


@dataclass
class TrialBuffer:
    """What the driver has seen of one trial: its last report and its epoch rows."""

    started_at: float
    last: dict[str, Any] = field(default_factory=dict)
    epochs: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    objectives: dict[int, float] = field(default_factory=dict)  # epoch -> reported objective

    def add(self, result: dict[str, Any]) -> None:
        self.last = dict(result)
        objective, epoch = result.get(names.OBJECTIVE), result.get(names.EPOCH)
        if (epoch is not None and objective is not None and not _isnan(objective)
                and not result.get(names.ERROR_REASON)):  # what the searcher hears (search.py)
            self.objectives[int(epoch)] = float(objective)
        for row in schema.report_json(result, names.MEMBER_ROWS_JSON, []):
            epoch = row.get("epoch", result.get(names.EPOCH))
            self.epochs[(int(row.get("member", 0)), int(epoch or 0))] = row  # re-report: last wins


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


@functools.cache
def code_version() -> str:
    """`git describe --always --dirty` of the repository, else the installed package version."""
    repo = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=repo, capture_output=True, text=True, timeout=5, check=True,
        )
        if out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"sersweep-{version('sersweep')}"
    except PackageNotFoundError:
        return "unknown"


def _ts(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


def _null(value: float) -> float | None:
    """NaN -> None: a missing number is a null in the store (DuckDB tells NaN from NULL)."""
    return None if _isnan(value) else value


def _int(value: Any) -> int | None:
    return None if value is None or _isnan(value) else int(value)


def _first(*values: Any) -> Any:
    """The first value that is not None (None when all are)."""
    return next((v for v in values if v is not None), None)


def trial_rows(
    *,
    trial_id: str,
    config: dict,
    buffer: TrialBuffer,
    param_keys: list[str],
    metric: str,
    mode: str,
    status: str | None,
    error: str | None,
    trial_gpus: float,
    ended_at: float | None = None,
    checkpoint_path: str | None = None,
    classes: list[str] | None = None,
    error_traceback: str | None = None,
) -> tuple[dict, list[dict], list[dict]]:
    """(trial row, epoch rows, member rows). `status` None: decided from the last report.
    `classes`: the class names (PreparedData.classes), stored with each member's confusion
    unless the member result carries its own."""
    last = buffer.last
    members = schema.report_json(last, names.MEMBER_RESULTS_JSON, [])
    runtime = schema.report_json(last, names.RUNTIME_JSON, {})
    planned = config.get("runtime") or {}  # the driver's plan (orchestrator/planner.py)
    collapsed, _ = schema.collapsed_members(last)
    if status is None:
        status = schema.trial_status(last, error)
    ended = ended_at if ended_at is not None else datetime.now(UTC).timestamp()
    wall = last.get("time_total_s")
    wall = float(wall) if wall is not None else max(0.0, ended - buffer.started_at)
    gpu_ids = runtime.get("gpu_ids")
    gpus = trial_gpus or runtime.get("gpu_fraction") or (len(gpu_ids) if gpu_ids else 0.0)
    objective = last.get(names.OBJECTIVE)
    native = {
        k.removeprefix(schema.OPTUNA_PARAMS_PREFIX): v
        for k, v in config.items()
        if isinstance(k, str) and k.startswith(schema.OPTUNA_PARAMS_PREFIX)
    }
    row: dict[str, Any] = {
        schema.TRIAL_ID: trial_id,
        schema.STATUS: status,
        schema.ERROR: error,
        schema.ERROR_TRACEBACK: error_traceback,
        schema.OBJECTIVE: None if objective is None or _isnan(objective) else float(objective),
        schema.METRIC: metric,
        schema.MODE: mode,
        schema.EPOCHS_RUN: int(last.get(names.EPOCH) or 0),
        schema.OBJECTIVE_BY_EPOCH: json.dumps(
            {str(e): v for e, v in sorted(buffer.objectives.items())}
        ) if buffer.objectives else None,
        schema.MEMBER_EPOCHS: len(buffer.epochs),  # one epoch row per member trained that epoch
        schema.OPTUNA_PARAMS_JSON: json.dumps(native, default=str) if native else None,
        schema.CONFIG_JSON: json.dumps(
            {k: config[k] for k in ("data", "model", "train", "distill") if k in config},
            default=str,
        ),
        schema.CHECKPOINT_PATH: checkpoint_path,
        schema.MEMBERS: len(members) or None,
        schema.MEMBERS_COLLAPSED: collapsed,
        "micro_batch": _int(runtime.get("micro_batch")),
        "accumulation": _int(runtime.get("accumulation")),
        "gpu_fraction": runtime.get("gpu_fraction", trial_gpus or None),
        # the driver's plan is in the config: a trial that failed before reporting keeps it
        "estimated_peak_bytes": _int(_first(runtime.get("estimated_peak_bytes"),
                                            planned.get("estimated_peak_bytes"))),
        "measured_peak_bytes": _int(runtime.get("measured_peak_bytes")),
        names.MEASURED_PEAK_KIND: runtime.get(names.MEASURED_PEAK_KIND),
        "oom_retries": _int(runtime.get("oom_retries")),
        "wall_seconds": wall,
        "gpu_hours": wall / 3600.0 * float(gpus or 0.0),
        "host": runtime.get("host") or last.get("hostname"),
        "node_id": runtime.get("node_id"),
        "device": runtime.get("device"),
        "precision": runtime.get("precision"),
        names.DATA_SKIPPED_CLIPS: _int(runtime.get(names.DATA_SKIPPED_CLIPS)),
        "gpu_ids": json.dumps(gpu_ids) if gpu_ids is not None else None,
        "code_version": code_version(),
        schema.STAGE: (config.get("runtime") or {}).get(schema.STAGE, schema.SEARCH_STAGE),
        schema.CONFIRMS: (config.get("runtime") or {}).get(schema.CONFIRMS),
        schema.RACED_AGAINST: ((config.get("runtime") or {}).get("racing") or {}).get(
            "incumbent"),
        schema.TEST_SETS: len({m.get("fold") for m in members}) or None,
        "started_at": _ts(buffer.started_at),
        "ended_at": _ts(ended),
    }
    for name in schema.BEST_METRICS + schema.TEST_METRICS:
        mean, std = mean_std(m.get(name) for m in members)
        row[names.mean_key(name)], row[names.std_key(name)] = _null(mean), _null(std)
    # The objective is the mean of each member's best `metric`: its spread is that of the same
    # per-member values (the trainer's own objective_std when it reports one).
    reported_std = last.get(schema.OBJECTIVE_STD)
    if reported_std is None:
        reported_std = mean_std(m.get(metric) for m in members)[1]
    row[schema.OBJECTIVE_STD] = _null(float(reported_std))
    for key in param_keys:
        row[schema.param_column(key)] = schema.param_store_value(get_dotted(config, key))
    epochs = [
        {**{c: r.get(c) for c in _EPOCH_COLUMNS}, "member": m, "epoch": e}
        for (m, e), r in buffer.epochs.items()
    ]
    member_rows = []
    for m in members:
        out = {c: m.get(c) for c in _MEMBER_COLUMNS}
        for column in ("agreement_confusion", "test_uar_by_corpus"):
            if not isinstance(out[column], (str, type(None))):
                out[column] = json.dumps(out[column])
        if out[schema.TEST_CONFUSION] is not None:  # integer counts; JSON text also read
            out[schema.TEST_CONFUSION] = [[int(v) for v in r]
                                          for r in schema.as_list(out[schema.TEST_CONFUSION])]
            if out[schema.CLASSES] is None and classes is not None:
                out[schema.CLASSES] = [str(c) for c in classes]
        member_rows.append(out)
    return row, epochs, member_rows


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")  # colour / cursor sequences (Ray colours errors)
REASON_CHARS = 300


def plain(text: str) -> str:
    """`text` without ANSI escape sequences."""
    return _ANSI.sub("", text)


def one_line(text: str) -> str:
    """`text` as one plain line (whitespace runs -> one space), at most REASON_CHARS long."""
    line = " ".join(plain(text).split())
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + "..."


def reported_error(report: dict[str, Any]) -> tuple[str | None, str | None]:
    """(reason, traceback) of a trial that reported its own failure (trainables/trainable.py:
    failure_report), else (None, None)."""
    reason = report.get(names.ERROR_REASON)
    if not reason:
        return None, None
    traceback_text = report.get(names.ERROR_TRACEBACK)
    return one_line(str(reason)), plain(str(traceback_text)) if traceback_text else None


def trial_error(trial) -> tuple[str, str]:
    """(reason, traceback) of a trial Tune ended with an error once its retries were spent, or
    is retrying (a worker or node lost, an unexpected exception): the last `Type: message` line
    of Ray's error text (every attempt), and that text without colour codes. Read as text, never
    unpickled: Tune's error.pkl lies in the results folder, where anyone could plant one."""
    text = plain(error_text(trial))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    raised = [line for line in lines if _RAISED.match(line)]
    if raised:
        return one_line(raised[-1]), text
    last = lines[-1] if lines else text
    lost = getattr(trial, "pickled_error_file", None)
    if lost and os.path.exists(lost):
        # Tune keeps an error.pkl only for RayTaskError and RayActorError, and a task error's text
        # ends with its raise line: without one, the trial's actor (its worker or node) was lost
        return one_line(f"RayActorError: {last}"), text
    return one_line(last), text


# `ValueError: ...`, `ray.exceptions.ActorDiedError: ...`: the line a traceback ends its raise with
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b:?")


def error_text(trial) -> str:
    """The error Ray recorded for the trial: its error.txt (local), else get_error()."""
    path = getattr(trial, "error_file", None)
    try:
        if path and os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as handle:
                return handle.read().strip()
        text = trial.get_error()
        if text:
            return str(text).strip()
    except Exception as exc:  # the row matters more than the text
        return f"error text unavailable: {exc}"
    return "trial failed (no error text recorded)"


def checkpoint_path(trial) -> str | None:
    """Where the trial's latest checkpoint lives (a path or URI), or None."""
    checkpoint = getattr(trial, "checkpoint", None)
    if checkpoint is None:
        return None
    fs = checkpoint.filesystem
    if fs is not None and fs.type_name != "local":
        return f"{fs.type_name}://{checkpoint.path}"
    return checkpoint.path


def trial_gpus(trial) -> float:
    try:
        return float(trial.placement_group_factory.required_resources.get("GPU", 0.0))
    except AttributeError:  # a trial without a placement group (e.g. not started)
        return 0.0
