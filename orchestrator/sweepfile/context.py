"""Building blocks of sweep-file validation: where an error is (Ctx), type checks against the
defaults, "did you mean" suggestions, and what the trainables registries accept (model families
and their constructor signatures, corpora, feature kinds and widths): read from trainables/, never
spelled here.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any

from orchestrator.sweepfile.spec_error import SpecError
from orchestrator.sweepfile.yaml_loader import KeyPath, LoadedYaml
from trainables.config import number_problem

_NOT_MODEL_KEYS = ("self", "n_classes", "n_features")


@dataclass
class Ctx:
    """Where the values being checked came from: the file, its line map, and --set overrides."""

    file: str
    loaded: LoadedYaml = field(default_factory=lambda: LoadedYaml(None, {}))
    via: dict[KeyPath, str] = field(default_factory=dict)

    def err(self, path: Sequence[str], message: str) -> SpecError:
        path = tuple(path)
        for n in range(len(path), 0, -1):
            if path[:n] in self.via:
                return SpecError(self.file, ".".join(path), message, via=self.via[path[:n]])
        for set_path, via in self.via.items():  # a --set that created this key's parent
            if path and set_path[: len(path)] == path and path not in self.loaded.lines:
                return SpecError(self.file, ".".join(path), message, via=via)
        return SpecError(self.file, ".".join(path) or None, message, self.loaded.line_of(path))

    def relocate(self, path: Sequence[str], exc: SpecError) -> SpecError:
        """`exc` (raised without a file, e.g. by ParamSpec) located at `path` in this file."""
        err = self.err(path, exc.message)
        if exc.key and exc.key != err.key and not (err.key or "").endswith(exc.key):
            return SpecError(err.file, f"{err.key}.{exc.key}", exc.message, err.line, err.via)
        return err


def suggest(word: str, options: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest option, or ''."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key(ctx: Ctx, path: KeyPath, key: str, valid: Iterable[str], what: str) -> SpecError:
    valid = sorted(valid)
    return ctx.err((*path, key), f"unknown key {key!r} in {what}{suggest(key, valid)}; valid "
                   f"keys: {', '.join(valid)}")


def describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


# --- types -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expect:
    """What a key accepts: types (None = anything), None allowed, a closed set of values."""

    types: tuple[type, ...] | None
    nullable: bool = False
    values: tuple[Any, ...] | None = None
    item: type | None = None  # element type of a list

    def name(self) -> str:
        if self.values is not None:
            return "one of " + ", ".join(map(repr, self.values))
        names = "anything" if self.types is None else " or ".join(
            "number" if t is float else ("list" if t is list else t.__name__) for t in self.types
        )
        if self.item is not None:
            names = f"a list of {self.item.__name__}"
        return f"{names} or null" if self.nullable else names


def expect_from_default(default: Any, hint: Any = None) -> Expect:
    """The expectation for a key from its default value (and its type hint, when there is one)."""
    from_hint = expect_from_hint(hint) if hint is not None else None
    if default is None:
        if from_hint is not None:
            return Expect(from_hint.types, True, from_hint.values, from_hint.item)
        return Expect(None, True)
    if from_hint is not None and from_hint.values is not None:
        return from_hint
    if isinstance(default, bool):
        return Expect((bool,))
    if isinstance(default, int):
        return Expect((int,))
    if isinstance(default, float):
        return Expect((float,))
    if isinstance(default, str):
        return Expect((str,))
    if isinstance(default, list | tuple):
        items = {type(v) for v in default}
        item = items.pop() if len(items) == 1 else None
        return Expect((list,), item=item if item in (int, float, str) else None)
    if isinstance(default, Mapping):
        return Expect((dict,))
    return Expect(None)


def expect_from_hint(hint: Any) -> Expect | None:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return Expect(None, values=typing.get_args(hint))
    if origin in (typing.Union, UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(hint))
        if len(args) == 1:
            inner = expect_from_hint(args[0])
            if inner is not None:
                return Expect(inner.types, nullable, inner.values, inner.item)
        return Expect(None, nullable)
    simple = {bool: (bool,), int: (int,), float: (float,), str: (str,)}
    if hint in simple:
        return Expect(simple[hint])
    if origin in (list, tuple) or (inspect.isclass(origin) and issubclass(origin, Sequence)):
        return Expect((list,))
    return None


def _type_ok(value: Any, t: type) -> bool:
    if t is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t is dict:
        return isinstance(value, Mapping)
    if t is list:
        return isinstance(value, list | tuple)
    return isinstance(value, t)


def check_finite(ctx: Ctx, path: Sequence[str], value: Any) -> None:
    """A number is finite and of sane size (trainables/config.py: number_problem)."""
    problem = number_problem(path[-1], value)
    if problem:
        raise ctx.err(path, problem)


def check_value(ctx: Ctx, path: Sequence[str], value: Any, expect: Expect) -> Any:
    """`value` if it meets `expect` (ints become floats where a float is expected)."""
    if value is None:
        if expect.nullable:
            return None
        raise ctx.err(path, f"expected {expect.name()}, but got null")
    if expect.values is not None:
        if not any(
            value == v and isinstance(value, bool) == isinstance(v, bool) for v in expect.values
        ):
            raise ctx.err(path, f"expected {expect.name()}, but got {value!r}"
                          f"{suggest(value, map(str, expect.values))}")
        return value
    if expect.types is None:
        return value
    if not any(_type_ok(value, t) for t in expect.types):
        raise ctx.err(path, f"expected {expect.name()}, but got {describe(value)}")
    check_finite(ctx, path, value)
    if expect.types == (float,):
        return float(value)
    if expect.item is not None:
        for i, v in enumerate(value):
            if not _type_ok(v, expect.item):
                raise ctx.err((*path, str(i)), f"expected {expect.name()}, but item {i} is "
                              f"{describe(v)}")
    return value


# --- registries (imported on use: loading a spec must not pull in torch before it needs it) --
def model_families() -> dict[str, type]:
    from trainables.models import MODELS

    return dict(MODELS)


def corpora() -> tuple[str, ...]:
    from trainables.data import CORPORA

    return tuple(CORPORA)


def corpus_class(name: str) -> type:
    """The Corpus class registered as `name` (its needs_root and the like)."""
    from trainables.data import CORPORA

    return CORPORA[name]


def feature_kinds() -> tuple[str, ...]:
    from trainables.data import FEATURES

    return tuple(FEATURES)


def feature_width(data: Mapping[str, Any]) -> int:
    """n_features of one time step for the data section (trainables/data/widths.py)."""
    from trainables.data.widths import feature_width as width

    return width(data)


@dataclass(frozen=True)
class ModelSignature:
    """The keyword parameters of a family's constructor, minus n_classes/n_features."""

    name: str
    defaults: dict[str, Any]  # key -> default (inspect.Parameter.empty when required)
    hints: dict[str, Any]
    inputs: tuple[str, ...]

    def required(self) -> list[str]:
        return [k for k, v in self.defaults.items() if v is inspect.Parameter.empty]

    def expect(self, key: str) -> Expect:
        default = self.defaults.get(key)
        if default is inspect.Parameter.empty:
            default = None
        return expect_from_default(default, self.hints.get(key))


def model_signature(name: str) -> ModelSignature:
    cls = model_families()[name]
    sig = inspect.signature(cls)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to the defaults
        hints = {}
    defaults = {
        p.name: p.default
        for p in sig.parameters.values()
        if p.name not in _NOT_MODEL_KEYS
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return ModelSignature(name, defaults, hints, tuple(getattr(cls, "INPUTS", ())))


def data_root_exists(root: str) -> bool:
    return Path(root).expanduser().exists()
