"""Memory-aware batch sizing and GPU packing of the trials of a sweep (DESIGN.md).

- Budget of a trial (`trial_budget_bytes`): `resources.memory_budget` (bytes) when the sweep file
  sets it (CPU too), else the GPU's memory x `resources.gpu_memory_fraction` x the trial's GPU
  share (a whole GPU's worth under `gpus_per_trial: auto`, see below). The runner passes it to
  every trial as config["runtime"]["memory_budget"]; the trial plans its micro-batch with
  trainables.memory.plan_micro_batch (the largest micro-batch whose estimated peak fits, plus
  gradient accumulation up to train.batch_size).
- `gpus_per_trial: auto` (`resources_for_config`, the callable of tune.with_resources): plan the
  micro-batch against a whole GPU's budget, then ask Ray for the GPU fraction that the estimated
  peak at that micro-batch needs, rounded up to 1/8. The trial plans the same micro-batch (same
  estimate, same budget), so its peak stays inside its fraction: small trials pack several to a
  GPU, SincNet per_frame gets a whole one. Estimates are cached per (model config, input shape).
- `plan_configs` / `format_plan`: the table `sweep.py plan SPACE.yaml` prints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.dotted import get_dotted
from trainables.config import TRAIN_DEFAULTS
from trainables.memory import choose_micro_batch, estimate_trial_memory

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


def _train(config: Mapping[str, Any]) -> dict[str, Any]:
    return {**TRAIN_DEFAULTS, **config.get("train", {})}


def resources_for_config(
    config: Mapping[str, Any],
    *,
    data_shape: tuple[int, ...],
    n_features: int,
    n_classes: int,
    n_members: int,
    cpus_per_trial: float,
    gpu_total_bytes: int,
    gpu_memory_fraction: float = DEFAULT_GPU_MEMORY_FRACTION,
) -> dict[str, float]:
    """{"cpu": cpus_per_trial, "gpu": fraction} for one trial's config (see module docstring).
    A config whose batch of 1 does not fit gets a whole GPU (its trial then fails fast with
    DoesNotFitError and the message says why)."""
    train = _train(config)
    est = estimate_trial_memory(
        dict(config), n_features=n_features, n_classes=n_classes, input_shape=data_shape,
        n_members=n_members,
    )
    budget = int(gpu_total_bytes * gpu_memory_fraction)
    micro, _ = choose_micro_batch(est, budget, int(train["batch_size"]))
    if micro == 0:
        return {"cpu": float(cpus_per_trial), "gpu": 1.0}
    gpu = gpu_fraction_for(est.peak(micro), gpu_total_bytes, gpu_memory_fraction)
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
    budget = trial_budget_bytes(resources, gpu_total_bytes)
    fraction = float(_get(resources, "gpu_memory_fraction") or DEFAULT_GPU_MEMORY_FRACTION)
    rows = []
    for config in configs:
        train = _train(config)
        est = estimate_trial_memory(
            config, n_features=n_features, n_classes=n_classes, input_shape=data_shape,
            n_members=max(1, n_folds) * max(1, len(train["seeds"])),
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
