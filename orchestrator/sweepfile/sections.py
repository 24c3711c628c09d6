"""Validation of the sections of a sweep file: data, model, train, search (scalars), resources.

Each function takes the raw mapping of one section and returns it checked with the defaults
filled in, or raises SpecError at the offending key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from orchestrator.sweepfile import context as sc
from orchestrator.sweepfile.context import Ctx, Expect, check_value, unknown_key
from orchestrator.sweepfile.spec_error import SpecError
from trainables.config import (
    CONFIRM,
    DATA,
    RACING,
    RESOURCES,
    SCHEDULER,
    SEARCH,
    TRAIN,
    Key,
    defaults,
    number_problem,
)
from trainables.names import VAL_LOSS

SECTION_KEYS: dict[str, dict[str, Key]] = {"data": DATA, "train": TRAIN}
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


def _registry(name: str) -> tuple[str, ...]:
    return sc.corpora() if name == "corpora" else sc.feature_kinds()


def expect_of(key: Key) -> Expect:
    """What a declared key accepts, as the type checker's Expect (bounds: check_bounds)."""
    if key.choices is not None or key.registry is not None:
        values = key.choices if key.registry is None else _registry(key.registry)
        return Expect((str,), key.accepts_none(), values=values)
    if key.types is None:
        return replace(sc.expect_from_default(key.default), nullable=key.accepts_none())
    return Expect(key.types, key.accepts_none())


def expect_for(section_name: str, key: str) -> Expect:
    return expect_of(SECTION_KEYS[section_name][key])


def check_number(ctx: Ctx, path: Sequence[str], value: Any,
                 bounds: Sequence[tuple[str, float]] = (), name: str | None = None) -> None:
    """A number finite, of sane size and within `bounds` (config.number_problem)."""
    problem = number_problem(name or path[-1], value, bounds)
    if problem:
        raise ctx.err(path, problem)


def check_key(ctx: Ctx, path: Sequence[str], key: Key, value: Any) -> Any:
    """One value of a declared key: its type or choices, finiteness and bounds."""
    if key.words and value in key.words:
        return value
    value = check_value(ctx, path, value, expect_of(key))
    check_number(ctx, path, value, key.bounds())
    return value


def check_minimum(ctx: Ctx, path: tuple[str, ...], dotted: str, value: Any) -> None:
    """The bounds of the data/train key `dotted` (also each end of its searched range)."""
    section_name, _, key = dotted.partition(".")
    check_number(ctx, path, value, SECTION_KEYS[section_name][key].bounds(), name=key)


def check_entry(ctx: Ctx, path: tuple[str, ...], section_name: str, key: str, value: Any) -> Any:
    """One data/train value (also each choice of a searched data/train key)."""
    value = check_key(ctx, path, SECTION_KEYS[section_name][key], value)
    if f"{section_name}.{key}" == "train.seeds":
        if not value:
            raise ctx.err(path, "seeds needs at least one seed, e.g. [0], but got []")
        check_value(ctx, path, value, Expect((list,), item=int))
        for i, seed in enumerate(value):
            check_number(ctx, (*path, str(i)), seed)
        twice = sorted({s for s in value if list(value).count(s) > 1})
        if twice:
            raise ctx.err(path, f"seeds must be distinct (a repeated seed trains an identical "
                          f"member: std 0, false confidence), but {twice} repeat")
    return value


def check_known_keys(ctx: Ctx, raw: dict[str, Any], name: str) -> None:
    """Every key of the data or train section is one of its defaults' keys (no registry
    needed: a misspelt key is reported before the corpus/feature registries are imported)."""
    keys = SECTION_KEYS[name]
    for key in section(ctx, raw, name):
        if key not in keys:
            raise unknown_key(ctx, (name,), key, keys, f"the {name} section")


def data_or_train(ctx: Ctx, raw: dict[str, Any], name: str) -> dict[str, Any]:
    check_known_keys(ctx, raw, name)
    out = defaults(SECTION_KEYS[name])
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
    if not sc.corpus_class(corpus).needs_root:
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


def _take(ctx: Ctx, path: tuple[str, ...], keys: Mapping[str, Key], given: Mapping[str, Any],
          name: str) -> Any:
    """given[name] (or its declared default) checked against its declaration."""
    return check_key(ctx, (*path, name), keys[name], given.get(name, keys[name].default))


