"""The model constructor's rules over several hyper-parameters (d_model % heads == 0 and the
like), checked for every combination the search can draw, before Ray starts.

The rules live with the model: a family's class attribute `CONSTRAINTS` (a tuple of
trainables.models.param_checks.Constraint: keys, rule text, predicate). Here each rule is
evaluated on
the cartesian product of the values its keys can take in this sweep:
- a key that is not searched: its value in the model section (one value);
- `choice`: every choice; `int`: every value when the range holds at most ENUMERATE_AT_MOST of
  them, else its two endpoints; `uniform` / `loguniform`: the two endpoints (a rule over a
  continuous value is not enumerable; the endpoints catch the usual mistake);
- a key searched under a `when` condition may also keep its base value (the condition can be
  false), so the base value joins its candidates;
- a family excluded by a param's `when: {model.name: [...]}` does not see that param.
The first violating combination is a SpecError at the first searched key of the rule, naming
every param of the rule and the rule itself. The base model alone was already built on the meta
device (load.py), so a rule broken by fixed values only was reported there.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.sweepfile import context as sc
from orchestrator.sweepfile.context import Ctx
from orchestrator.sweepfile.distributions import ParamSpec, freeze_value

ENUMERATE_AT_MOST = 64  # values of one int range taken one by one; beyond: the endpoints
_PARAMS = ("search", "params")


def _candidates(p: ParamSpec) -> list[Any]:
    if p.kind == "choice":
        return p.real_choices()
    if p.kind == "int":
        step = int(p.step or 1)
        if (int(p.high) - int(p.low)) // step + 1 <= ENUMERATE_AT_MOST:
            return list(range(int(p.low), int(p.high) + 1, step))
    return [p.low, p.high]


def _spec_text(p: ParamSpec) -> str:
    spec = p.to_yaml()
    spec.pop("when", None)
    return str(spec)


def _describe(p: ParamSpec | None, key: str, base: Mapping[str, Any]) -> str:
    if p is None:
        return f"model.{key} = {base.get(key)!r} (fixed)"
    spec = p.to_yaml()
    spec.pop("when", None)
    return f"model.{key} {spec}"


def _applies(p: ParamSpec, family: str) -> bool:
    allowed = dict(p.condition).get("model.name")
    return allowed is None or freeze_value(family) in allowed


def _holds(rule: Any, values: dict[str, Any]) -> bool:
    try:
        return bool(rule.holds(**values))
    except (TypeError, ValueError, ZeroDivisionError):  # e.g. heads = 0: not a valid combination
        return False


def check_constraints(ctx: Ctx, params: Sequence[ParamSpec],
                      models: Mapping[str, Mapping[str, Any]]) -> None:
    """Every rule of every family in `models` (family -> its base model section) holds for every
    combination of the searched values (see the module docstring); else a SpecError."""
    by_key = {p.key: p for p in params}
    for family, base in models.items():
        rules = getattr(sc.model_families()[family], "CONSTRAINTS", ())
        for rule in rules:
            searched = {k: by_key.get(f"model.{k}") for k in rule.keys}
            searched = {k: p for k, p in searched.items() if p is not None and _applies(p, family)}
            if not searched:
                continue  # fixed values only: the meta-device build of the base model checked it
            domains = []
            for key in rule.keys:
                p = searched.get(key)
                values = [base.get(key)] if p is None else _candidates(p)
                if p is not None and p.condition and base.get(key) not in values:
                    values.append(base.get(key))
                domains.append(values)
            for combination in itertools.product(*domains):
                values = dict(zip(rule.keys, combination))
                if _holds(rule, values):
                    continue
                first = next(k for k in rule.keys if k in searched)
                named = " and ".join(_describe(searched.get(k), k, base) for k in rule.keys)
                drawn = ", ".join(f"{k}={v!r}" for k, v in values.items())
                raise ctx.err((*_PARAMS, f"model.{first}"), (
                    f"{named} can be drawn together as {drawn}, which breaks {family}'s rule "
                    f"{rule.rule}; change the choices so that every combination holds"))


def _ends(p: ParamSpec) -> list[Any]:
    """The values of `p` a family's own limits are tried with: every choice, or the two ends of
    a range (a uniform range's high end is never drawn, so just below it stands for it)."""
    if p.kind == "choice":
        return p.real_choices()
    if p.kind == "uniform" and p.step is None and p.high > p.low:
        return [p.low, math.nextafter(float(p.high), float(p.low))]
    return [p.low, p.high]


def check_drawn_values(ctx: Ctx, params: Sequence[ParamSpec],
                       models: Mapping[str, Mapping[str, Any]], n_features: int,
                       n_classes: int) -> None:
    """Every value a searched model key can draw (each choice, each end of a range) passes the
    family's own limits: the constructor's checks (trainables/models/param_checks.py, beside
    each constructor: the one place they are declared), run by building the family on the meta
    device with that value over its base values. Else a SpecError at the searched key."""
    import torch

    from trainables.errors import ConfigError
    from trainables.models import build_model

    for family, base in models.items():
        for p in params:
            key = p.key.removeprefix("model.")
            if not p.key.startswith("model.") or key == "name" or not _applies(p, family):
                continue
            if key not in sc.model_signature(family).defaults:
                continue  # another family's key (params.py names it)
            for value in _ends(p):
                try:
                    with torch.device("meta"):
                        build_model({**copy.deepcopy(dict(base)), key: value},
                                    n_features=n_features, n_classes=n_classes)
                except ConfigError as exc:
                    if exc.key != p.key:
                        continue  # a rule over several keys: check_constraints' business
                    raise ctx.err((*_PARAMS, p.key), f"{p.key} {_spec_text(p)} can draw "
                                  f"{value!r}, which model {family!r} refuses: "
                                  f"{exc.message}") from None
