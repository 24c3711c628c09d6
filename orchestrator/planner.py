"""Memory-aware batch sizing and GPU packing of the trials of a sweep (docs/design.md).

- Budget of a trial (`trial_budget_bytes`): `resources.memory_budget` (bytes) when the sweep file
  sets it (CPU too), else the GPU's memory x `resources.gpu_memory_fraction` x the trial's GPU
  share (a whole GPU's worth under `gpus_per_trial: auto`, see below).
- The micro-batch is decided ONCE, on the driver: `TrialPlanner` (called by search.TrialSpace for
  every sampled config) estimates the config's peak (trainables.memory.estimate_trial_memory),
  picks the largest micro-batch whose estimated peak fits the budget, plus gradient accumulation
  up to train.batch_size (`choose_target`, as `plan` does), and writes it into the trial's config
  (train.micro_batch, runtime.planned_accumulation, runtime.estimated_peak_bytes). The trial
  uses the plan; trainables/trainable.py plans only a config that arrives without a micro-batch
  under a budget (a config whose batch of 1 does not fit: the trial then fails with
  DoesNotFitError, recorded as does_not_fit; the budget also travels as runtime.memory_budget
  for that case), and estimates, at the batch it runs, a config that has no budget and no GPU
  (nothing to decide, so the driver's event loop is not held up): every trial row carries the
  estimate, the number `sweep.py plan` prints for that config.
- `gpus_per_trial: auto` (`resources_for_config`, the callable of tune.with_resources): ask Ray
  for the GPU fraction that the planned peak needs, rounded up to 1/8: small trials pack several
  to a GPU, SincNet per_frame gets a whole one. Estimates are cached per (model config, shape).
- GPUs of several types (#22, `gpu_targets` from orchestrator.cluster.discover_cluster): each
  trial is planned for one type, the smallest whose budget holds the whole logical batch (no
  accumulation), else the one that needs the fewest micro-batches, and placed on it with Ray's
  `accelerator_type:<type>` node resource (a 0.001 share, as Ray's own `accelerator_type=`
  option asks). A config that fits no type is planned nowhere: it asks for no GPU and its trial
  is recorded does_not_fit at once (trainable._plan with the largest type's budget), so it never
  waits for a GPU that cannot hold it. A fixed `gpus_per_trial` gets its type's budget too.
- `plan_configs` / `format_plan` and `add_arguments` / `run`: `sweep.py plan SPACE.yaml`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.dotted import get_dotted
from trainables.trial_config import TrialConfig

# trainables.memory (torch) is imported where it is used: the CLI imports this module to build
# the `plan` parser, and a bad sweep file must be reported before torch is imported.

DESCRIPTION = ("Show the memory plan of sampled configs, no training. Exit status 1 when some "
               "config does not fit even at micro-batch 1.")
EXIT_DOES_NOT_FIT = 1  # `plan`'s exit status when some config cannot fit (a CI gate)

GPU_GRID = 8  # GPU fractions are multiples of 1/8
DEFAULT_GPU_MEMORY_FRACTION = 0.9


def _get(resources: Any, key: str, default: Any = None) -> Any:
    if isinstance(resources, Mapping):
        return resources.get(key, default)
    return getattr(resources, key, default)


def trial_budget_bytes(resources: Any, gpu_total_bytes: int | None) -> int | None:
    """Bytes one trial may use (see module docstring); None when there is no budget (no GPU and no
    resources.memory_budget). `resources`: a mapping or object with cpus_per_trial,
    gpus_per_trial (number or "auto"), gpu_memory_fraction, memory_budget."""
    budget = _get(resources, "memory_budget")
    if budget:
        return int(budget)
    gpus = _get(resources, "gpus_per_trial", 0)
    if gpu_total_bytes is None or not gpus:
        return None
    share = 1.0 if gpus == "auto" else min(float(gpus), 1.0)
    fraction = _get(resources, "gpu_memory_fraction") or DEFAULT_GPU_MEMORY_FRACTION
    return int(gpu_total_bytes * float(fraction) * share)


def gpu_fraction_for(
    estimate_peak_bytes: int, gpu_total_bytes: int, gpu_memory_fraction: float
) -> float:
    """The GPU share a trial with this peak needs: peak / (GPU memory x fraction), rounded up to
    a multiple of 1/8, at least 1/8, at most 1.0."""
    usable = gpu_total_bytes * gpu_memory_fraction
    steps = math.ceil(GPU_GRID * estimate_peak_bytes / usable - 1e-9)
    return min(GPU_GRID, max(1, steps)) / GPU_GRID


ACCELERATOR_SHARE = 0.001  # of a node's accelerator_type resource: places, never limits


@dataclass(frozen=True)
class Target:
    """A GPU type a trial can be planned for: its name, the Ray resource that places a trial
    there (None: the only type, unnamed), the memory of one GPU and a trial's budget on it."""

    name: str
    resource: str | None
    memory_bytes: int | None
    budget_bytes: int | None  # None: memory unknown, the logical batch is planned as is


