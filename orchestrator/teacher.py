"""Resolve a distilling sweep's teacher in the driver, before Ray starts.

`resolve_teacher(spec, results_root)` reads the teacher sweep's store, picks its best completed
trial by the teacher's own objective (or the trial id given in `distill.teacher.pick`), checks that
the teacher was trained on the same data and folds, and returns the `distill` section of every
student trial's config: the teacher's model config and checkpoint plus the spec's distill values
(searched `distill.*` values arrive through the trial config and override these).

Where the store does not (yet) record a trial's `config_json` / `checkpoint_path`, they are read
from the trial's Ray Tune directory under <teacher>/_tune/ (its params.json and newest checkpoint).
Every refusal is a SpecError at distill.teacher, before anything trains.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.store import schema
from orchestrator.sweepfile import SpecError, SweepSpec, thaw
from trainables.config import DATA_DEFAULTS, with_defaults
from trainables.names import CHECKPOINT_FILE

# Data keys that never change which utterances, features or folds a member sees.
DATA_IGNORED = ("cache_dir",)
RESOLVED_KEYS = ("temperature", "kd_weight", "mse_weight", "mse_layers", "experiment")


def _err(spec: SweepSpec, key: str, message: str) -> SpecError:
    return SpecError(str(spec.path), f"distill.teacher{key}", message)


def teacher_dir(spec: SweepSpec, results_root: str) -> Path:
    """`teacher.results` as given (absolute, or relative to the working directory); a bare name
    that is not a directory there is a sweep under the student's results root."""
    given = str(spec.distill["teacher"]["results"])
    path = Path(given).expanduser()
    if not path.is_dir() and "/" not in given:
        path = Path(results_root) / given
    if not path.is_dir():
        raise _err(spec, ".results", f"the teacher sweep directory {given!r} does not exist "
                   f"(looked at {path.resolve()}); run the teacher sweep first")
    return path


def _pick(spec: SweepSpec, trials: pd.DataFrame, where: Path) -> pd.Series:
    pick = str(spec.distill["teacher"]["pick"])
    done = trials[(trials[schema.STATUS] == schema.COMPLETED) & trials[schema.OBJECTIVE].notna()]
    if pick != "best":
        found = trials[trials[schema.TRIAL_ID].astype(str) == pick]
        if found.empty:
            known = ", ".join(sorted(trials[schema.TRIAL_ID].astype(str))[:10])
            raise _err(spec, ".pick", f"trial {pick!r} is not in the teacher sweep {where} "
                       f"(trials: {known or 'none'})")
        if found.index[0] not in done.index:
            raise _err(spec, ".pick", f"teacher trial {pick!r} did not complete (status "
                       f"{found.iloc[0]['status']}); pick a completed trial or `best`")
        return found.iloc[0]
    if done.empty:
        raise _err(spec, ".results", f"the teacher sweep {where} has no completed trial with an "
                   f"objective ({len(trials)} trials recorded)")
    mode = str(done[schema.MODE].dropna().iloc[0]) if done[schema.MODE].notna().any() else "max"
    order = done[schema.OBJECTIVE].astype(float)
    return done.loc[order.idxmax() if mode == "max" else order.idxmin()]


def _tune_trial_dir(where: Path, trial_id: str) -> Path | None:
    """The newest Ray Tune directory of `trial_id` under <teacher>/_tune/ (fallback)."""
    tune = where / "_tune"
    found = [p for pattern in (f"*/{trial_id}", f"*/*_{trial_id}_*") for p in tune.glob(pattern)
             if p.is_dir()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _text(row: pd.Series, column: str) -> str | None:
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    return str(value)


def _config_and_checkpoint(spec: SweepSpec, row: pd.Series,
                           where: Path) -> tuple[dict[str, Any], Path]:
    trial_id = str(row[schema.TRIAL_ID])
    config_text, checkpoint = _text(row, schema.CONFIG_JSON), _text(row, schema.CHECKPOINT_PATH)
    tune_dir = None
    if config_text is None or checkpoint is None:
        tune_dir = _tune_trial_dir(where, trial_id)
    if config_text is None and tune_dir is not None and (tune_dir / "params.json").is_file():
        config_text = (tune_dir / "params.json").read_text()
    if checkpoint is None and tune_dir is not None:
        saved = sorted(tune_dir.glob("checkpoint_*"), key=lambda p: p.name)
        checkpoint = str(saved[-1]) if saved else None
    if config_text is None:
        raise _err(spec, "", f"the teacher store {where} records no config for trial "
                   f"{trial_id} (no config_json column, no Tune params.json)")
    config = json.loads(config_text)
    if checkpoint is None:
        raise _err(spec, "", f"teacher trial {trial_id} of {where} has no checkpoint (no "
                   f"checkpoint_path column, no Tune checkpoint directory)")
    path = Path(checkpoint.removeprefix("file://"))
    if not (path / CHECKPOINT_FILE).is_file() and not path.is_file():
        raise _err(spec, "", f"the checkpoint of teacher trial {trial_id} is missing: "
                   f"{path / CHECKPOINT_FILE} does not exist")
    return config, path


def check_same_data(spec: SweepSpec, teacher_data: dict[str, Any], trial_id: str) -> None:
    """The student must see the teacher's utterances, features and folds: every data key equal
    (the teacher's outputs are targets for the same input tensors; a member is matched to the
    teacher member of its fold), except cache_dir; the student may train fewer folds."""
    mine = with_defaults(thaw(spec.data), DATA_DEFAULTS)
    theirs = with_defaults(teacher_data, DATA_DEFAULTS)
    differ = [k for k in sorted(set(mine) | set(theirs))
              if k not in (*DATA_IGNORED, "use_folds") and mine.get(k) != theirs.get(k)]
    if differ:
        shown = "; ".join(f"{k}: student {mine.get(k)!r}, teacher {theirs.get(k)!r}"
                          for k in differ)
        raise _err(spec, "", f"teacher trial {trial_id} was trained on different data or folds "
                   f"({shown}); distillation needs the teacher's data section")
    ours, their = mine["use_folds"], theirs["use_folds"]
    if their is not None and (ours is None or ours > their):
        raise _err(spec, "", f"the teacher trained {their} folds (data.use_folds), the student "
                   f"asks for {ours or 'all'}; use data.use_folds <= {their}")


def resolve_teacher(spec: SweepSpec, results_root: str) -> dict[str, Any]:
    """The `distill` section of the student trials' config (see the module docstring)."""
    from orchestrator.query import QueryError, load

    where = teacher_dir(spec, results_root)
    try:
        trials = load(str(where)).trials
    except QueryError as exc:
        raise _err(spec, ".results", f"cannot read the teacher store {where}: {exc}") from None
    if trials.empty:
        raise _err(spec, ".results", f"the teacher sweep {where} has no recorded trial")
    row = _pick(spec, trials, where)
    config, checkpoint = _config_and_checkpoint(spec, row, where)
    trial_id = str(row[schema.TRIAL_ID])
    check_same_data(spec, dict(config.get("data") or {}), trial_id)
    sweep = _text(row, schema.SWEEP) or where.name
    out = {k: thaw(spec.distill[k]) for k in RESOLVED_KEYS}
    out.update(teacher_sweep=sweep, teacher_trial=trial_id, teacher_model=config["model"],
               teacher_checkpoint=str(checkpoint), teacher_objective=float(row[schema.OBJECTIVE]))
    return out
