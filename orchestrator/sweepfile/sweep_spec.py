"""SweepSpec: a validated sweep file, frozen; and the trial config for sampled values.

`load_spec` (load.py) builds it; `config_for(native)` turns the values a sampler drew (in Optuna's
native form, orchestrator/search.py) into the nested trial config: decode, then apply.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.dotted import get_dotted
from orchestrator.sweepfile import context as sc
from orchestrator.sweepfile.distributions import ParamSpec
from trainables.config import RESOURCES, SEARCH
from trainables.frozen import thaw


@dataclass(frozen=True)
class SchedulerSpec:
    type: str  # asha | none
    grace_period: int  # capped at max_t
    reduction_factor: float
    max_t: int  # default: train.epochs


@dataclass(frozen=True)
class SearchSpec:
    metric: str  # val_<acc|uar|f1_macro|f1_weighted|loss>
    mode: str  # max (min for val_loss)
    sampler: str  # tpe | random | grid | cmaes | qmc
    trials: int
    seed: int | None
    max_concurrent: int | None  # None = as many as the resources allow
    scheduler: SchedulerSpec
    params: tuple[ParamSpec, ...]  # in dependency order (a param after those its `when` names)
    # compute the reference baseline at the start (orchestrator/baseline_run)
    baseline: bool = SEARCH["baseline"].default
    tuner_trials: int = SEARCH["tuner_trials"].default  # trials per Ray Tune Tuner
    # {top, seeds} (orchestrator/confirm.py) / {first, alpha} (orchestrator/racing.py); None = off
    confirm: Mapping[str, Any] | None = None
    racing: Mapping[str, Any] | None = None
    loggers: tuple[str, ...] = ()  # Tune's tracker callbacks (orchestrator/trackers.py)


@dataclass(frozen=True)
class ResourceSpec:
    """Per-trial resources. gpus_per_trial "auto" (the default): 0 on a machine/cluster without a
    GPU, else the planner's memory-based share of one GPU. `dict(spec.resources)` works."""

    cpus_per_trial: float = RESOURCES["cpus_per_trial"].default
    gpus_per_trial: float | str = RESOURCES["gpus_per_trial"].default
    gpu_memory_fraction: float = RESOURCES["gpu_memory_fraction"].default
    memory_budget: int | None = None  # bytes; None = gpu_memory_fraction of the GPU
    max_failures: int = RESOURCES["max_failures"].default  # Ray retries; -1 = forever

    def keys(self) -> list[str]:
        return list(RESOURCES)

    def __getitem__(self, key: str) -> Any:
        if key not in RESOURCES:
            raise KeyError(key)
        return getattr(self, key)


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    name: str
    data: Mapping[str, Any]
    model: Mapping[str, Any]
    train: Mapping[str, Any]
    search: SearchSpec
    resources: ResourceSpec
    results: str | None = "results"
    distill: Mapping[str, Any] | None = None

    def base_config(self) -> dict[str, Any]:
        """{"data", "model", "train"}: a fresh mutable copy (lists, not tuples)."""
        return {"data": thaw(self.data), "model": thaw(self.model), "train": thaw(self.train)}

    def param_keys(self) -> list[str]:
        return [p.key for p in self.search.params]

    def grid_points(self) -> int | None:
        """Points of the full grid (the product of every param's values) under `sampler:
        grid`, else None. load_spec already checked that every param is finite."""
        if self.search.sampler != "grid":
            return None
        return math.prod(len(p.grid_values()) for p in self.search.params)

    def config_for(self, native: Mapping[str, Any]) -> dict[str, Any]:
        """The trial config for Optuna-native sampled values (decode + apply)."""
        return apply_params(self.base_config(), decode_params(self.search.params, native))

    def as_dict(self) -> dict[str, Any]:
        """The sweep as run, defaults resolved (results/<name>/spec.yaml; load_spec reads it)."""
        s = self.search
        return {
            "name": self.name,
            **self.base_config(),
            "search": {
                "metric": s.metric, "mode": s.mode, "sampler": s.sampler, "trials": s.trials,
                "seed": s.seed, "max_concurrent": s.max_concurrent,
                "scheduler": dict(vars(s.scheduler)),
                "params": {p.key: p.to_yaml() for p in s.params},
                "baseline": s.baseline, "tuner_trials": s.tuner_trials,
                "confirm": None if s.confirm is None else dict(s.confirm),
                "racing": None if s.racing is None else dict(s.racing),
                "loggers": list(s.loggers),
            },
            # a size is written with its unit: load_spec refuses a bare number
            "resources": {**dict(self.resources), "memory_budget": (
                None if self.resources.memory_budget is None
                else f"{self.resources.memory_budget}B")},
            "results": self.results,
            "distill": thaw(self.distill) if self.distill is not None else None,
        }