def gpu_targets(cluster: Any, resources: Any) -> tuple[Target, ...]:
    """One Target per GPU type of `cluster` (orchestrator.cluster.ClusterInfo), smallest memory
    first (unknown last); () when the trials ask for no GPU or the cluster has none.
    resources.memory_budget, when set, caps every type's budget."""
    gpus = _get(resources, "gpus_per_trial", 0)
    if not gpus or cluster is None:
        return ()
    fixed_budget = _get(resources, "memory_budget")
    targets = []
    for gpu in cluster.gpu_types:
        budget = trial_budget_bytes({**_as_dict(resources), "memory_budget": None},
                                    gpu.memory_bytes)
        if fixed_budget:
            budget = min(int(fixed_budget), budget) if budget else int(fixed_budget)
        targets.append(Target(gpu.name, gpu.resource, gpu.memory_bytes, budget))
    return tuple(sorted(targets, key=lambda t: (t.memory_bytes is None, t.memory_bytes or 0)))


def _as_dict(resources: Any) -> dict[str, Any]:
    keys = ("cpus_per_trial", "gpus_per_trial", "gpu_memory_fraction", "memory_budget")
    return {key: _get(resources, key) for key in keys}


@dataclass(frozen=True)
class Choice:
    """Where and how one config trains: its target (None: no GPU type, or it fits none)."""

    target: Target | None
    micro_batch: int  # 0 = fits no target
    accumulation: int
    estimated_peak: int  # bytes at micro_batch (at 1 when it fits nowhere)


def choose_target(estimate: Any, logical: int, fixed_micro: int | None,
                  targets: tuple[Target, ...]) -> Choice:
    """The target of one config (see the module docstring): the first (smallest) whose budget
    holds the logical batch in one step, else the fewest micro-batches; Choice(None, 0, 0, peak
    at 1) when it fits none. `fixed_micro`: the sweep file's train.micro_batch, kept as is."""
    from trainables.memory import choose_micro_batch

    best: Choice | None = None
    for target in targets:
        if fixed_micro is not None:
            fits = target.budget_bytes is None or estimate.peak(fixed_micro) <= target.budget_bytes
            micro, acc = (fixed_micro, math.ceil(logical / fixed_micro)) if fits else (0, 0)
        elif target.budget_bytes is None:
            micro, acc = logical, 1
        else:
            micro, acc = choose_micro_batch(estimate, target.budget_bytes, logical)
        if not micro:
            continue
        choice = Choice(target, micro, acc, int(estimate.peak(micro)))
        if acc == 1:
            return choice
        if best is None or acc < best.accumulation:
            best = choice
    return best or Choice(None, 0, 0, int(estimate.peak(1)))


