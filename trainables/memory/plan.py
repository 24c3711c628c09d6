"""The micro-batch of a trial: the largest that fits its memory budget, plus the gradient
accumulation that keeps the logical batch (`plan_micro_batch`, on the driver: runner.py puts the
plan in every trial's config; trainable.py re-plans only when a config arrives without one)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainables.config import member_count
from trainables.errors import DoesNotFitError
from trainables.frozen import thaw
from trainables.memory.estimate import MemoryEstimate, estimate_trial_memory
from trainables.trial_config import TrialConfig, as_trial_config

if TYPE_CHECKING:  # annotations only: the data layer imports soundfile, which a bare GPU
    from trainables.data.base import PreparedData  # machine running bench/gpu_check/ lacks


def choose_micro_batch(
    estimate: MemoryEstimate, budget_bytes: int, logical_batch: int
) -> tuple[int, int]:
    """(micro_batch, accumulation): the largest micro-batch <= logical_batch whose peak fits the
budget, and accumulation = ceil(logical_batch / micro_batch), the fewest micro-batches that
    reach the logical batch; then the micro-batch that actually runs: the step splits the
    logical batch into `accumulation` near-equal chunks (trainables/batching.py micro_chunks), so
    the planned micro-batch is ceil(logical_batch / accumulation), never more than the largest
    that fits (32 with at most 31 fitting: 2 chunks of 16, not 31 + 1). (0, 0) when even 1 does
    not fit. The peak is increasing in b, so a binary search is exact."""
    if estimate.peak(1) > budget_bytes:
        return 0, 0
    lo, hi = 1, max(1, logical_batch)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate.peak(mid) <= budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    accumulation = math.ceil(max(1, logical_batch) / lo)
    return math.ceil(max(1, logical_batch) / accumulation), accumulation


@dataclass(frozen=True)
class MemoryPlan:
    micro_batch: int
    accumulation: int
    estimated_peak: int  # bytes at micro_batch
    budget_bytes: int
    estimate: MemoryEstimate


def _gib(n: float) -> str:
    """GiB, or bytes below 1 MiB (a budget of 1KB must not read as 0.00 GiB)."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**20 else f"{int(n):,} B"


def plan_micro_batch(config: TrialConfig | Mapping[str, Any], data: PreparedData,
                     budget_bytes: int) -> MemoryPlan:
    """The micro-batch and accumulation of a trial (its TrialConfig, or a plain
    {"model", "train", "data", ...} built into one)."""
    return plan_for_shape(config, input_shape=tuple(data.features.shape[1:]),
                          n_features=data.n_features, n_classes=data.n_classes,
                          n_folds=len(data.folds), budget_bytes=budget_bytes)


def plan_for_shape(
    config: TrialConfig | Mapping[str, Any],
    *,
    input_shape: tuple[int, ...],
    n_features: int,
    n_classes: int,
    n_folds: int,
    budget_bytes: int,
) -> MemoryPlan:
    """`plan_micro_batch` from the data's shape alone (the driver plans without the tensors).
    DoesNotFitError when even a micro-batch of 1 does not fit."""
    trial = as_trial_config(config)
    n_members = member_count(n_folds, trial.train)
    est = estimate_for_shape(trial, input_shape=input_shape, n_features=n_features,
                             n_classes=n_classes, n_folds=n_folds)
    logical = int(trial.train.batch_size)
    micro, accumulation = choose_micro_batch(est, int(budget_bytes), logical)
    if micro == 0:
        raise DoesNotFitError(
            # the numbers first: the store keeps a one-line reason, cut at REASON_CHARS
            f"estimated peak {_gib(est.peak(1))} at micro-batch 1 > budget "
            f"{_gib(budget_bytes)} ({n_members} members: params {_gib(est.params_bytes)}, "
            f"optimizer {_gib(est.optimizer_bytes)} each, activations "
            f"{_gib(est.per_sample_bytes)}/sample; input {tuple(input_shape)}): model "
            f"{thaw(trial.model)} does not fit the memory budget"
        )
    return MemoryPlan(micro, accumulation, est.peak(micro), int(budget_bytes), est)


def estimate_as_run(config: TrialConfig | Mapping[str, Any], data: PreparedData) -> int:
    """The estimated peak bytes of a trial at the micro-batch it runs without a plan (the sweep
    file's train.micro_batch, else the logical batch): what `sweep.py plan` prints for a config
    without a budget (orchestrator/planner.py: choose_target)."""
    trial = as_trial_config(config)
    est = estimate_for_shape(trial, input_shape=tuple(data.features.shape[1:]),
                             n_features=data.n_features, n_classes=data.n_classes,
                             n_folds=len(data.folds))
    return int(est.peak(int(trial.train.micro_batch or trial.train.batch_size)))


def estimate_for_shape(trial: TrialConfig, *, input_shape: tuple[int, ...], n_features: int,
                       n_classes: int, n_folds: int, on_gpu: bool = False) -> MemoryEstimate:
    """estimate_trial_memory for a trial on data of this shape, with its members counted from
    the folds and its seeds (config.member_count): the one estimate the driver's plan, `plan`,
    the trial's own re-plan and its stored estimate all use."""
    return estimate_trial_memory(
        trial, n_features=n_features, n_classes=n_classes, input_shape=tuple(input_shape),
        n_members=member_count(n_folds, trial.train), on_gpu=on_gpu)