def resources(ctx: Ctx, raw: dict[str, Any]) -> dict[str, Any]:
    given = section(ctx, raw, "resources")
    for key in given:
        if key not in RESOURCES:
            raise unknown_key(ctx, ("resources",), key, RESOURCES, "the resources section")
    path = ("resources",)
    out = {name: _take(ctx, path, RESOURCES, given, name) for name in RESOURCES
           if name != "memory_budget"}  # a size with a unit: parse_bytes
    return {**out, "memory_budget": parse_bytes(ctx, (*path, "memory_budget"),
                                                given.get("memory_budget"))}


def scheduler(ctx: Ctx, given: Any, epochs: int) -> dict[str, Any]:
    path = ("search", "scheduler")
    if given is None or isinstance(given, str):
        given = {"type": "none" if given is None else given}
    if not isinstance(given, Mapping):
        raise ctx.err(path, f"scheduler is asha, none or a mapping {{type: asha, grace_period: 2}}"
                      f", but got {sc.describe(given)}")
    for key in given:
        if key not in SCHEDULER:
            raise unknown_key(ctx, path, key, SCHEDULER, "search.scheduler")
    out = {name: _take(ctx, path, SCHEDULER, given, name) for name in SCHEDULER}
    max_t = epochs if out["max_t"] is None else out["max_t"]
    return {**out, "grace_period": min(out["grace_period"], max_t), "max_t": max_t}


def search(ctx: Ctx, raw: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The scalar entries of the search section (params are validated by params.py)."""
    given = section(ctx, raw, "search")
    for key in given:
        if key not in SEARCH:
            raise unknown_key(ctx, ("search",), key, SEARCH, "the search section")
    metric = check_value(ctx, ("search", "metric"), given.get("metric", SEARCH["metric"].default),
                         Expect((str,)))
    if metric not in SEARCH["metric"].choices:
        pattern = "|".join(m.removeprefix("val_") for m in SEARCH["metric"].choices)
        raise ctx.err(("search", "metric"), f"metric must be val_<{pattern}> (a validation "
                      f"metric; test metrics are never optimized), but got {metric!r}")
    natural = "min" if metric == VAL_LOSS else "max"
    mode = _take(ctx, ("search",), SEARCH, given, "mode") or natural  # null: the metric's own
    if mode != natural:
        raise ctx.err(("search", "mode"), f"{metric} is {natural}imized, so mode must be "
                      f"{natural}, but got {mode!r}")
    plain = [k for k in SEARCH
             if k not in ("metric", "mode", "scheduler", "params", "confirm", "racing",
                          "loggers")]
    return {
        "metric": metric,
        "mode": mode,
        **{name: _take(ctx, ("search",), SEARCH, given, name) for name in plain},
        "scheduler": scheduler(ctx, given.get("scheduler", SEARCH["scheduler"].default), epochs),
        "params": given.get("params"),
        "confirm": _stage_keys(ctx, "confirm", given.get("confirm", SEARCH["confirm"].default),
                               CONFIRM, "top"),
        "racing": _stage_keys(ctx, "racing", given.get("racing", SEARCH["racing"].default),
                              RACING, "first"),
        "loggers": loggers(ctx, given.get("loggers", SEARCH["loggers"].default)),
    }


def _stage_keys(ctx: Ctx, name: str, given: Any, keys: Mapping[str, Key],
                switch: str) -> dict[str, Any] | None:
    """search.confirm / search.racing: null or false = off; true = the declared defaults; a
    mapping of the declared keys, each checked; `switch` 0 = off."""
    path = ("search", name)
    if given is None or given is False:
        return None
    if given is True:
        given = {}
    if not isinstance(given, Mapping):
        raise ctx.err(path, f"{name} is null, true or a mapping like {defaults(keys)}, but got "
                      f"{sc.describe(given)}")
    for key in given:
        if key not in keys:
            raise unknown_key(ctx, path, key, keys, f"search.{name}")
    out = {key: _take(ctx, path, keys, given, key) for key in keys}
    return None if out[switch] == 0 else out


def loggers(ctx: Ctx, given: Any) -> tuple[str, ...]:
    """search.loggers: a list of tracker names (orchestrator/trackers.py), each at most once."""
    from orchestrator.trackers import LOGGERS

    path = ("search", "loggers")
    names = check_value(ctx, path, given, Expect((list,), item=str))
    for i, name in enumerate(names):
        check_value(ctx, (*path, str(i)), name, Expect((str,), values=LOGGERS))
    if len(set(names)) != len(names):
        raise ctx.err(path, f"loggers names each tracker once, but got {names}")
    return tuple(names)
