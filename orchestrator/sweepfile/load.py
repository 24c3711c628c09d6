"""A sweep file -> a validated, frozen SweepSpec.

`load_spec("search_spaces/transformer.yaml", overrides=["train.lr=1e-3"], trials=4)` reads the file
safely (yaml_loader.py), applies the --set overrides and the --trials / --epochs shortcuts, checks
every key and value against trainables/config.py, the model family's constructor and the rules of
sections.py, params.py and distill.py, fills in the defaults, and builds the base model on the
meta device. Every mistake is a SpecError naming the file, the line, the key path and what was
expected. `add_spec_arguments` / `load_spec_from_args`: the same flags for every subcommand.
"""

from __future__ import annotations

import argparse
import copy
import errno
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.sweepfile import context as sc
from orchestrator.sweepfile import distill_section as sd
from orchestrator.sweepfile import sections as ss
from orchestrator.sweepfile.constraints import check_constraints, check_drawn_values
from orchestrator.sweepfile.context import Ctx, unknown_key
from orchestrator.sweepfile.params import validate_params
from orchestrator.sweepfile.spec_error import SpecError
from orchestrator.sweepfile.sweep_spec import (
    ResourceSpec,
    SchedulerSpec,
    SearchSpec,
    SweepSpec,
    apply_params,
)
from orchestrator.sweepfile.yaml_loader import load_yaml_file, parse_override_value
from trainables.errors import SersweepError
from trainables.frozen import freeze

SEARCH_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
TOP_KEYS = ("name", "data", "model", "train", "search", "resources", "results", "distill")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def resolve_spec_path(arg: str | Path) -> Path:
    """`arg` if it is a file, else the file of that name in the repo's search_spaces/."""
    path = Path(arg).expanduser()
    if path.is_file():
        return path
    for candidate in (SEARCH_SPACES / path.name, SEARCH_SPACES / f"{path.name}.yaml"):
        if path.name and candidate.is_file():
            return candidate
    available = sorted(p.name for p in SEARCH_SPACES.glob("*.yaml"))
    what = "is a directory, not a sweep file" if path.is_dir() else "does not exist"
    raise SpecError(str(arg), None, f"{what} (also looked for {path.name!r} in {SEARCH_SPACES}); "
                    f"available sweep files: {', '.join(available) or 'none'}")


def _set_override(ctx: Ctx, raw: dict[str, Any], text: str) -> None:
    via = f"--set {text}"
    key, sep, value_text = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or "" in parts:
        raise SpecError(ctx.file, None, f"--set takes key=value with a dotted key, e.g. "
                        f"--set train.lr=1e-3, but got {text!r}", via=via)
    value = parse_override_value(value_text, ctx.file, via)
    path = tuple(parts)
    if parts[:2] == ["search", "params"] and len(parts) > 2:
        path = ("search", "params", ".".join(parts[2:]))
    node = raw
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(ctx.file, ".".join(path[: i + 1]), f"{via} addresses nothing: "
                            f"{'.'.join(path[: i + 1])} is {sc.describe(child)}, not a mapping",
                            via=via)
        node = child
    node[path[-1]] = value
    ctx.via[path] = via
    search = raw.get("search")
    params = search.get("params") if isinstance(search, dict) else None
    if len(path) == 2 and isinstance(params, dict):
        params.pop(key, None)  # --set pins a searched key to one value


def results_root_error(root: str, exc: OSError | ValueError) -> SersweepError:
    """One line for a results root that cannot hold a sweep: a file where a folder must be
    (the root itself, or <sweep>/driver.lock), a read-only or full disk, an unreachable
    object store (s3://, gs://). Raised before anything is written."""
    where = getattr(exc, "filename", None)
    code = getattr(exc, "errno", None)
    reason = getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__
    if code == errno.ENOTDIR:
        reason += " (a file is in the way: the results root and <sweep>/driver.lock are folders)"
    elif code == errno.EEXIST:
        reason += " (a file is in the way: <sweep>/driver.lock is a folder)"
    shown = f"{where}: {reason}" if where and str(where) not in reason else reason
    return SersweepError(f"results root {root}: cannot hold the sweep: {shown}; pass --results "
                         "a writable folder or a reachable storage URI (nothing was written)")


FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_BELOW = 1 << 20  # bytes free under which a folder's disk counts as full


def disk_full_error(exc: BaseException, folder: str) -> SersweepError | None:
    """One line for a run that a full disk under `folder` (Ray Tune's checkpoint folder, about
    85 % of a sweep's bytes, so the first to fill) stopped: ENOSPC / EDQUOT anywhere in the
    exception's chain, or Tune's own follow-up error (a truncated error.pkl: EOFError) while
    that disk has under FULL_BELOW bytes free. None: not a full disk, let it propagate."""
    seen: set[int] = set()
    link: BaseException | None = exc
    full = False
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        full = full or (isinstance(link, OSError) and link.errno in FULL_ERRNOS)
        link = link.__cause__ or link.__context__
    if not full and "://" not in folder:
        probe = Path(folder)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        full = shutil.disk_usage(probe).free < FULL_BELOW
    if not full:
        return None
    return SersweepError(f"{folder}: the disk is full ({os.strerror(errno.ENOSPC)}) while Ray "
                         "Tune wrote its checkpoints there; the trials recorded before it are "
                         "intact: free space, then run the same command to continue")


def check_results_root(root: str) -> None:
    """An object-store root (s3://, gs://) answers before anything runs: one request for the
    root (a local root's problems surface, as OSError, when its lease is taken)."""
    if "://" not in root or root.startswith("file://"):
        return
    from orchestrator.store import resolve

    try:
        fs, path = resolve(root)
        fs.get_file_info(path)
    except (OSError, ValueError) as exc:  # pyarrow: ArrowInvalid (a bad URI) is a ValueError
        raise results_root_error(root, exc) from None


def _n_classes(classes: int | list) -> int:
    """data.classes is a count (IEMOCAP 4 or 6) or a manifest's list of class names."""
    return len(classes) if isinstance(classes, list) else int(classes)


def _build_model(ctx: Ctx, data: dict[str, Any], model: dict[str, Any]) -> None:
    """Build the model on the meta device: the family's own value rules (ConfigError)."""
    import torch

    from trainables.errors import ConfigError
    from trainables.models import build_model

    try:
        with torch.device("meta"):
            build_model(copy.deepcopy(model), n_features=sc.feature_width(data),
                        n_classes=_n_classes(data["classes"]))
    except ConfigError as exc:
        message = str(exc).removesuffix(f" at {exc.key}")
        path = tuple(exc.key.split(".")) if exc.key else ("model",)
        raise ctx.err(path, message) from None
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ctx.err(("model",), f"model {model['name']!r} cannot be built from these values: "
                      f"{exc}") from None


def _check_ssl(ctx: Ctx, data: dict[str, Any]) -> None:
    """`data.ssl` with `features: ssl`: every problem trainables/data/ssl finds, the first at its
    line (the rule lives with the encoders; imported here only for an ssl sweep: torch)."""
    from trainables.data.ssl.settings import validate_ssl_config

    problems = validate_ssl_config(data.get("ssl"), data["normalize"])
    if problems:
        (key, message), rest = problems[0], problems[1:]
        more = "".join(f"; {k}: {m}" for k, m in rest)
        raise ctx.err(tuple(key.split(".")), message + more)


