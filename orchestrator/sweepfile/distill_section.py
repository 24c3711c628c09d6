"""Validation of the `distill` section of a sweep file (and of searched `distill.*` keys).

    distill:
      teacher: {results: results/transformer, pick: best}   # or pick: <teacher trial id>
      temperature: 2.0
      kd_weight: 1.0
      mse_weight: 1.0
      mse_layers: 2          # hidden layers matched, from the INPUT side: the first N (0-4)
                             # or explicit indices, e.g. [0, 2] (-1 = the last, the head's)
      experiment: null       # kd | 1mse | 2mse | 3mse | 4mse | nokd_4mse (overrides the two above)

Defaults and the experiment table live in trainables (config.DISTILL_DEFAULTS,
distill.EXPERIMENTS);
the teacher itself is resolved in the driver by orchestrator/teacher.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from orchestrator.sweepfile import context as sc
from orchestrator.sweepfile.context import Ctx, Expect, check_value, unknown_key
from trainables.config import DISTILL_DEFAULTS, TEACHER_DEFAULTS

SEARCHABLE = ("temperature", "kd_weight", "mse_weight", "mse_layers", "experiment")


# trainables.distill_loss imports torch: read its tables on first use, so that a sweep file
# without a
# distill section (or with a typo found earlier) is checked without importing torch.
@cache
def _tables() -> tuple[dict[str, Expect], dict[str, tuple[float, bool, float | None]]]:
    from trainables.distill_loss import EXPERIMENTS, MAX_MSE_LAYERS

    expect = {
        "temperature": Expect((float,)),
        "kd_weight": Expect((float,)),
        "mse_weight": Expect((float,)),
        "mse_layers": Expect((int,)),  # searched as an int; a fixed list is checked apart
        "experiment": Expect((str,), True, values=tuple(EXPERIMENTS)),
    }
    # key -> (low, low inclusive, high): the closed/open ranges of the numeric keys
    ranges = {
        "temperature": (0, False, None),
        "kd_weight": (0, True, None),
        "mse_weight": (0, True, None),
        "mse_layers": (0, True, MAX_MSE_LAYERS),
    }
    return expect, ranges


def expect(key: str) -> Expect:
    """What the searchable distill key `key` accepts."""
    return _tables()[0][key]


def check_range(ctx: Ctx, path: tuple[str, ...], key: str, value: Any) -> None:
    ranges = _tables()[1]
    if key == "mse_layers" and isinstance(value, list | tuple):  # explicit indices
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in value) or (
                len(set(value)) != len(value)):
            raise ctx.err(path, f"mse_layers is an integer N (the first N hiddens) or a list "
                          f"of distinct hidden indices counted from the input side, e.g. "
                          f"[0, 2], but got {value!r}")
        return
    if key not in ranges or value is None or isinstance(value, bool):
        return
    low, inclusive, high = ranges[key]
    if (value < low) if inclusive else (value <= low):
        raise ctx.err(path, f"{key} {'>=' if inclusive else '>'} {low} must hold, but got "
                      f"{value}")
    if high is not None and value > high:
        raise ctx.err(path, f"{key} <= {high} must hold, but got {value}")


def check_entry(ctx: Ctx, path: tuple[str, ...], key: str, value: Any) -> Any:
    """One searchable distill value (also each choice of a searched `distill.<key>`)."""
    if key == "mse_layers" and isinstance(value, list | tuple):  # indices: check_range
        check_range(ctx, path, key, value)
        return value
    value = check_value(ctx, path, value, expect(key))
    check_range(ctx, path, key, value)
    return value


def _teacher(ctx: Ctx, value: Any) -> dict[str, Any]:
    path = ("distill", "teacher")
    if value is None:
        raise ctx.err(path, "distill needs a teacher: {results: <teacher sweep dir>, pick: best}")
    if not isinstance(value, Mapping):
        raise ctx.err(path, f"teacher is a mapping {{results: results/transformer, pick: best}}, "
                      f"but got {sc.describe(value)}")
    for key in value:
        if key not in TEACHER_KEYS:
            raise unknown_key(ctx, path, str(key), TEACHER_KEYS, "distill.teacher")
    results = value.get("results")
    if not isinstance(results, str) or not results.strip():
        raise ctx.err((*path, "results"), f"teacher.results is the teacher sweep's results "
                      f"directory (or a sweep name under the results root), but got "
                      f"{sc.describe(results)}")
    pick = value.get("pick", TEACHER_DEFAULTS["pick"])
    if not isinstance(pick, str) or not pick.strip():
        raise ctx.err((*path, "pick"), f"teacher.pick is `best` or a trial id of the teacher "
                      f"sweep, but got {sc.describe(pick)}")
    return {"results": results, "pick": pick}


TEACHER_KEYS = tuple(TEACHER_DEFAULTS)


def distill(ctx: Ctx, raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """The checked distill section with defaults, or None when the sweep does not distil."""
    given = raw.get("distill")
    if given is None:
        return None
    if not isinstance(given, Mapping):
        raise ctx.err(("distill",), f"distill is a mapping (teacher, temperature, kd_weight, "
                      f"mse_weight, mse_layers, experiment), but got {sc.describe(given)}")
    for key in given:
        if not isinstance(key, str) or key not in DISTILL_DEFAULTS:
            raise unknown_key(ctx, ("distill",), str(key), DISTILL_DEFAULTS, "the distill section")
    out = dict(DISTILL_DEFAULTS)
    out["teacher"] = _teacher(ctx, given.get("teacher"))
    for key in SEARCHABLE:
        if key in given:
            out[key] = check_entry(ctx, ("distill", key), key, given[key])
    return out
