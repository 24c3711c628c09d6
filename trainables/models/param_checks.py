"""Hyper-parameter checks shared by the model families.

Every check raises ConfigError(key, message) with the dotted key (`model.pooling`) and a message
that states the rule and the offending value, so `sweep.py` can print it as-is before training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trainables.errors import ConfigError


def check_choice(key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        name = key.rsplit(".", 1)[-1]
        raise ConfigError(key, f"{name} must be one of {list(choices)}, but got {value!r}")
    return value


# The largest integer hyper-parameter (a width, a size, a rate) and the deepest stack (layers,
# blocks) a family takes: a huge value would hang building the model (orchestrator/sweepfile/
# constraints.py builds every drawable end of a searched range on the meta device).
MAX_WIDTH = 2**16
MAX_DEPTH = 128


def check_int(key: str, value: Any, minimum: int = 1, maximum: int = MAX_WIDTH) -> int:
    # bool is an int subclass: `layers: true` in a YAML file is a mistake, not 1.
    name = key.rsplit(".", 1)[-1]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, f"{name} must be an integer >= {minimum}, but got {value!r}")
    if value > maximum:
        raise ConfigError(key, f"{name} must be an integer <= {maximum}, but got {value!r}")
    return value


def check_float(key: str, value: Any, low: float, high: float) -> float:
    """`low <= value < high` (dropout-like probabilities use [0, 1))."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value < high:
        name = key.rsplit(".", 1)[-1]
        raise ConfigError(key, f"{name} must be a number in [{low}, {high}), but got {value!r}")
    return float(value)


def check_int_list(
    key: str, value: Any, minimum: int = 1, length: int | None = None, allow_empty: bool = False
) -> list[int]:
    name = key.rsplit(".", 1)[-1]
    ok = isinstance(value, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) and minimum <= v <= MAX_WIDTH
        for v in value
    )
    if not ok or (not allow_empty and len(value) == 0):
        raise ConfigError(
            key, f"{name} must be a list of integers >= {minimum}, but got {value!r}"
        )
    if length is not None and len(value) != length:
        raise ConfigError(
            key, f"{name} must have {length} entries, but got {len(value)}: {value!r}"
        )
    return list(value)


@dataclass(frozen=True)
class Constraint:
    """A constructor rule over several hyper-parameters of one family, declared beside the
    family (its class attribute `CONSTRAINTS`) so that the sweep-file loader can check every
    combination a search may draw before anything trains (orchestrator/sweepfile/constraints.py).
    `holds(**{key: value for key in keys})` is True when the combination is valid; the
    constructor keeps raising its own ConfigError for the same rule."""

    keys: tuple[str, ...]  # constructor keyword names, e.g. ("d_model", "heads")
    rule: str  # as a reader writes it, e.g. "d_model % heads == 0"
    holds: Callable[..., bool]
