"""A sweep file -> a validated, frozen SweepSpec; its search params -> Optuna distributions.

`load_spec("search_spaces/transformer.yaml", overrides=["train.lr=1e-3"], trials=4)` reads the file
safely (orchestrator/yaml_loader.py), applies the --set overrides and the --trials / --epochs
shortcuts, checks every key and value against trainables/config.py, the model family's
constructor and the rules below, fills in the defaults, and builds the base model on the meta
device. Every mistake is a SpecError naming the file, the line, the key path and what was
expected. The sampling helpers the runner uses live in spec_params.py and are re-exported here.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import spec_checks as sc
from orchestrator import spec_distill as sd
from orchestrator import spec_sections as ss
from orchestrator.distributions import ParamSpec
from orchestrator.spec_checks import Ctx, unknown_key
from orchestrator.spec_errors import SpecError
from orchestrator.spec_params import (
    apply_params,
    decode_params,
    grid_search_space,
    optuna_distributions,
    sample_params,
    validate_params,
)
from orchestrator.yaml_loader import load_yaml_file, parse_override_value

__all__ = ["SpecError", "SweepSpec", "SearchSpec", "SchedulerSpec", "ResourceSpec", "ParamSpec",
           "load_spec", "resolve_spec_path", "sample_params", "decode_params", "apply_params",
           "optuna_distributions", "grid_search_space", "SEARCH_SPACES"]

SEARCH_SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
TOP_KEYS = ("name", "data", "model", "train", "search", "resources", "results", "distill")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class FrozenDict(dict):
    """A dict that refuses changes (values frozen too: lists -> tuples); picklable."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a SweepSpec is frozen; use base_config() for a mutable copy")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __reduce__(self) -> tuple[type, tuple[dict[str, Any]]]:
        return (FrozenDict, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: kv[0])))


def freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return copy.deepcopy(value)


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


@dataclass(frozen=True)
class ResourceSpec:
    """Per-trial resources. gpus_per_trial "auto" (the default): 0 on a machine/cluster without a
    GPU, else the planner's memory-based share of one GPU. `dict(spec.resources)` works."""

    cpus_per_trial: float = 1
    gpus_per_trial: float | str = "auto"
    gpu_memory_fraction: float = 0.9
    memory_budget: int | None = None  # bytes; None = gpu_memory_fraction of the GPU
    max_failures: int = 1  # Ray retries of a crashed trial; -1 = forever

    def keys(self) -> list[str]:
        return list(ss.RESOURCE_KEYS)

    def __getitem__(self, key: str) -> Any:
        if key not in ss.RESOURCE_KEYS:
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

    def config_for(self, native: Mapping[str, Any]) -> dict[str, Any]:
        """The trial config for Optuna-native sampled values (decode + apply)."""
        return apply_params(self.base_config(), decode_params(self, native))

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
            },
            "resources": dict(self.resources),
            "results": self.results,
            "distill": thaw(self.distill) if self.distill is not None else None,
        }


def resolve_spec_path(arg: str | Path) -> Path:
    """`arg` if it is a file, else the file of that name in the repo's search_spaces/."""
    path = Path(arg).expanduser()
    if path.is_file():
        return path
    for candidate in (SEARCH_SPACES / path.name, SEARCH_SPACES / f"{path.name}.yaml"):
        if path.name and candidate.is_file():
            return candidate
    available = sorted(p.name for p in SEARCH_SPACES.glob("*.yaml"))
    what = "is a directory, not a sweep file" if path.is_dir() else "does not exist"
    raise SpecError(str(arg), None, f"{what} (also looked for {path.name!r} in {SEARCH_SPACES}); "
                    f"available sweep files: {', '.join(available) or 'none'}")


def _set_override(ctx: Ctx, raw: dict[str, Any], text: str) -> None:
    via = f"--set {text}"
    key, sep, value_text = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or "" in parts:
        raise SpecError(ctx.file, None, f"--set takes key=value with a dotted key, e.g. "
                        f"--set train.lr=1e-3, but got {text!r}", via=via)
    value = parse_override_value(value_text, ctx.file, via)
    path = tuple(parts)
    if parts[:2] == ["search", "params"] and len(parts) > 2:
        path = ("search", "params", ".".join(parts[2:]))
    node = raw
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(ctx.file, ".".join(path[: i + 1]), f"{via} addresses nothing: "
                            f"{'.'.join(path[: i + 1])} is {sc.describe(child)}, not a mapping",
                            via=via)
        node = child
    node[path[-1]] = value
    ctx.via[path] = via
    search = raw.get("search")
    params = search.get("params") if isinstance(search, dict) else None
    if len(path) == 2 and isinstance(params, dict):
        params.pop(key, None)  # --set pins a searched key to one value


