"""Memory-aware batch sizing and GPU packing of the trials of a sweep (docs/design.md).

- Budget of a trial (`trial_budget_bytes`): `resources.memory_budget` (bytes) when the sweep file
  sets it (CPU too), else the GPU's memory x `resources.gpu_memory_fraction` x the trial's GPU
  share (a whole GPU's worth under `gpus_per_trial: auto`, see below).
- The micro-batch is decided ONCE, on the driver: `TrialPlanner` (called by search.TrialSpace for
  every sampled config) runs trainables.memory.plan_for_shape (the largest micro-batch whose
  estimated peak fits, plus gradient accumulation up to train.batch_size) and writes it into the
  trial's config (train.micro_batch, runtime.estimated_peak_bytes / planned_accumulation). The
  trial uses it; trainables/trainable.py plans only a config that arrives without one (a config
  whose batch of 1 does not fit: the trial then fails with DoesNotFitError, recorded as
  does_not_fit). The budget also travels as runtime.memory_budget for that case.
- `gpus_per_trial: auto` (`resources_for_config`, the callable of tune.with_resources): ask Ray
  for the GPU fraction that the planned peak needs, rounded up to 1/8: small trials pack several
  to a GPU, SincNet per_frame gets a whole one. Estimates are cached per (model config, shape).
- `plan_configs` / `format_plan` and `add_arguments` / `run`: `sweep.py plan SPACE.yaml`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.dotted import get_dotted
from trainables.config import member_count, train_section
from trainables.errors import DoesNotFitError

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


@dataclass(frozen=True)
class TrialPlanner:
    """The driver's micro-batch decision for one trial config (see the module docstring).
    Plain numbers only: Tune pickles it with the searcher."""

    input_shape: tuple[int, ...]
    n_features: int
    n_classes: int
    n_folds: int
    budget_bytes: int | None

    def __call__(self, config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """{"train": {"micro_batch"}, "runtime": {...}} to merge into the config; {} when there
        is no budget, the sweep file fixed train.micro_batch, or a batch of 1 does not fit."""
        from trainables.memory import plan_for_shape

        if self.budget_bytes is None or train_section(config)["micro_batch"] is not None:
            return {}
        try:
            plan = plan_for_shape(
                config, input_shape=self.input_shape, n_features=self.n_features,
                n_classes=self.n_classes, n_folds=self.n_folds, budget_bytes=self.budget_bytes,
            )
        except DoesNotFitError:
            return {}
        return {"train": {"micro_batch": plan.micro_batch},
                "runtime": {"estimated_peak_bytes": plan.estimated_peak,
                            "planned_accumulation": plan.accumulation}}


def resources_for_config(
    config: Mapping[str, Any],
    *,
    cpus_per_trial: float,
    gpu_total_bytes: int,
    gpu_memory_fraction: float = DEFAULT_GPU_MEMORY_FRACTION,
) -> dict[str, float]:
    """{"cpu": cpus_per_trial, "gpu": fraction} for one trial's config, from the peak the driver
    planned (runtime.estimated_peak_bytes, see TrialPlanner). A config without a plan (its batch
    of 1 does not fit) gets a whole GPU: its trial then fails fast with DoesNotFitError and the
    message says why."""
    peak = (config.get("runtime") or {}).get("estimated_peak_bytes")
    if peak is None:
        return {"cpu": float(cpus_per_trial), "gpu": 1.0}
    gpu = gpu_fraction_for(int(peak), gpu_total_bytes, gpu_memory_fraction)
    return {"cpu": float(cpus_per_trial), "gpu": gpu}


@dataclass(frozen=True)
class PlanRow:
    params: dict[str, Any]  # the searched params of this config (dotted key -> value)
    micro_batch: int  # 0 = does not fit
    accumulation: int
    batch_size: int
    estimated_peak: int  # bytes at micro_batch (at 1 when it does not fit)
    budget_bytes: int | None
    gpu_fraction: float | None  # None without a GPU

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
    gpu_total_bytes: int | None,
    param_keys: list[str] | None = None,
) -> list[PlanRow]:
    """One PlanRow per config (plain {"model", "train", "data", ...} dicts). Without a GPU and
    without resources.memory_budget there is no budget: the logical batch is planned as is."""
    from trainables.memory import choose_micro_batch, estimate_trial_memory

    budget = trial_budget_bytes(resources, gpu_total_bytes)
    fraction = float(_get(resources, "gpu_memory_fraction") or DEFAULT_GPU_MEMORY_FRACTION)
    rows = []
    for config in configs:
        train = train_section(config)
        est = estimate_trial_memory(
            config, n_features=n_features, n_classes=n_classes, input_shape=data_shape,
            n_members=member_count(n_folds, train),
        )
        logical = int(train["batch_size"])
        if budget is None:
            micro, accumulation = logical, 1
        else:
            micro, accumulation = choose_micro_batch(est, budget, logical)
        peak = est.peak(max(1, micro))
        gpu = None
        if gpu_total_bytes:
            gpus = _get(resources, "gpus_per_trial", 0)
            gpu = (gpu_fraction_for(peak, gpu_total_bytes, fraction) if micro else 1.0) \
                if gpus == "auto" else float(gpus or 0)
        params = {k: get_dotted(config, k) for k in (param_keys or [])}
        rows.append(PlanRow(params, micro, accumulation, logical, peak, budget, gpu))
    return rows


def _fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def format_plan(rows: list[PlanRow]) -> str:
    """A fixed-width table: one line per config; configs that do not fit say so."""
    keys = list(dict.fromkeys(k for r in rows for k in r.params))
    head = ["#", *keys, "micro", "accum", "est. peak", "budget", "gpu"]
    lines = []
    for i, r in enumerate(rows):
        cells = [str(i), *(str(r.params.get(k)) for k in keys)]
        if r.fits:
            cells += [f"{r.micro_batch}/{r.batch_size}", str(r.accumulation)]
        else:
            cells += ["DOES NOT FIT", "-"]
        gpu = "-" if r.gpu_fraction is None else f"{r.gpu_fraction:g}"
        cells += [_fmt_bytes(r.estimated_peak), _fmt_bytes(r.budget_bytes), gpu]
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
    parser.add_argument(
        "--gpu-memory", default=None, metavar="SIZE",
        help="plan for a GPU of this size, with a unit (e.g. 80GiB), instead of this machine's",
    )


def run(args: argparse.Namespace) -> int:
    """`sweep.py plan SPACE.yaml`: the memory plan of sampled configs, before anything trains.
    Exit 1 when some config does not fit even at micro-batch 1 (a CI check), else 0."""
    from orchestrator.quiet import quiet_logs

    quiet_logs(verbose=False)  # torch's profiler (the LSTM estimate) prints USDT / ERROR lines
    from orchestrator.cluster import gpu_total_bytes
    from orchestrator.sweepfile import load_spec_from_args, parse_size

    gpu_total = parse_size(args.gpu_memory, "--gpu-memory") if args.gpu_memory else None
    spec = load_spec_from_args(args)
    from orchestrator.search import sample_configs
    from trainables.data import prepare_data

    gpu_total = gpu_total or gpu_total_bytes()
    data = prepare_data(spec.base_config()["data"], progress=lambda msg: print(f"data: {msg}"))
    rows = plan_configs(
        sample_configs(spec, args.samples) if spec.search.params else [spec.base_config()],
        data_shape=tuple(data.features.shape[1:]),
        n_features=data.n_features,
        n_classes=data.n_classes,
        n_folds=len(data.folds),
        resources=spec.resources,
        gpu_total_bytes=gpu_total,
        param_keys=spec.param_keys(),
    )
    where = "no GPU: CPU" if gpu_total is None else f"GPU of {gpu_total / 2**30:.1f} GiB"
    print(f"memory plan of {len(rows)} sampled configs of {spec.name} ({where}):")
    print(format_plan(rows))
    return EXIT_DOES_NOT_FIT if any(not r.fits for r in rows) else 0


@dataclass(frozen=True)
class PlannerByData:
    """One TrialPlanner per prepared data (a sweep searching data.* choices prepares one each:
    features and shapes may differ), picked by the sampled config's data section."""

    planners: Mapping[str, TrialPlanner]

    def __call__(self, config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        from trainables.data.prepare import prepared_key

        return self.planners[prepared_key(config["data"])](config)
