"""The Optuna study the report's plots are drawn from: the stored trials re-added through THE
rebuild (orchestrator/search.py: study_from_trials), each trial carrying the distribution its
parameter has in the sweep file (results/<sweep>/spec.yaml), so Optuna's plots put a
`loguniform` parameter on a log axis and an `int` one on integer ticks.

Only `search.params` of spec.yaml is parsed (orchestrator/sweepfile: parse_param), not the whole
sweep file: a report is often made on another machine than the sweep ran on, where the full
validation (corpus paths, GPUs) would refuse a file that is fine for drawing. Without a readable
spec.yaml (a sweep recorded before it was written) the distributions are guessed from the stored
values, and the report says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
import optuna.distributions as od
import pandas as pd
import pyarrow.fs as pafs
import yaml

from orchestrator.query import Results, param_columns
from orchestrator.search import study_from_trials, to_optuna
from orchestrator.store import schema
from orchestrator.store.files import SPEC_FILE
from orchestrator.sweepfile import SpecError, parse_param

# Guessing a scale without the spec: values spanning this ratio or more are drawn on a log axis.
GUESSED_LOG_RATIO = 100.0


@dataclass
class SweepStudy:
    """The rebuilt study, the distribution of each param (by dotted key), and where the
    distributions came from (`source`: "spec.yaml" or a sentence saying they were guessed)."""

    study: optuna.Study
    distributions: dict[str, od.BaseDistribution]
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False,
                                     states=(optuna.trial.TrialState.COMPLETE,))

    def varying_params(self) -> list[str]:
        """Params (spec order) that take two or more values over the complete trials: the only
        ones a slice, contour or importance can say anything about."""
        seen: dict[str, set[str]] = {}
        for trial in self.complete:
            for key, value in trial.params.items():
                seen.setdefault(key, set()).add(repr(value))
        return [k for k in self.distributions if len(seen.get(k, ())) > 1]

    def log_params(self) -> set[str]:
        return {k for k, d in self.distributions.items() if getattr(d, "log", False)}


def read_spec_params(results: Results, sweep: str) -> dict[str, od.BaseDistribution]:
    """{dotted key: Optuna distribution} of `search.params` in <sweep>/spec.yaml. Raises
    FileNotFoundError when the file is absent and SpecError when it is malformed (both name
    the file)."""
    path = f"{results.sweeps[sweep]}/{SPEC_FILE}"
    if results.fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(f"no {path}")
    with results.fs.open_input_stream(path) as stream:
        raw = yaml.safe_load(stream.read()) or {}
    params = (raw.get("search") or {}).get("params") if isinstance(raw, Mapping) else None
    if not isinstance(params, Mapping):
        raise SpecError(path, "search.params", "expected a mapping of searched parameters")
    try:
        return {key: to_optuna(parse_param(key, value)) for key, value in params.items()}
    except SpecError as exc:
        raise SpecError(path, f"search.params.{exc.key}", exc.message) from None


def guess_distribution(values: pd.Series) -> od.BaseDistribution | None:
    """An Optuna distribution covering the stored values (no spec.yaml to read it from), or
    None when they are constant. Log scale when positive values span GUESSED_LOG_RATIO."""
    values = values.dropna()
    if values.nunique() < 2:
        return None
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return od.CategoricalDistribution(sorted(values.astype(str).unique()))
    low, high = float(values.min()), float(values.max())
    if pd.api.types.is_integer_dtype(values):
        return od.IntDistribution(int(low), int(high))
    return od.FloatDistribution(low, high, log=low > 0 and high / low >= GUESSED_LOG_RATIO)


def _native(value: Any, dist: od.BaseDistribution) -> Any:
    """A stored param value in the form `dist` holds, or None when it does not belong to it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(dist, od.CategoricalDistribution):
        for choice in dist.choices:
            if choice == value or str(choice) == str(value):
                return choice
        return None
    number = int(value) if isinstance(dist, od.IntDistribution) else float(value)
    return number if dist.low <= number <= dist.high else None


def _params_of(dists: Mapping[str, od.BaseDistribution], use_json: bool):
    def params_of(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, od.BaseDistribution]]:
        stored = row.get(schema.OPTUNA_PARAMS_JSON) if use_json else None
        if isinstance(stored, str) and stored:
            # the Optuna-native values the sampler drew (what resume re-adds too)
            candidates = json.loads(stored)
        else:
            candidates = {k: row.get(schema.param_column(k)) for k in dists}
        params = {}
        for key, value in candidates.items():
            if key in dists and (native := _native(value, dists[key])) is not None:
                params[key] = native
        return params, {k: dists[k] for k in params}

    return params_of


def sweep_study(results: Results, sweep: str, trials: pd.DataFrame, mode: str) -> SweepStudy:
    """The study of one sweep's `trials` (rows of the trials table), rebuilt by
    search.study_from_trials with the spec's distributions (module docstring)."""
    notes: list[str] = []
    try:
        dists = read_spec_params(results, sweep)
        source, use_json = SPEC_FILE, True
    except (FileNotFoundError, SpecError, yaml.YAMLError) as exc:
        columns = param_columns(trials)
        guessed = {c.removeprefix(schema.PARAM_PREFIX): guess_distribution(trials[c])
                   for c in columns}
        dists = {k: d for k, d in guessed.items() if d is not None}
        source, use_json = "guessed from the stored values", False
        notes.append(f"parameter scales guessed from the stored values ({exc})")
    study = study_from_trials(trials, direction=mode, params_of=_params_of(dists, use_json))
    return SweepStudy(study, dists, source, notes)