def _validate(ctx: Ctx, raw: dict[str, Any], default_name: str) -> dict[str, Any]:
    for key in raw:
        if not isinstance(key, str) or key not in TOP_KEYS:
            raise unknown_key(ctx, (), str(key), TOP_KEYS, "the top level")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not NAME_RE.match(name) or name in (".", ".."):
        raise ctx.err(("name",), f"name is a folder name of letters, digits, _ . - "
                      f"([A-Za-z0-9_.-]+), but got {name!r}")
    # Cheap sections first: they need neither torch nor the registries (which import torch,
    # scipy), so the common typo (a key of train/search/resources, a section name) is reported
    # in a fraction of a second. data, model and params need the registries.
    ss.check_known_keys(ctx, raw, "data")
    train = ss.data_or_train(ctx, raw, "train")
    search = ss.search(ctx, raw, train["epochs"])
    resources = ss.resources(ctx, raw)
    results = raw.get("results", "results")
    if results is not None and (not isinstance(results, str) or not results.strip()):
        raise ctx.err(("results",), f"results is a directory or URI (a non-empty string), but "
                      f"got {results!r}")
    data = ss.data_or_train(ctx, raw, "data")
    if data["features"] == "ssl":
        _check_ssl(ctx, data)
    model = ss.model(ctx, raw, data)
    distill = sd.distill(ctx, raw)
    search["params"] = validate_params(ctx, search["params"], data, model, train, distill)
    search["scheduler"] = SchedulerSpec(**search["scheduler"])
    ss.check_data_root(ctx, data)
    _build_model(ctx, data, model)
    models = {model["name"]: model}  # every family the search can draw, with its base values
    for p in search["params"]:
        for fam in p.real_choices() if p.key == "model.name" else ():
            if fam not in models:
                base = {"data": data, "model": model, "train": train}
                models[fam] = apply_params(base, {"model.name": fam})["model"]
                _build_model(ctx, data, models[fam])
    check_constraints(ctx, search["params"], models)
    check_drawn_values(ctx, search["params"], models, sc.feature_width(data),
                       _n_classes(data["classes"]))
    return {"name": name, "data": data, "model": model, "train": train,
            "search": SearchSpec(**search), "resources": ResourceSpec(**resources),
            "results": results, "distill": distill}


def load_spec(path: str | Path, *, overrides: Sequence[str] = (), trials: int | None = None,
              epochs: int | None = None) -> SweepSpec:
    """Read, override, validate and freeze a sweep file. Every failure is a SpecError."""
    resolved = resolve_spec_path(path)
    ctx = Ctx(str(resolved), load_yaml_file(resolved))
    raw = ctx.loaded.data
    if not isinstance(raw, Mapping):
        raise SpecError(ctx.file, None, f"the top level must be a mapping of sections ("
                        f"{', '.join(TOP_KEYS)}), but got {sc.describe(raw)[:80]}", 1)
    raw = copy.deepcopy(dict(raw))
    try:
        for text in overrides:
            _set_override(ctx, raw, text)
        for value, key in ((trials, "search.trials"), (epochs, "train.epochs")):
            if value is not None:
                flag = f"--{key.split('.')[1]} {value}"
                _set_override(ctx, raw, f"{key}={value}")
                ctx.via[tuple(key.split("."))] = flag
        checked = _validate(ctx, raw, resolved.stem)
        if checked["search"].sampler == "grid":
            for p in checked["search"].params:
                try:
                    p.grid_values()
                except SpecError as exc:
                    raise ctx.relocate(("search", "params", p.key), exc) from None
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - the promise: a message, never a traceback
        raise SpecError(ctx.file, None, f"cannot validate the sweep file: {type(exc).__name__}: "
                        f"{exc}") from exc
    return SweepSpec(
        path=resolved, name=checked["name"], data=freeze(checked["data"]),
        model=freeze(checked["model"]), train=freeze(checked["train"]),
        search=checked["search"], resources=checked["resources"], results=checked["results"],
        distill=freeze(checked["distill"]) if checked["distill"] is not None else None,
    )


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep file and its overrides (`space`, --trials, --epochs, --set), for run and plan."""
    parser.add_argument("space", help="sweep file, e.g. search_spaces/transformer.yaml")
    parser.add_argument("--trials", type=int, default=None, help="override search.trials")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override any value by dotted key, e.g. --set train.lr=1e-3 (repeatable); a key "
             "of search.params is pinned to that value and no longer searched (printed)",
    )


def load_spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """`load_spec` with what `add_spec_arguments` parsed; says which file a short name meant."""
    spec = load_spec(args.space, overrides=args.overrides, trials=args.trials, epochs=args.epochs)
    if not Path(args.space).expanduser().is_file():
        print(f"sweep file: {_shown(spec.path)} (from name {args.space!r})")
    points = spec.grid_points()
    if points is not None and points > spec.search.trials:
        print(f"grid has {points} points; running {spec.search.trials} (search.trials)")
    return spec


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is below it (shorter to read)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
