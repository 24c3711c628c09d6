"""Validation of the sections of a sweep file: data, model, train, search (scalars), resources.

Each function takes the raw mapping of one section and returns it checked with the defaults
filled in, or raises SpecError at the offending key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from orchestrator.sweepfile import context as sc
from orchestrator.sweepfile.context import Ctx, Expect, check_value, unknown_key
from orchestrator.sweepfile.spec_error import SpecError
from trainables.config import (
    DATA_DEFAULTS,
    MAX_SECONDS,
    NORMALIZE_KINDS,
    TRAIN_DEFAULTS,
    VAL_PROTOCOLS,
)
from trainables.names import SELECTABLE_METRICS, VAL_LOSS, VAL_UAR

# Closed sets and lower bounds of data/train values (config.py spells the keys and defaults).
ENUMS: dict[str, tuple[str, ...]] = {
    "data.val": VAL_PROTOCOLS,
    "data.normalize": NORMALIZE_KINDS,
    "data.folds": ("by_session", "by_speaker", "official"),
    "train.optimizer": ("adamw", "sgd"),
    "train.schedule": ("cosine", "constant"),
    "train.amp": ("auto", "on", "off"),
    "train.device": ("auto", "cpu", "cuda"),
}
# key -> (bound, inclusive): value >= bound (inclusive) or value > bound.
MINIMA: dict[str, tuple[float, bool]] = {
    "data.classes": (2, True), "data.n_mels": (1, True), "data.n_mfcc": (1, True),
    "data.downsample": (1, True), "data.max_seconds": (0, False), "data.n_folds": (2, True),
    "data.use_folds": (1, True), "data.synthetic_utterances": (1, True),
    "train.epochs": (1, True), "train.batch_size": (1, True), "train.micro_batch": (1, True),
    "train.norm_batch": (2, True),
    "train.lr": (0, False), "train.weight_decay": (0, True), "train.momentum": (0, True),
    "train.warmup_epochs": (0, True), "train.grad_clip": (0, True),
    "train.collapse_patience": (0, True),  # 0 = off
    "train.collapse_margin": (0, True), "train.collapse_top_share": (0, False),
    "data.val_fraction": (0, False),
}
# key -> inclusive upper bound
MAXIMA: dict[str, float] = {"data.max_seconds": MAX_SECONDS, "train.collapse_margin": 1.0,
                            "train.collapse_top_share": 1.0, "data.val_fraction": 1.0}
# Types of keys whose default is None (anything else with a None default accepts any value).
NULLABLE: dict[str, Expect] = {
    "data.root": Expect((str,), True),
    "data.use_folds": Expect((int,), True),
    "data.corpora": Expect((list,), True),
    "train.micro_batch": Expect((int,), True),
}
CORPORA_WITH_ROOT = ("iemocap", "meld", "manifest")
SEARCH_KEYS = ("metric", "mode", "sampler", "trials", "seed", "max_concurrent", "scheduler",
               "params", "baseline", "tuner_trials")
# Trials per Ray Tune Tuner (runner.run_sweep): Tune's driver state grows with every trial of one
# Tuner (bench/soak.py: ~250 KiB/trial and rising time per trial), so a long sweep runs as
# consecutive Tuners, each resumed from the store.
TUNER_TRIALS_DEFAULT = 200
SCHEDULER_KEYS = ("type", "grace_period", "reduction_factor", "max_t")
RESOURCE_KEYS = ("cpus_per_trial", "gpus_per_trial", "gpu_memory_fraction", "memory_budget",
                 "max_failures")
SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc")
SCHEDULERS = ("asha", "none")
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
SIZE_UNITS = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"


def section(ctx: Ctx, raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ctx.err((name,), f"the {name} section must be a mapping of keys to values, but got "
                      f"{sc.describe(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ctx.err((name, str(key)), f"keys must be strings, but got {sc.describe(key)}")
    return dict(value)


def expect_for(section_name: str, key: str) -> Expect:
    dotted = f"{section_name}.{key}"
    if dotted == "data.corpus":
        return Expect((str,), values=sc.corpora())
    if dotted == "data.features":
        return Expect((str,), values=sc.feature_kinds())
    if dotted == "data.classes":  # IEMOCAP: 4 or 6; a manifest: the list of class names
        return Expect((int, list))
    if dotted in ENUMS:
        return Expect((str,), values=ENUMS[dotted])
    if dotted in NULLABLE:
        return NULLABLE[dotted]
    defaults = DATA_DEFAULTS if section_name == "data" else TRAIN_DEFAULTS
    return sc.expect_from_default(defaults[key])


def check_minimum(ctx: Ctx, path: tuple[str, ...], dotted: str, value: Any) -> None:
    """The bounds of MINIMA and MAXIMA (the name is older than MAXIMA)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    name = dotted.split(".")[-1]
    if dotted in MINIMA:
        bound, inclusive = MINIMA[dotted]
        if (value < bound) if inclusive else (value <= bound):
            op = ">=" if inclusive else ">"
            raise ctx.err(path, f"{name} {op} {bound} must hold, but got {value}")
    if dotted in MAXIMA and value > MAXIMA[dotted]:
        raise ctx.err(path, f"{name} <= {MAXIMA[dotted]:g} must hold, but got {value}")


