"""ParamSpec: one searched parameter of a sweep file, checked on construction.

YAML syntax under `search.params` (key = the dotted key it sets):
    train.lr:      {loguniform: [1.0e-5, 1.0e-3]}
    train.dropout: {uniform: [0.0, 0.5]}              # optional step: 0.1
    model.layers:  {int: [1, 6]}                      # optional step: 2, or log: true
    model.pooling: {choice: [max, mean, last]}
    model.hidden:  {choice: [[128], [128, 128]]}      # non-primitive choices are allowed
    model.framing: {choice: [per_frame, shared], when: {model.name: [sincnet]}}

Optuna's CategoricalDistribution holds only None/bool/int/float/str, so a non-primitive choice
(a list or mapping) is stored in Optuna as its canonical JSON text ("[128, 128]"); `decode` maps
that text back to the real value. Turning a ParamSpec into an Optuna distribution is
orchestrator/search.py's (`to_optuna`): this module knows no Optuna.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.sweepfile.spec_error import SpecError
from trainables.config import MAX_INT

KINDS = ("uniform", "loguniform", "int", "choice")
_OPTIONS = ("step", "log", "when")
_PRIMITIVE = (type(None), bool, int, float, str)


def is_primitive(value: Any) -> bool:
    return isinstance(value, _PRIMITIVE)


def encode_choice(value: Any) -> Any:
    """The Optuna-native form of one choice: itself if primitive, else canonical JSON text."""
    if is_primitive(value):
        return value
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class FrozenMap(tuple):
    """A mapping frozen as a sorted tuple of (key, value) pairs; thaw_value turns it back."""

    __slots__ = ()


def freeze_value(value: Any) -> Any:
    """Lists -> tuples, mappings -> FrozenMap (hashable, comparable)."""
    if isinstance(value, Mapping):
        return FrozenMap(sorted((str(k), freeze_value(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze_value(v) for v in value)
    return value


def thaw_value(value: Any) -> Any:
    """Tuples -> lists, FrozenMap -> dict (the inverse of freeze_value)."""
    if isinstance(value, FrozenMap):
        return {k: thaw_value(v) for k, v in value}
    if isinstance(value, tuple):
        return [thaw_value(v) for v in value]
    return value


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter. Raises SpecError (with `key`) when it is not well-formed.

    kind: uniform | loguniform | int | choice. low/high/step/log for the numeric kinds, `choices`
    for choice (stored as tuples; `real_choices()` gives lists back). `condition`: the parameter
    exists only when each named dotted key's value is one of the listed values.
    """

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    condition: tuple[tuple[str, tuple[Any, ...]], ...] = field(default=())

    def __post_init__(self) -> None:
        key = self.key
        if not isinstance(key, str) or "." not in key or "" in key.split("."):
            raise SpecError(None, str(key), "a parameter key is a dotted key such as train.lr "
                            f"or model.layers, but got {key!r}")
        if self.kind not in KINDS:
            raise SpecError(None, key, f"unknown distribution {self.kind!r}; expected one of "
                            f"{', '.join(KINDS)}")
        if self.kind == "choice":
            self._check_choices()
        else:
            self._check_range()
        for cond_key, allowed in self.condition:
            if not isinstance(cond_key, str) or "." not in cond_key:
                raise SpecError(None, key, f"`when` keys are dotted keys such as model.name, "
                                f"but got {cond_key!r}")
            if cond_key == key:
                raise SpecError(None, key, "a parameter cannot be conditioned on itself")
            if not isinstance(allowed, tuple) or not allowed:
                raise SpecError(None, key, f"`when: {{{cond_key}: [...]}}` needs a non-empty "
                                f"list of allowed values, but got {allowed!r}")

    def _check_choices(self) -> None:
        if not self.choices:
            raise SpecError(None, self.key, "`choice` needs at least one value, but got []")
        encoded = [encode_choice(thaw_value(c)) for c in self.choices]
        for i, a in enumerate(encoded):
            for b in encoded[:i]:
                if a == b and type(a) is type(b):
                    raise SpecError(None, self.key, f"choices must be distinct, but {a!r} "
                                    f"appears twice in {self.real_choices()!r}")
                if a == b:
                    raise SpecError(None, self.key, f"choices {b!r} and {a!r} are equal in "
                                    "Optuna (True == 1 == 1.0); keep one of them")

    def _check_range(self) -> None:
        key, low, high, step = self.key, self.low, self.high, self.step
        if not (_is_number(low) and _is_number(high)):
            raise SpecError(None, key, f"{{{self.kind}: [low, high]}} needs two numbers, but got "
                            f"low={low!r}, high={high!r}")
        if not (math.isfinite(low) and math.isfinite(high)):
            raise SpecError(None, key, f"low and high must be finite, but got low={low}, "
                            f"high={high}")
        if self.kind == "int" and not (isinstance(low, int) and isinstance(high, int)):
            raise SpecError(None, key, f"{{int: [low, high]}} needs integers, but got "
                            f"low={low!r}, high={high!r}")
        if self.kind == "int" and max(abs(low), abs(high)) > MAX_INT:
            raise SpecError(None, key, f"low and high must be at most {MAX_INT} in size, but "
                            f"got low={low}, high={high}")
        if low > high:
            raise SpecError(None, key, f"low <= high must hold, but got low={low}, high={high}")
        is_log = self.log or self.kind == "loguniform"
        if self.kind == "int" and self.log and low < 1:
            raise SpecError(None, key, f"low >= 1 must hold for `log: true`, but got low={low}")
        if self.kind == "loguniform" and low <= 0:
            raise SpecError(None, key, f"low > 0 must hold for loguniform, but got low={low}")
        if self.log and self.kind not in ("int",):
            raise SpecError(None, key, f"`log` applies to int only; use loguniform instead of "
                            f"{self.kind} with log")
        if step is None:
            return
        if not _is_number(step) or step <= 0:
            raise SpecError(None, key, f"step > 0 must hold, but got step={step!r}")
        if is_log:
            raise SpecError(None, key, f"step cannot be combined with a log scale, but got "
                            f"step={step} with {self.kind}{' log: true' if self.log else ''}")
        if self.kind == "int" and not isinstance(step, int):
            raise SpecError(None, key, f"an int step must be an integer, but got step={step!r}")
        span = (high - low) / step
        if abs(span - round(span)) > 1e-9 * max(1.0, abs(span)):
            raise SpecError(None, key, f"high - low must be a multiple of step, but got "
                            f"low={low}, high={high}, step={step}")

    # --- views -----------------------------------------------------------------------------
    @property
    def is_log(self) -> bool:
        return self.log or self.kind == "loguniform"

    @property
    def is_finite(self) -> bool:
        """True when the parameter takes finitely many values (choice, int, stepped uniform)."""
        return self.kind in ("choice", "int") or self.step is not None

    def real_choices(self) -> list[Any]:
        return [thaw_value(c) for c in self.choices]

    def optuna_choices(self) -> list[Any]:
        return [encode_choice(c) for c in self.real_choices()]

    def condition_dict(self) -> dict[str, list[Any]]:
        return {k: [thaw_value(v) for v in allowed] for k, allowed in self.condition}

    def grid_values(self) -> list[Any]:
        """Every value the parameter can take (Optuna-native form), for the grid sampler."""
        if self.kind == "choice":
            return self.optuna_choices()
        if not self.is_finite:
            raise SpecError(None, self.key, f"sampler: grid needs a finite search space, but "
                            f"{self.kind} [{self.low}, {self.high}] is continuous; give it a step "
                            "(uniform only), or use an int or choice")
        step = self.step or 1
        count = int(round((self.high - self.low) / step)) + 1
        if count > 10_000:
            raise SpecError(None, self.key, f"sampler: grid would enumerate {count} values of "
                            f"[{self.low}, {self.high}]; at most 10000 per parameter (raise step)")
        if self.kind == "int":
            return [int(self.low + i * step) for i in range(count)]
        return [float(self.low + i * step) for i in range(count)]

    def decode(self, value: Any) -> Any:
        """Optuna-native value -> the value the trainable receives (lists for list choices)."""
        if self.kind != "choice":
            return value
        for real, native in zip(self.real_choices(), self.optuna_choices()):
            if native == value and type(native) is type(value):
                return real
        for real, native in zip(self.real_choices(), self.optuna_choices()):
            if native == value:
                return real
        return value

    def to_yaml(self) -> dict[str, Any]:
        """The sweep-file form of this parameter (what as_dict writes back)."""
        if self.kind == "choice":
            out: dict[str, Any] = {"choice": self.real_choices()}
        else:
            out = {self.kind: [self.low, self.high]}
            if self.step is not None:
                out["step"] = self.step
            if self.log:
                out["log"] = True
        if self.condition:
            out["when"] = self.condition_dict()
        return out


