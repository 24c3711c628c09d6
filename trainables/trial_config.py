"""The config of one trial, typed and frozen: `TrialConfig`, built ONCE from the dict Ray Tune
hands the trial (trainables/trainable.py) or the driver plans (orchestrator/planner.py), and
passed down as is (`as_trial_config` returns a TrialConfig unchanged).

Its `data` and `train` sections are frozen dataclasses generated from the key declarations
(trainables/config.py: DATA, TRAIN), one field per declared key: `config.train.batch_size`,
`config.data.folds`. Building one fills the declared defaults and checks every value against its
`Key`: known name, type, choices, null, finite (a ConfigError names the key: `train.amp`, or an
unknown `train.batch`); the bounds (`ge=`, ...) stay the sweep file's check (sweepfile/
sections.py) and prepare_data's, as tests switch rules off with values past them
(collapse_margin -1). Assigning raises, an undeclared attribute raises, and the values are
frozen (lists -> tuples, mappings -> FrozenDict; `as_dict()` thaws). A section, and the whole
config, also read as a Mapping (`train["lr"]`, `config["train"]`), so the helpers that take a
train section (optim.py, collapse.py) take a plain dict in tests too. `model` stays the
family's constructor kwargs, `distill` and `runtime` (the driver's additions: metric, mode,
memory plan, racing) stay mappings, all frozen.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from trainables.config import DATA, TRAIN, Key
from trainables.errors import ConfigError
from trainables.frozen import FrozenDict, freeze, thaw

# the top-level keys of a trial config: the declared sections, the model's kwargs, the distill
# section (only when distilling) and the driver's runtime additions
TRIAL_KEYS = ("data", "model", "train", "distill", "runtime")


class Section(Mapping[str, Any]):
    """Base of the generated section types (`section_type`): a frozen dataclass with one field
    per declared key, read also as a Mapping of those keys."""

    __slots__ = ()
    NAME: ClassVar[str]  # "data" | "train": the prefix of the dotted key in errors
    KEYS: ClassVar[Mapping[str, Key]]  # the declaration the fields come from

    @classmethod
    def of(cls, given: Mapping[str, Any] | None) -> Section:
        """The section of `given` (None: {}) with the declared defaults filled in, each value
        checked against its Key (not its bounds: see the module docstring); ConfigError naming
        the first unknown or invalid key."""
        given = {} if given is None else given
        if not isinstance(given, Mapping):
            raise ConfigError(cls.NAME, f"the {cls.NAME} section must be a mapping, but got "
                                        f"{given!r}")
        unknown = [name for name in given if name not in cls.KEYS]
        if unknown:
            raise ConfigError(f"{cls.NAME}.{unknown[0]}",
                              f"{cls.NAME} has no key {unknown[0]!r}; valid: "
                              f"{', '.join(cls.KEYS)}")
        values = {name: given[name] if name in given else key.default
                  for name, key in cls.KEYS.items()}
        return cls(**cls._checked(values))

    @classmethod
    def _checked(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        for name, value in values.items():
            problem = cls.KEYS[name].violation(name, value, bounded=False)
            if problem:
                raise ConfigError(f"{cls.NAME}.{name}", problem)
        return {name: freeze(value) for name, value in values.items()}

    def replace(self, **values: Any) -> Section:
        """A copy with these keys set, each checked (the planned `micro_batch`, ...)."""
        unknown = [name for name in values if name not in self.KEYS]
        if unknown:
            raise ConfigError(f"{self.NAME}.{unknown[0]}",
                              f"{self.NAME} has no key {unknown[0]!r}")
        return dataclasses.replace(self, **self._checked(values))

    def as_dict(self) -> dict[str, Any]:
        """A plain, mutable copy (lists and dicts), as the sweep file's section reads."""
        return {name: thaw(getattr(self, name)) for name in self.KEYS}

    def __getitem__(self, name: str) -> Any:
        if name not in self.KEYS:
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.KEYS)

    def __len__(self) -> int:
        return len(self.KEYS)

    def __getattr__(self, name: str) -> Any:  # only reached for an undeclared name
        raise AttributeError(f"{self.NAME} has no key {name!r}; valid: {', '.join(self.KEYS)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={self[k]!r}' for k in self.KEYS)})"


_FROZEN_TYPES = {list: tuple[Any, ...], dict: Mapping[str, Any]}


def _annotation(key: Key) -> Any:
    """The field type of a declared key: its choices' or declared types (lists held as tuples,
    mappings as FrozenDict), `| str` for words, `| None` where null is accepted."""
    if key.choices is not None:
        types = list(dict.fromkeys(type(c) for c in key.choices))
    elif key.registry is not None:
        types = [str]
    else:
        types = list(key.types or (type(key.default),))
    if key.words:
        types.append(str)
    if key.accepts_none():
        types.append(type(None))
    return functools.reduce(operator.or_, [_FROZEN_TYPES.get(t, t) for t in types])


def section_type(name: str, keys: Mapping[str, Key]) -> type[Section]:
    """A frozen dataclass with one typed field per key of `keys` (frozen: assigning any name
    raises FrozenInstanceError)."""
    clash = [key for key in keys if hasattr(Section, key)]
    if clash:  # a field would hide the method of that name (keys, get, replace, ...)
        raise ValueError(f"{name}.{clash[0]}: a key may not be named like a Section method")
    type_name = f"{name.capitalize()}Section"
    cls = dataclasses.make_dataclass(
        type_name, [(key, _annotation(declared)) for key, declared in keys.items()],
        bases=(Section,), frozen=True, eq=False,  # eq: Mapping's (== a dict)
        namespace={"NAME": name, "KEYS": keys, "__module__": __name__},
    )
    cls.__qualname__ = type_name  # pickled by name: trainables.trial_config.<type_name>
    return cls


DataSection = section_type("data", DATA)
TrainSection = section_type("train", TRAIN)


def _captured(key: str) -> bool:
    """Whether a top-level key of a Tune trial's config is one of the sampled values the searcher
    keeps beside the sections (`train.lr`, and `optuna:train.lr` for the store: orchestrator/
    search.py TrialSpace), not a section: read from the sections, never from these."""
    return "." in key or ":" in key


@dataclass(frozen=True)
class TrialConfig(Mapping[str, Any]):
    """One trial's config (see the module docstring); `from_dict` builds it. It reads as the
    nested mapping it was built from too (`config["train"]["lr"]`; distill only when set)."""

    data: Section  # a DataSection
    train: Section  # a TrainSection
    model: Mapping[str, Any]  # the family's constructor kwargs, "name" included
    runtime: Mapping[str, Any]  # the driver's: metric, mode, memory_budget, planned peak, racing
    distill: Mapping[str, Any] | None = None  # the distill section (teacher resolved), if any

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> TrialConfig:
        """Build the typed config from a plain one ({"data", "model", "train", ...}; absent
        sections take their defaults): the one place a trial's config is filled with defaults."""
        unknown = [key for key in config if key not in TRIAL_KEYS and not _captured(key)]
        if unknown:
            raise ConfigError(unknown[0], f"a trial config has no section {unknown[0]!r}; "
                                          f"valid: {', '.join(TRIAL_KEYS)}")
        for key in ("model", "runtime", "distill"):
            value = config.get(key)
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(key, f"the {key} section must be a mapping, but got {value!r}")
        distill = config.get("distill")
        return cls(data=DataSection.of(config.get("data")),
                   train=TrainSection.of(config.get("train")),
                   model=freeze(config.get("model") or {}),
                   runtime=freeze(config.get("runtime") or {}),
                   distill=freeze(distill) if distill else None)

    def updated(self, sections: Mapping[str, Mapping[str, Any]]) -> TrialConfig:
        """A copy with the keys of `sections` set: the memory plan's {"train": {"micro_batch"},
        "runtime": {...}} (orchestrator/planner.py: TrialPlanner returns the same shape)."""
        unknown = [key for key in sections if key not in ("train", "runtime")]
        if unknown:
            raise ConfigError(unknown[0], "only train and runtime keys are planned")
        return dataclasses.replace(
            self, train=self.train.replace(**sections.get("train", {})),
            runtime=FrozenDict({**self.runtime, **freeze(sections.get("runtime", {}))}))

    def as_dict(self) -> dict[str, Any]:
        """The plain, mutable config (every default filled in); distill only when set."""
        out = {"data": self.data.as_dict(), "model": thaw(self.model),
               "train": self.train.as_dict(), "runtime": thaw(self.runtime)}
        if self.distill is not None:
            out["distill"] = thaw(self.distill)
        return out


    def __getitem__(self, name: str) -> Any:
        if name not in self._present():
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._present())

    def __len__(self) -> int:
        return len(self._present())

    def _present(self) -> tuple[str, ...]:
        return tuple(k for k in TRIAL_KEYS if k != "distill" or self.distill is not None)


def as_trial_config(config: TrialConfig | Mapping[str, Any]) -> TrialConfig:
    """`config` itself when it is already typed, else `TrialConfig.from_dict(config)`: the entry
    points that also take a plain dict (LockstepTrainer, the memory plan) call this once."""
    return config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