def check_entry(ctx: Ctx, path: tuple[str, ...], section_name: str, key: str, value: Any) -> Any:
    """One data/train value (also each choice of a searched data/train key)."""
    value = check_value(ctx, path, value, expect_for(section_name, key))
    check_minimum(ctx, path, f"{section_name}.{key}", value)
    if f"{section_name}.{key}" == "train.seeds":
        if not value:
            raise ctx.err(path, "seeds needs at least one seed, e.g. [0], but got []")
        check_value(ctx, path, value, Expect((list,), item=int))
    return value


def check_known_keys(ctx: Ctx, raw: dict[str, Any], name: str) -> None:
    """Every key of the data or train section is one of its defaults' keys (no registry
    needed: a misspelt key is reported before the corpus/feature registries are imported)."""
    defaults = DATA_DEFAULTS if name == "data" else TRAIN_DEFAULTS
    for key in section(ctx, raw, name):
        if key not in defaults:
            raise unknown_key(ctx, (name,), key, defaults, f"the {name} section")


def data_or_train(ctx: Ctx, raw: dict[str, Any], name: str) -> dict[str, Any]:
    check_known_keys(ctx, raw, name)
    out = dict(DATA_DEFAULTS if name == "data" else TRAIN_DEFAULTS)
    for key, value in section(ctx, raw, name).items():
        out[key] = check_entry(ctx, (name, key), name, key, value)
    if name == "train" and out["reweight"] is True and out["rebalance"] is True:
        # either one corrects the class imbalance; both would correct it twice
        raise ctx.err((name, "rebalance"), "train.reweight and train.rebalance are both true: "
                      "each corrects the class imbalance on its own (class-weighted loss / "
                      "class-balanced sampling), together they correct it twice; set one")
    return out


def check_corpora(ctx: Ctx, data: dict[str, Any]) -> None:
    """corpus: multi -> data.corpora well formed and each corpus' root present."""
    from trainables.data.corpora import SINGLE_CORPORA
    from trainables.data.multi import entries
    from trainables.errors import ConfigError

    try:
        found = entries(data, SINGLE_CORPORA)
    except ConfigError as exc:
        raise ctx.err(tuple(exc.key.split(".")), exc.message) from None
    for i, entry in enumerate(found):
        check_data_root(ctx, {"corpus": entry["corpus"], "root": entry.get("root")},
                        ("data", "corpora", str(i), "root"))


def check_data_root(ctx: Ctx, data: dict[str, Any],
                    path: tuple[str, ...] = ("data", "root")) -> None:
    if data["corpus"] == "multi":
        check_corpora(ctx, data)
        return
    corpus, root = data["corpus"], data["root"]
    if corpus not in CORPORA_WITH_ROOT:
        return
    if root is None:
        raise ctx.err(path, f"corpus {corpus} needs data.root (the release directory "
                      "or the manifest file), but it is not set")
    if not sc.data_root_exists(root):
        raise ctx.err(path, f"data.root must exist for corpus {corpus}, but "
                      f"{root!r} does not exist")