def parse_param(key: str, raw: Any) -> ParamSpec:
    """A ParamSpec from its YAML form; SpecError (key set, no file) when malformed."""
    example = "{loguniform: [1.0e-5, 1.0e-3]}, {int: [1, 6]} or {choice: [a, b]}"
    if not isinstance(raw, Mapping):
        raise SpecError(None, key, f"a search parameter is a mapping such as {example}, "
                        f"but got {raw!r}")
    kinds = [k for k in raw if k in KINDS]
    unknown = [k for k in raw if k not in KINDS and k not in _OPTIONS]
    if unknown:
        raise SpecError(None, key, f"unknown entry {unknown[0]!r} in a search parameter; "
                        f"expected one of {', '.join(KINDS)} plus optional step, log, when")
    if len(kinds) != 1:
        raise SpecError(None, key, f"a search parameter names exactly one distribution of "
                        f"{', '.join(KINDS)}, but got {kinds or 'none'}; e.g. {example}")
    kind = kinds[0]
    args = raw[kind]
    condition = _parse_condition(key, raw.get("when"))
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(None, key, f"log must be true or false, but got {log!r}")
    if kind == "choice":
        if not isinstance(args, list):
            raise SpecError(None, key, f"choice takes a list of values, e.g. {{choice: [a, b]}}, "
                            f"but got {args!r}")
        if "step" in raw or "log" in raw:
            raise SpecError(None, key, "step and log apply to numeric distributions, not choice")
        return ParamSpec(key, kind, choices=tuple(freeze_value(c) for c in args),
                         condition=condition)
    if not isinstance(args, list) or len(args) != 2:
        raise SpecError(None, key, f"{kind} takes [low, high], e.g. {{{kind}: [1, 6]}}, but got "
                        f"{args!r}")
    return ParamSpec(key, kind, low=args[0], high=args[1], step=raw.get("step"), log=log,
                     condition=condition)


def _parse_condition(key: str, when: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if when is None:
        return ()
    if not isinstance(when, Mapping) or not when:
        raise SpecError(None, key, f"`when` is a mapping {{dotted.key: [allowed values]}}, e.g. "
                        f"{{model.name: [sincnet]}}, but got {when!r}")
    out = []
    for cond_key, allowed in when.items():
        values = allowed if isinstance(allowed, list) else [allowed]
        out.append((cond_key, tuple(freeze_value(v) for v in values)))
    return tuple(out)
