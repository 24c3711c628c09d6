"""search.params: validation against the sections they address, and the dependency order of
their conditions. Validation only: sampling them is orchestrator/search.py's business."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.sweepfile import context as sc
from orchestrator.sweepfile import distill_section as sd
from orchestrator.sweepfile import sections as ss
from orchestrator.sweepfile.context import Ctx, Expect, check_value
from orchestrator.sweepfile.distributions import ParamSpec, freeze_value, parse_param, thaw_value
from orchestrator.sweepfile.spec_error import SpecError
from trainables.config import DATA_DEFAULTS, TRAIN_DEFAULTS

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
        return [sd.expect(sub)]
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


MAX_DATA_VARIANTS = 8  # prepared data sets a sweep's data.* choices may ask for


SPLIT_KEYS = ("data.val", "data.folds", "data.use_folds")  # what splits a fold into val/test


def _check_data_choices(ctx: Ctx, params: dict[str, ParamSpec]) -> None:
    """Searched data.* keys are prepared once per value before the trials start
    (runner.data_variants): choices only, and few combinations."""
    data_params = [p for p in params.values() if p.key.startswith("data.")]
    for p in data_params:
        if p.key in SPLIT_KEYS:  # trials on other test sets would be ranked and paired together
            raise ctx.err((*PARAMS, p.key), f"{p.key} changes the folds' validation/test "
                          f"speakers, so its trials could not be compared; set it in the data "
                          f"section (or --set {p.key}=...) and run one sweep per value")
        if p.kind != "choice":
            raise ctx.err((*PARAMS, p.key), f"{p.key}: the data is prepared once per value "
                          f"before the trials start, so a data key is searched with "
                          f"{{choice: [...]}}, not {p.kind}")
    combinations = math.prod(len(p.choices) for p in data_params)
    if combinations > MAX_DATA_VARIANTS:
        keys = ", ".join(p.key for p in data_params)
        raise ctx.err(PARAMS, f"the data choices ({keys}) ask for {combinations} prepared data "
                      f"sets; at most {MAX_DATA_VARIANTS} are prepared for one sweep")


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
    _check_data_choices(ctx, params)
    valid = base.valid_keys(names)
    for p in params.values():
        for cond_key, _ in p.condition:
            if cond_key not in params and cond_key not in valid:
                raise ctx.err((*PARAMS, p.key, "when", cond_key), f"the condition key {cond_key}"
                              f" addresses nothing{sc.suggest(cond_key, valid)}")
            _check_condition_values(ctx, p, cond_key, params, base)
    return _order(ctx, params)


def _can_take(p: ParamSpec, value: Any) -> bool:
    """Whether the searched `p` can draw `value` (search.condition_met compares with ==)."""
    if p.kind == "choice":
        return freeze_value(value) in p.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if not (p.low <= value <= p.high):
        return False
    if p.kind != "int" and p.step is None:
        return False  # a continuous draw equals one exact value with probability 0
    span = (value - p.low) / (p.step or 1)
    return abs(span - round(span)) <= 1e-9 * max(1.0, abs(span))


def _check_condition_values(ctx: Ctx, p: ParamSpec, cond_key: str,
                            params: dict[str, ParamSpec], base: _Base) -> None:
    """Every value a `when:` lists must be one the condition key can take: a searched key's own
    choices (or range), a fixed key's value; a typo (`[maxx]`) would switch `p` off silently."""
    allowed = dict(p.condition)[cond_key]
    path = (*PARAMS, p.key, "when", cond_key)
    shown = ", ".join(repr(v) for v in (_thawed(allowed)))
    if cond_key in params:
        cond = params[cond_key]
        never = [v for v in allowed if not _can_take(cond, v)]
        if not never:
            return
        if cond.kind == "choice":
            can = f"its choices are {cond.real_choices()}"
        elif cond.kind != "int" and cond.step is None:
            can = (f"it is drawn from a continuous {cond.kind} [{cond.low}, {cond.high}], so it "
                   "never equals one value; condition on a choice, an int or a stepped uniform")
        else:
            can = f"it is drawn from {cond.kind} [{cond.low}, {cond.high}] step {cond.step or 1}"
        raise ctx.err(path, f"`when: {{{cond_key}: [{shown}]}}`: {cond_key} can never be "
                      f"{', '.join(repr(v) for v in _thawed(never))}: {can}")
    section, _, sub = cond_key.partition(".")
    fixed = {"data": base.data, "model": base.model, "train": base.train,
             "distill": base.distill or {}}.get(section, {})
    if sub not in fixed:
        return
    if freeze_value(fixed[sub]) not in allowed:
        raise ctx.err(path, f"`when: {{{cond_key}: [{shown}]}}` never holds: {cond_key} is not "
                      f"searched and is {fixed[sub]!r} in every trial, so {p.key} would never be "
                      f"drawn; search {cond_key} or list {fixed[sub]!r}")


def _thawed(values: Sequence[Any]) -> list[Any]:
    """Frozen condition values as the sweep file wrote them (lists, mappings)."""
    return [thaw_value(v) for v in values]