@dataclass(frozen=True)
class TrialPlanner:
    """The driver's micro-batch decision for one trial config (see the module docstring).
    Plain numbers only: Tune pickles it with the searcher."""

    input_shape: tuple[int, ...]
    n_features: int
    n_classes: int
    n_folds: int
    budget_bytes: int | None
    targets: tuple[Target, ...] = ()  # the cluster's GPU types (gpu_targets); () = no GPU

    def __call__(self, config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """{"train": {"micro_batch"}, "runtime": {...}} to merge into the config; {} without a
        budget and without GPUs (nothing to decide: the trial stores the estimate that `plan`
        prints, trainable._plan, so the driver's event loop is not held up by it). Otherwise
        runtime.estimated_peak_bytes, the number `sweep.py plan` prints (the store keeps it in
        every trial row): the peak at the micro-batch that runs (the sweep file's
        train.micro_batch when it fixes one), at 1 when a batch of 1 does not fit.
        train.micro_batch is set only when the sweep file does not fix it; a CPU config that
        does not fit gets none, so its trial re-plans and is recorded does_not_fit.
        With GPU targets: the chosen type too (runtime.gpu_type / gpu_resource /
        gpu_memory_bytes / memory_budget); a config that fits none gets the largest budget,
        so its trial is recorded does_not_fit without waiting for a GPU."""
        from trainables.memory import estimate_for_shape

        trial = TrialConfig.from_dict(config)  # once per sampled config
        train = trial.train
        if not self.targets and self.budget_bytes is None:
            return {}  # nothing to decide: the trial estimates itself (trainable._plan)
        targets = self.targets or (Target("cpu", None, None, self.budget_bytes),)
        est = estimate_for_shape(  # on a GPU: in the precision the step runs in
            trial, input_shape=self.input_shape, n_features=self.n_features,
            n_classes=self.n_classes, n_folds=self.n_folds, on_gpu=bool(self.targets))
        fixed = train.micro_batch
        choice = choose_target(est, int(train.batch_size), fixed, targets)
        if choice.target is None:  # fits nowhere: the peak at 1, as `plan` shows it
            peak = int(est.peak(fixed)) if fixed is not None else choice.estimated_peak
            if not self.targets:
                return {"runtime": {"estimated_peak_bytes": peak}}
            budgets = [t.budget_bytes for t in self.targets if t.budget_bytes]
            return {"runtime": {"memory_budget": max(budgets), "gpu_type": None,
                                "estimated_peak_bytes": peak}}
        runtime: dict[str, Any] = {"estimated_peak_bytes": choice.estimated_peak,
                                   "planned_accumulation": choice.accumulation}
        if self.targets:
            target = choice.target
            runtime.update(memory_budget=target.budget_bytes, gpu_type=target.name,
                           gpu_resource=target.resource, gpu_memory_bytes=target.memory_bytes)
        if fixed is not None:
            return {"runtime": runtime}
        return {"train": {"micro_batch": choice.micro_batch}, "runtime": runtime}


def resources_for_config(
    config: Mapping[str, Any],
    *,
    cpus_per_trial: float,
    gpu_total_bytes: int | None = None,
    gpu_memory_fraction: float = DEFAULT_GPU_MEMORY_FRACTION,
    gpus_per_trial: float | str = "auto",
) -> dict[str, float]:
    """{"cpu": cpus_per_trial, "gpu": share, [accelerator_type:<type>: 0.001]} for one trial's
    config (the callable of tune.with_resources), from the driver's plan (TrialPlanner):
    `auto` asks for the share of the planned GPU type's memory (runtime.gpu_memory_bytes, else
    `gpu_total_bytes`) that the planned peak needs; a fixed share asks for itself. A config
    planned for no type (runtime.gpu_type None: it fits no GPU) asks for no GPU: its trial is
    recorded does_not_fit at once. A config without any plan (one GPU type, a batch of 1 does
    not fit) gets a whole GPU: its trial then fails fast with DoesNotFitError."""
    runtime = config.get("runtime") or {}
    out = {"cpu": float(cpus_per_trial)}
    if "gpu_type" in runtime and runtime["gpu_type"] is None:
        return {**out, "gpu": 0.0}
    if runtime.get("gpu_resource"):
        out[runtime["gpu_resource"]] = ACCELERATOR_SHARE
    if gpus_per_trial != "auto":
        return {**out, "gpu": float(gpus_per_trial)}
    peak = runtime.get("estimated_peak_bytes")
    memory = runtime.get("gpu_memory_bytes") or gpu_total_bytes
    if peak is None or not memory:
        return {**out, "gpu": 1.0}
    return {**out, "gpu": gpu_fraction_for(int(peak), int(memory), gpu_memory_fraction)}


@dataclass(frozen=True)
class PlanRow:
    params: dict[str, Any]  # the searched params of this config (dotted key -> value)
    micro_batch: int  # 0 = does not fit
    accumulation: int
    batch_size: int
    estimated_peak: int  # bytes at micro_batch (at 1 when it does not fit)
    budget_bytes: int | None
    gpu_fraction: float | None  # None without a GPU
    gpu_type: str | None = None  # the GPU type it is planned for (None: CPU, or fits none)

    @property
    def fits(self) -> bool:
        return self.micro_batch > 0


def plan_configs(
    configs: list[dict[str, Any]],
    *,
    data_shape: tuple[int, ...],
    n_features: int,
    n_classes: int,
    n_folds: int,
    resources: Any,
    gpu_total_bytes: int | None = None,
    param_keys: list[str] | None = None,
    cluster: Any = None,
) -> list[PlanRow]:
    """One PlanRow per config (plain {"model", "train", "data", ...} dicts), planned as the run
    plans it: for the GPU types of `cluster` (orchestrator.cluster.ClusterInfo), else for one GPU
    of `gpu_total_bytes`. Without a GPU and without resources.memory_budget there is no budget:
    the logical batch is planned as is."""
    from orchestrator.cluster import fixed_gpu_info
    from trainables.memory import estimate_for_shape

    if cluster is None and gpu_total_bytes:
        cluster = fixed_gpu_info(gpu_total_bytes)
    targets = gpu_targets(cluster, resources)
    cpu_budget = trial_budget_bytes({**_as_dict(resources), "gpus_per_trial": 0}, None)
    if not targets:
        targets = (Target("cpu", None, None, cpu_budget),)
    fraction = float(_get(resources, "gpu_memory_fraction") or DEFAULT_GPU_MEMORY_FRACTION)
    gpus = _get(resources, "gpus_per_trial", 0)
    rows = []
    for config in configs:
        trial = TrialConfig.from_dict(config)  # once per config
        est = estimate_for_shape(trial, input_shape=data_shape, n_features=n_features,
                                 n_classes=n_classes, n_folds=n_folds,
                                 on_gpu=targets[0].memory_bytes is not None)
        logical = int(trial.train.batch_size)
        choice = choose_target(est, logical, trial.train.micro_batch, targets)
        target = choice.target
        gpu = None
        if target is not None and target.memory_bytes:
            gpu = (gpu_fraction_for(choice.estimated_peak, target.memory_bytes, fraction)
                   if gpus == "auto" else float(gpus or 0))
        elif target is None and targets[0].memory_bytes:
            gpu = 0.0  # fits no GPU: asks for none, recorded does_not_fit
        budget = target.budget_bytes if target is not None else max(
            (t.budget_bytes for t in targets if t.budget_bytes), default=None)
        params = {k: get_dotted(config, k) for k in (param_keys or [])}
        gpu_type = target.name if target is not None and target.memory_bytes else None
        rows.append(PlanRow(params, choice.micro_batch, choice.accumulation, logical,
                            choice.estimated_peak, budget, gpu, gpu_type))
    return rows


UNITS = {"GiB": 2**30, "MiB": 2**20, "KiB": 2**10, "GB": 10**9, "MB": 10**6, "kB": 10**3}


def size_unit(text: str | None) -> str | None:
    """The unit a size was given in (`24GiB` -> GiB, `24 mb` -> MB), None when none of UNITS."""
    tail = (text or "").strip().lstrip("0123456789.").strip().lower()
    return next((unit for unit in UNITS if unit.lower() == tail), None)


def _fmt_bytes(n: int | None, unit: str | None = None) -> str:
    """Bytes in `unit` (the one the user gave), else GiB / MiB by size."""
    if n is None:
        return "-"
    if unit in UNITS:
        return f"{n / UNITS[unit]:.3g} {unit}" if n < 1000 * UNITS[unit] else \
            f"{n / UNITS[unit]:.0f} {unit}"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _fmt_value(value: Any) -> str:
    """A searched value as plan prints it: floats with 3 significant digits (lr 0.000647)."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def format_plan(rows: list[PlanRow], unit: str | None = None) -> str:
    """A fixed-width table: one line per config; configs that do not fit say so. Sizes in
    `unit` (the unit of --gpu-memory) when given."""
    keys = list(dict.fromkeys(k for r in rows for k in r.params))
    types = any(r.gpu_type for r in rows)
    head = ["#", *keys, "micro", "accum", "est. peak", "budget", "gpu", *(["type"] * types)]
    lines = []
    for i, r in enumerate(rows):
        cells = [str(i), *(_fmt_value(r.params.get(k)) for k in keys)]
        if r.fits:
            cells += [f"{r.micro_batch}/{r.batch_size}", str(r.accumulation)]
        else:
            cells += ["DOES NOT FIT", "-"]
        gpu = "-" if r.gpu_fraction is None else f"{r.gpu_fraction:g}"
        cells += [_fmt_bytes(r.estimated_peak, unit), _fmt_bytes(r.budget_bytes, unit), gpu]
        cells += [r.gpu_type or "-"] * types
        lines.append(cells)
    widths = [max(len(c) for c in col) for col in zip(head, *lines)]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *lines]]
    bad = sum(not r.fits for r in rows)
    if bad:
        out.append(f"{bad} config(s) DO NOT FIT even at micro-batch 1 (peak shown at 1).")
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from orchestrator.sweepfile import add_spec_arguments

    add_spec_arguments(parser)
    parser.add_argument("--samples", type=int, default=8, help="configs to sample")
    parser.add_argument("--batch", type=int, default=None, metavar="N",
                        help="plan this logical batch (= --set train.batch_size=N)")
    parser.add_argument("--seconds", type=float, default=None, metavar="S",
                        help="plan utterances of S seconds (= --set data.max_seconds=S)")
    parser.add_argument(
        "--gpu-memory", default=None, metavar="SIZE",
        help="plan for a GPU of this size, with a unit (e.g. 80GiB), instead of the cluster's",
    )
    parser.add_argument(
        "--address", default=None,
        help="plan for the GPUs of this Ray cluster (or RAY_ADDRESS; `auto`: the one `ray "
             "start` left here); without it: this machine's GPUs",
    )


def run(args: argparse.Namespace) -> int:
    """`sweep.py plan SPACE.yaml`: the memory plan of sampled configs, before anything trains.
    Exit 1 when some config does not fit even at micro-batch 1 (a CI check), else 0."""
    from orchestrator.quiet import quiet_logs

    quiet_logs(verbose=False)  # torch's profiler (the LSTM estimate) prints USDT / ERROR lines
    import os

    from orchestrator.cluster import (
        discover_cluster,
        find_autoscaler,
        fixed_gpu_info,
        joins_a_cluster,
        local_gpu_info,
        ray_init,
    )
    from orchestrator.sweepfile import load_spec_from_args, parse_size

    gpu_memory = parse_size(args.gpu_memory, "--gpu-memory") if args.gpu_memory else None
    args.overrides = [*args.overrides,
                      *([f"train.batch_size={args.batch}"] if args.batch is not None else []),
                      *([f"data.max_seconds={args.seconds}"] if args.seconds is not None else [])]
    spec = load_spec_from_args(args)
    from orchestrator.search import sample_configs
    from trainables.data import prepare_data

    data = prepare_data(spec.base_config()["data"], progress=lambda msg: print(f"data: {msg}"))
    if gpu_memory is not None:
        cluster = fixed_gpu_info(gpu_memory)
    elif args.address or os.environ.get("RAY_ADDRESS"):
        autoscaler = find_autoscaler() if joins_a_cluster(args.address) else None
        ray_init(args.address, verbose=False)
        cluster = discover_cluster(autoscaler=autoscaler)
    else:
        cluster = local_gpu_info()
    rows = plan_configs(
        sample_configs(spec, args.samples) if spec.search.params else [spec.base_config()],
        data_shape=tuple(data.features.shape[1:]),
        n_features=data.n_features,
        n_classes=data.n_classes,
        n_folds=len(data.folds),
        resources=spec.resources,
        param_keys=spec.param_keys(),
        cluster=cluster,
    )
    print(cluster.line() if gpu_memory is None
          else f"planned for one GPU of {args.gpu_memory} (--gpu-memory)")
    base = spec.base_config()
    print(f"input per utterance: {tuple(data.features.shape[1:])} ({base['data']['features']}, "
          f"{base['data']['max_seconds']:g} s), model {base['model']['name']}; "
          f"logical batch {base['train']['batch_size']}")
    print(f"memory plan of {len(rows)} sampled configs of {spec.name}:")
    print(format_plan(rows, size_unit(args.gpu_memory)))
    return EXIT_DOES_NOT_FIT if any(not r.fits for r in rows) else 0


@dataclass(frozen=True)
class PlannerByData:
    """One TrialPlanner per prepared data (a sweep searching data.* choices prepares one each:
    features and shapes may differ), picked by the sampled config's data section."""

    planners: Mapping[str, TrialPlanner]

    def __call__(self, config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        from trainables.data.prepare import prepared_key

        return self.planners[prepared_key(config["data"])](config)