def model(ctx: Ctx, raw: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    given = section(ctx, raw, "model")
    families = sc.model_families()
    name = given.get("name")
    valid = ", ".join(sorted(families)) or "(none registered)"
    if name is None:
        raise ctx.err(("model", "name"), f"model.name is required; valid: {valid}")
    if not isinstance(name, str) or name not in families:
        raise ctx.err(("model", "name"), f"unknown model {name!r}"
                      f"{sc.suggest(str(name), families)}; valid: {valid}")
    sig = sc.model_signature(name)
    out: dict[str, Any] = {"name": name}
    for key, value in given.items():
        if key == "name":
            continue
        if key not in sig.defaults:
            raise unknown_key(ctx, ("model",), key, sig.defaults, f"model {name!r}")
        out[key] = check_value(ctx, ("model", key), value, sig.expect(key))
    missing = [k for k in sig.required() if k not in out]
    if missing:
        raise ctx.err(("model",), f"model {name!r} needs {', '.join(missing)}")
    for key, default in sig.defaults.items():
        out.setdefault(key, default)
    if sig.inputs and data["features"] not in sig.inputs:
        raise ctx.err(("data", "features"), f"model {name!r} takes features "
                      f"{', '.join(sig.inputs)}, but data.features is {data['features']!r}")
    return out


def _size_hint(number: str) -> str:
    return (f"a size needs a unit: {number} alone would be {number} bytes; write e.g. "
            f"{number}GiB or {number}MB ({number}B for bytes; units: {SIZE_UNITS})")


def parse_bytes(ctx: Ctx, path: tuple[str, ...], value: Any) -> int | None:
    """A size with a unit (`2GiB`, `512MB`, `4096B`) -> bytes; None stays None.

    A bare number is refused (`--gpu-memory 80` meant 80 GiB, not 80 bytes): the unit is
    required everywhere, in the sweep file and on the command line."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ctx.err(path, _size_hint(f"{value:g}" if isinstance(value, float) else str(value)))
    if not (isinstance(value, str) and (
            m := re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", value))):
        raise ctx.err(path, f"expected a size such as 2GiB or 512MB, but got "
                      f"{sc.describe(value)}")
    unit = m.group(2).lower()
    if not unit:
        raise ctx.err(path, _size_hint(m.group(1)))
    if unit not in _UNITS or m.group(1).count(".") > 1:
        raise ctx.err(path, f"expected a size such as 2GiB, 512MB or 4096B, but got "
                      f"{value!r} (units: {SIZE_UNITS})")
    number = float(m.group(1)) * _UNITS[unit]
    if number <= 0:
        raise ctx.err(path, f"{path[-1]} > 0 must hold, but got {value!r}")
    return int(number)


def parse_size(value: str, what: str) -> int | None:
    """A size given on the command line (e.g. `--gpu-memory 80GiB`), SpecError naming `what`."""
    try:
        return parse_bytes(Ctx(what), (what,), value)
    except SpecError as exc:  # the flag is the place: `--gpu-memory: a size needs a unit: ...`
        raise SpecError(what, None, exc.message) from None


def resources(ctx: Ctx, raw: dict[str, Any]) -> dict[str, Any]:
    given = section(ctx, raw, "resources")
    for key in given:
        if key not in RESOURCE_KEYS:
            raise unknown_key(ctx, ("resources",), key, RESOURCE_KEYS, "the resources section")
    path = ("resources",)
    cpus = check_value(ctx, (*path, "cpus_per_trial"), given.get("cpus_per_trial", 1),
                       Expect((int, float)))
    if cpus <= 0:
        raise ctx.err((*path, "cpus_per_trial"), f"cpus_per_trial > 0 must hold, but got {cpus}")
    gpus = given.get("gpus_per_trial", "auto")
    if gpus != "auto":
        gpus = check_value(ctx, (*path, "gpus_per_trial"), gpus, Expect((int, float)))
        if gpus < 0:
            raise ctx.err((*path, "gpus_per_trial"), f"gpus_per_trial >= 0 (or auto) must hold, "
                          f"but got {gpus}")
    frac = check_value(ctx, (*path, "gpu_memory_fraction"), given.get("gpu_memory_fraction", 0.9),
                       Expect((float,)))
    if not 0 < frac <= 1:
        raise ctx.err((*path, "gpu_memory_fraction"), f"0 < gpu_memory_fraction <= 1 must hold, "
                      f"but got {frac}")
    failures = check_value(ctx, (*path, "max_failures"), given.get("max_failures", 1),
                           Expect((int,)))
    if failures < -1:
        raise ctx.err((*path, "max_failures"), f"max_failures >= 0 (or -1 = retry forever) must "
                      f"hold, but got {failures}")
    budget = parse_bytes(ctx, (*path, "memory_budget"), given.get("memory_budget"))
    return {"cpus_per_trial": cpus, "gpus_per_trial": gpus, "gpu_memory_fraction": frac,
            "memory_budget": budget, "max_failures": failures}


def _int_at_least(ctx: Ctx, path: tuple[str, ...], value: Any, low: int, nullable: bool = False):
    value = check_value(ctx, path, value, Expect((int,), nullable))
    if value is not None and value < low:
        raise ctx.err(path, f"{path[-1]} >= {low} must hold, but got {value}")
    return value


def scheduler(ctx: Ctx, given: Any, epochs: int) -> dict[str, Any]:
    path = ("search", "scheduler")
    if given is None or isinstance(given, str):
        given = {"type": "none" if given is None else given}
    if not isinstance(given, Mapping):
        raise ctx.err(path, f"scheduler is asha, none or a mapping {{type: asha, grace_period: 2}}"
                      f", but got {sc.describe(given)}")
    for key in given:
        if key not in SCHEDULER_KEYS:
            raise unknown_key(ctx, path, key, SCHEDULER_KEYS, "search.scheduler")
    kind = check_value(ctx, (*path, "type"), given.get("type", "asha"),
                       Expect((str,), values=SCHEDULERS))
    grace = _int_at_least(ctx, (*path, "grace_period"), given.get("grace_period", 1), 1)
    factor = check_value(ctx, (*path, "reduction_factor"), given.get("reduction_factor", 3),
                         Expect((float,)))
    if factor <= 1:
        raise ctx.err((*path, "reduction_factor"), f"reduction_factor > 1 must hold, but got "
                      f"{factor}")
    max_t = _int_at_least(ctx, (*path, "max_t"), given.get("max_t"), 1, nullable=True)
    max_t = epochs if max_t is None else max_t
    return {"type": kind, "grace_period": min(grace, max_t), "reduction_factor": factor,
            "max_t": max_t}


def search(ctx: Ctx, raw: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The scalar entries of the search section (params are validated by params.py)."""
    given = section(ctx, raw, "search")
    for key in given:
        if key not in SEARCH_KEYS:
            raise unknown_key(ctx, ("search",), key, SEARCH_KEYS, "the search section")
    metric = check_value(ctx, ("search", "metric"), given.get("metric", VAL_UAR),
                         Expect((str,)))
    if metric not in SELECTABLE_METRICS:
        pattern = "|".join(m.removeprefix("val_") for m in SELECTABLE_METRICS)
        raise ctx.err(("search", "metric"), f"metric must be val_<{pattern}> (a validation "
                      f"metric; test metrics are never optimized), but got {metric!r}")
    natural = "min" if metric == VAL_LOSS else "max"
    mode = check_value(ctx, ("search", "mode"), given.get("mode", natural),
                       Expect((str,), values=("max", "min")))
    if mode != natural:
        raise ctx.err(("search", "mode"), f"{metric} is {natural}imized, so mode must be "
                      f"{natural}, but got {mode!r}")
    return {
        "metric": metric,
        "mode": mode,
        "sampler": check_value(ctx, ("search", "sampler"), given.get("sampler", "tpe"),
                               Expect((str,), values=SAMPLERS)),
        "trials": _int_at_least(ctx, ("search", "trials"), given.get("trials", 10), 1),
        "seed": _int_at_least(ctx, ("search", "seed"), given.get("seed", 0), 0, nullable=True),
        "max_concurrent": _int_at_least(ctx, ("search", "max_concurrent"),
                                        given.get("max_concurrent"), 1, nullable=True),
        "tuner_trials": _int_at_least(ctx, ("search", "tuner_trials"),
                                      given.get("tuner_trials", TUNER_TRIALS_DEFAULT), 1),
        "scheduler": scheduler(ctx, given.get("scheduler", {"type": "asha"}), epochs),
        "params": given.get("params"),
        # the reference baseline at the sweep's start (orchestrator/baseline_run.py; cached)
        "baseline": check_value(ctx, ("search", "baseline"), given.get("baseline", True),
                                Expect((bool,))),
    }