def decode_params(params: Sequence[ParamSpec] | SweepSpec,
                  flat: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna-native values -> the real values (e.g. "[128, 128]" -> [128, 128])."""
    if isinstance(params, SweepSpec):
        params = params.search.params
    by_key = {p.key: p for p in params}
    return {k: by_key[k].decode(v) if k in by_key else v for k, v in flat.items()}


def apply_params(base_config: Mapping[str, Any], flat_params: Mapping[str, Any]) -> dict[str, Any]:
    """A new nested config: `base_config` with each dotted key of `flat_params` set (real values,
    i.e. decoded). When model.name changes family, the model section keeps only the keys the new
    family accepts and takes that family's defaults for the rest."""
    config = copy.deepcopy(dict(base_config))
    name = flat_params.get("model.name")
    model = config.get("model")
    if name is not None and isinstance(model, dict) and model.get("name") != name:
        families = sc.model_families()
        if name in families:
            sig = sc.model_signature(name)
            kept = {k: v for k, v in model.items() if k in sig.defaults}
            defaults = {k: copy.deepcopy(v) for k, v in sig.defaults.items()
                        if v is not inspect.Parameter.empty}
            config["model"] = {"name": name, **defaults, **kept}
    for key, value in flat_params.items():
        parts = key.split(".")
        node = config
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = copy.deepcopy(value)
    return config


# The parts of a sweep file that must not change between a sweep's runs (trials may grow):
# with another value the recorded trials and the new ones would answer different questions.
SAME_ON_RESUME = ("data", "model", "train", "search.params", "search.metric", "search.mode")
_MISSING = object()
WHERE_NOT_WHAT = ("data.cache_dir",)  # where the prepared data is kept, not what it is


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """Leaves of nested mappings by dotted key; a searched param (`search.params.train.lr`) is
    one leaf holding its whole distribution; an empty mapping has no leaves."""
    if not isinstance(value, Mapping) or prefix.startswith("search.params."):
        out[prefix] = value
        return
    for key, child in value.items():
        _flatten(child, f"{prefix}.{key}" if prefix else str(key), out)


def _at(tree: Mapping[str, Any], dotted: str) -> Any:
    return get_dotted(tree, dotted, _MISSING)


def _show(value: Any) -> str:
    return "(absent)" if value is _MISSING else repr(value)


def spec_diff(old: Mapping[str, Any], new: Mapping[str, Any],
              keys: Sequence[str] = SAME_ON_RESUME) -> list[str]:
    """The changed leaves under `keys` of two sweep dicts (`as_dict()` form), one line each:
    `train.epochs: 1 -> 6`, `search.params.model.layers: {'int': [1, 4]} -> (absent)`."""
    lines = []
    for key in keys:
        before, after = {}, {}
        for tree, flat in ((old, before), (new, after)):
            value = _at(tree, key)
            if value is not _MISSING:
                _flatten(value, key, flat)
        for leaf in dict.fromkeys([*before, *after]):
            a, b = before.get(leaf, _MISSING), after.get(leaf, _MISSING)
            if a != b and leaf not in WHERE_NOT_WHAT:
                lines.append(f"{leaf}: {_show(a)} -> {_show(b)}")
    return lines
