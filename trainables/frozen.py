"""Frozen values: `freeze` turns mappings into FrozenDict and lists into tuples, all the way
down; `thaw` gives back a plain, mutable copy (dicts and lists). The sweep file's SweepSpec
(orchestrator/sweepfile/sweep_spec.py) and the trial's TrialConfig (trainables/trial_config.py)
hold their values frozen."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


class FrozenDict(dict):
    """A dict that refuses changes (values frozen too: lists -> tuples); picklable."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("this mapping is frozen; thaw() gives a mutable copy")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __reduce__(self) -> tuple[type, tuple[dict[str, Any]]]:
        return (FrozenDict, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: kv[0])))


def freeze(value: Any) -> Any:
    """Mappings -> FrozenDict, lists and tuples -> tuples (recursively); anything else as is."""
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, mutable copy: mappings -> dict, tuples and lists -> list (recursively)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return copy.deepcopy(value)