def _n_classes(classes: int | list) -> int:
    """data.classes is a count (IEMOCAP 4 or 6) or a manifest's list of class names."""
    return len(classes) if isinstance(classes, list) else int(classes)


def _build_model(ctx: Ctx, data: dict[str, Any], model: dict[str, Any]) -> None:
    """Build the model on the meta device: the family's own value rules (ConfigError)."""
    import torch

    from trainables.errors import ConfigError
    from trainables.models import build_model

    try:
        with torch.device("meta"):
            build_model(copy.deepcopy(model), n_features=sc.feature_dim(data),
                        n_classes=_n_classes(data["classes"]))
    except ConfigError as exc:
        message = str(exc).removesuffix(f" at {exc.key}")
        path = tuple(exc.key.split(".")) if exc.key else ("model",)
        raise ctx.err(path, message) from None
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ctx.err(("model",), f"model {model['name']!r} cannot be built from these values: "
                      f"{exc}") from None


def _validate(ctx: Ctx, raw: dict[str, Any], default_name: str) -> dict[str, Any]:
    for key in raw:
        if not isinstance(key, str) or key not in TOP_KEYS:
            raise unknown_key(ctx, (), str(key), TOP_KEYS, "the top level")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not NAME_RE.match(name) or name in (".", ".."):
        raise ctx.err(("name",), f"name is a folder name of letters, digits, _ . - "
                      f"([A-Za-z0-9_.-]+), but got {name!r}")
    data = ss.data_or_train(ctx, raw, "data")
    model = ss.model(ctx, raw, data)
    train = ss.data_or_train(ctx, raw, "train")
    search = ss.search(ctx, raw, train["epochs"])
    distill = sd.distill(ctx, raw)
    search["params"] = validate_params(ctx, search["params"], data, model, train, distill)
    search["scheduler"] = SchedulerSpec(**search["scheduler"])
    resources = ss.resources(ctx, raw)
    results = raw.get("results", "results")
    if results is not None and (not isinstance(results, str) or not results.strip()):
        raise ctx.err(("results",), f"results is a directory or URI (a non-empty string), but "
                      f"got {results!r}")
    ss.check_data_root(ctx, data)
    _build_model(ctx, data, model)
    if search["params"] and "model.name" in {p.key for p in search["params"]}:
        for p in search["params"]:
            for fam in p.real_choices() if p.key == "model.name" else ():
                if fam != model["name"]:
                    base = {"data": data, "model": model, "train": train}
                    _build_model(ctx, data, apply_params(base, {"model.name": fam})["model"])
    return {"name": name, "data": data, "model": model, "train": train,
            "search": SearchSpec(**search), "resources": ResourceSpec(**resources),
            "results": results, "distill": distill}


def load_spec(path: str | Path, *, overrides: Sequence[str] = (), trials: int | None = None,
              epochs: int | None = None) -> SweepSpec:
    """Read, override, validate and freeze a sweep file. Every failure is a SpecError."""
    resolved = resolve_spec_path(path)
    ctx = Ctx(str(resolved), load_yaml_file(resolved))
    raw = ctx.loaded.data
    if not isinstance(raw, Mapping):
        raise SpecError(ctx.file, None, f"the top level must be a mapping of sections ("
                        f"{', '.join(TOP_KEYS)}), but got {sc.describe(raw)[:80]}", 1)
    raw = copy.deepcopy(dict(raw))
    try:
        for text in overrides:
            _set_override(ctx, raw, text)
        for value, key in ((trials, "search.trials"), (epochs, "train.epochs")):
            if value is not None:
                flag = f"--{key.split('.')[1]} {value}"
                _set_override(ctx, raw, f"{key}={value}")
                ctx.via[tuple(key.split("."))] = flag
        checked = _validate(ctx, raw, resolved.stem)
        if checked["search"].sampler == "grid":
            for p in checked["search"].params:
                try:
                    p.grid_values()
                except SpecError as exc:
                    raise ctx.relocate(("search", "params", p.key), exc) from None
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - the promise: a message, never a traceback
        raise SpecError(ctx.file, None, f"cannot validate the sweep file: {type(exc).__name__}: "
                        f"{exc}") from exc
    return SweepSpec(
        path=resolved, name=checked["name"], data=freeze(checked["data"]),
        model=freeze(checked["model"]), train=freeze(checked["train"]),
        search=checked["search"], resources=checked["resources"], results=checked["results"],
        distill=freeze(checked["distill"]) if checked["distill"] is not None else None,
    )
