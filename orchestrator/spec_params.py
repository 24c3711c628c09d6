"""search.params: validation against the sections they address, dependency order of conditions,
and the sampling helpers the runner uses (define-by-run sampling, decoding, applying)."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna

from orchestrator import spec_checks as sc
from orchestrator import spec_distill as sd
from orchestrator import spec_sections as ss
from orchestrator.distributions import ParamSpec, freeze_value, parse_param
from orchestrator.dotted import get_dotted
from orchestrator.spec_checks import Ctx, Expect, check_value
from orchestrator.spec_errors import SpecError
from trainables.config import DATA_DEFAULTS, TRAIN_DEFAULTS

if TYPE_CHECKING:
    from orchestrator.spec import SweepSpec

PARAMS = ("search", "params")


class _Base:
    """The validated base sections, for resolving what a dotted key addresses."""

    def __init__(self, data: dict[str, Any], model: dict[str, Any], train: dict[str, Any],
                 distill: dict[str, Any] | None = None):
        self.data, self.model, self.train, self.distill = data, model, train, distill

    def valid_keys(self, families: Sequence[str]) -> list[str]:
        keys = [f"data.{k}" for k in DATA_DEFAULTS] + [f"train.{k}" for k in TRAIN_DEFAULTS]
        if self.distill is not None:
            keys += [f"distill.{k}" for k in sd.SEARCHABLE]
        keys.append("model.name")
        for fam in families:
            keys += [f"model.{k}" for k in sc.model_signature(fam).defaults]
        return sorted(set(keys))


def _families_for(p: ParamSpec, base: _Base, names: list[str]) -> list[str]:
    allowed = dict(p.condition).get("model.name")
    return [n for n in names if freeze_value(n) in allowed] if allowed else names


def _check_target(ctx: Ctx, p: ParamSpec, base: _Base, names: list[str]) -> list[Expect] | None:
    """Resolve what `p.key` addresses; the expectations of its value (None = model.name)."""
    path = (*PARAMS, p.key)
    section, _, sub = p.key.partition(".")
    if p.key == "model.name":
        return None
    if section in ("data", "train"):
        if sub not in (DATA_DEFAULTS if section == "data" else TRAIN_DEFAULTS):
            raise ctx.err(path, f"{p.key} addresses nothing: {sub!r} is not a key of the {section}"
                          f" section{sc.suggest(p.key, base.valid_keys(names))}")
        return [ss.expect_for(section, sub)]
    if section == "distill":
        if base.distill is None:
            raise ctx.err(path, f"{p.key} is searched, but the sweep has no distill section "
                          f"(add distill: {{teacher: {{results: ..., pick: best}}}})")
        if sub not in sd.SEARCHABLE:
            raise ctx.err(path, f"{p.key} addresses nothing: the searchable distill keys are "
                          f"{', '.join(sd.SEARCHABLE)}{sc.suggest(p.key, base.valid_keys(names))}")
        return [sd.EXPECT[sub]]
    if section != "model":
        hint = sc.suggest(p.key, base.valid_keys(names))
        raise ctx.err(path, f"a searched key starts with data., model. or train. (or distill. "
                      f"with a distill section), but got {p.key!r}{hint}")
    expects = []
    for fam in _families_for(p, base, names):
        sig = sc.model_signature(fam)
        if sub not in sig.defaults:
            others = [n for n in sc.model_families() if sub in sc.model_signature(n).defaults]
            hint = (f"; it is a parameter of {', '.join(others)}: add `when: {{model.name: "
                    f"[{', '.join(others)}]}}`" if others else "")
            raise ctx.err(path, f"{p.key} addresses nothing: model {fam!r} has no parameter "
                          f"{sub!r}{sc.suggest(p.key, base.valid_keys([fam]))}{hint}")
        expects.append(sig.expect(sub))
    return expects


def _check_values(ctx: Ctx, p: ParamSpec, base: _Base, expects: list[Expect] | None) -> None:
    path = (*PARAMS, p.key)
    section, _, sub = p.key.partition(".")
    if expects is None:  # model.name
        if p.kind != "choice":
            raise ctx.err(path, "model.name is searched with {choice: [family, ...]}")
        for i, name in enumerate(p.real_choices()):
            check_value(ctx, (*path, "choice", str(i)), name,
                        Expect((str,), values=tuple(sc.model_families())))
            inputs, kind = sc.model_signature(name).inputs, base.data["features"]
            if inputs and kind not in inputs:
                raise ctx.err((*path, "choice", str(i)), f"model {name!r} takes features "
                              f"{', '.join(inputs)}, but data.features is {kind!r}")
        return
    for expect in expects:
        if p.kind == "choice":
            for i, value in enumerate(p.real_choices()):
                vpath = (*path, "choice", str(i))
                if section == "model":
                    check_value(ctx, vpath, value, expect)
                elif section == "distill":
                    sd.check_entry(ctx, vpath, sub, value)
                else:
                    ss.check_entry(ctx, vpath, section, sub, value)
            continue
        numeric = expect.types is None or expect.types in ((int,), (float,))
        if expect.values is not None or not numeric:
            raise ctx.err(path, f"{p.key} takes {expect.name()}; search it with {{choice: [...]}}"
                          f", not {p.kind}")
        if expect.types == (int,) and p.kind != "int":
            raise ctx.err(path, f"{p.key} is an integer; search it with {{int: [low, high]}}, not "
                          f"{p.kind}")
        for bound in (p.low, p.high):
            if section in ("data", "train"):
                ss.check_minimum(ctx, path, p.key, bound)
            elif section == "distill":
                sd.check_range(ctx, path, sub, bound)
    if p.key == "data.features" and p.kind == "choice":
        inputs = sc.model_signature(base.model["name"]).inputs
        for i, kind in enumerate(p.real_choices()):
            if inputs and kind not in inputs:
                raise ctx.err((*path, "choice", str(i)), f"model {base.model['name']!r} takes "
                              f"features {', '.join(inputs)}, but the choice is {kind!r}")


def _order(ctx: Ctx, params: dict[str, ParamSpec]) -> tuple[ParamSpec, ...]:
    """Params sorted so that every param comes after the params its `when` names."""
    done: list[str] = []
    visiting: list[str] = []

    def visit(key: str) -> None:
        if key in done:
            return
        if key in visiting:
            cycle = " -> ".join([*visiting[visiting.index(key):], key])
            raise ctx.err((*PARAMS, key, "when"), f"conditions form a cycle: {cycle}")
        visiting.append(key)
        for cond_key, _ in params[key].condition:
            if cond_key in params:
                visit(cond_key)
        visiting.pop()
        done.append(key)

    for key in params:
        visit(key)
    return tuple(params[k] for k in done)


def validate_params(ctx: Ctx, raw: Any, data: dict[str, Any], model: dict[str, Any],
                    train: dict[str, Any],
                    distill: dict[str, Any] | None = None) -> tuple[ParamSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ctx.err(PARAMS, f"search.params is a mapping {{dotted.key: distribution}}, but got "
                      f"{sc.describe(raw)}")
    base = _Base(data, model, train, distill)
    params: dict[str, ParamSpec] = {}
    for key, spec in raw.items():
        if not isinstance(key, str):
            raise ctx.err((*PARAMS, str(key)), f"keys must be dotted strings, got {key!r}")
        try:
            params[key] = parse_param(key, spec)
        except SpecError as exc:
            raise ctx.relocate((*PARAMS, key), exc) from None
    names = [model["name"]]
    if "model.name" in params:
        names = [n for n in params["model.name"].real_choices() if isinstance(n, str)] or names
        names = [n for n in names if n in sc.model_families()] or [model["name"]]
    for p in params.values():
        _check_values(ctx, p, base, _check_target(ctx, p, base, names))
    valid = base.valid_keys(names)
    for p in params.values():
        for cond_key, _ in p.condition:
            if cond_key not in params and cond_key not in valid:
                raise ctx.err((*PARAMS, p.key, "when", cond_key), f"the condition key {cond_key}"
                              f" addresses nothing{sc.suggest(cond_key, valid)}")
    return _order(ctx, params)


# --- sampling ----------------------------------------------------------------------------------
def condition_met(p: ParamSpec, sampled: Mapping[str, Any], keys: set[str],
                  base: Mapping[str, Any]) -> bool:
    for cond_key, allowed in p.condition:
        if cond_key in keys:
            if cond_key not in sampled:
                return False
            value = sampled[cond_key]
        else:
            value = get_dotted(base, cond_key)
        if freeze_value(value) not in allowed:
            return False
    return True


def suggest(trial: optuna.Trial, p: ParamSpec) -> Any:
    if p.kind == "choice":
        return trial.suggest_categorical(p.key, p.optuna_choices())
    if p.kind == "int":
        return trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1),
                                 log=p.log)
    step = None if p.step is None else float(p.step)
    return trial.suggest_float(p.key, float(p.low), float(p.high), step=step, log=p.is_log)


def sample_params(spec: SweepSpec, trial: optuna.Trial) -> dict[str, Any]:
    """Define-by-run sampling: suggest each param (conditions respected, in dependency order).
    Returns {dotted_key: Optuna-native value} (what Optuna stores; see decode_params)."""
    base = spec.base_config()
    keys = set(spec.param_keys())
    native: dict[str, Any] = {}
    real: dict[str, Any] = {}
    for p in spec.search.params:
        if condition_met(p, real, keys, base):
            native[p.key] = suggest(trial, p)
            real[p.key] = p.decode(native[p.key])
    return native


def decode_params(spec: SweepSpec, flat: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna-native values -> the real values (e.g. "[128, 128]" -> [128, 128])."""
    by_key = {p.key: p for p in spec.search.params}
    return {k: by_key[k].decode(v) if k in by_key else v for k, v in flat.items()}


def optuna_distributions(spec: SweepSpec, flat: Mapping[str, Any]) -> dict[str, Any]:
    """The Optuna distribution of each param present in `flat` (for optuna.trial.create_trial)."""
    by_key = {p.key: p for p in spec.search.params}
    return {k: by_key[k].to_optuna() for k in flat if k in by_key}


def grid_search_space(spec: SweepSpec) -> dict[str, list[Any]]:
    """{key: every Optuna-native value} for optuna.samplers.GridSampler; SpecError when a param
    is continuous. Conditional params are in the grid too (absent ones just repeat points)."""
    out = {}
    for p in spec.search.params:
        try:
            out[p.key] = p.grid_values()
        except SpecError as exc:
            raise SpecError(spec.path, f"search.params.{p.key}", exc.message) from None
    return out


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
