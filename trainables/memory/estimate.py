"""Peak-memory estimate of one training step, on fake tensors (no GPU, no allocation).

`estimate_step_memory` traces one training step on fake tensors (trainables/memory/trace.py) at two
batch sizes and fits, for every allocation of the step, its live bytes as `a + s * b`. The peak at
any batch size is the upper envelope of those lines, `max_i(a_i + s_i * b)` (`lines`), exact for
models whose op sequence does not depend on the data; `fixed_bytes + per_sample_bytes * b` is the
line that dominates at large batches (docs/design.md): fixed counts every member's parameters and
optimizer state, per_sample the activations of the one member stepping. `measure_step_peak`
(trainables/memory/measure.py) measures the same step for real; plan.py turns an estimate into a
micro-batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from torch import nn

from trainables.frozen import thaw
from trainables.memory.trace import Trace, trace_step
from trainables.trial_config import TrialConfig, as_trial_config

TRACE_BATCHES = (2, 4)  # batch norm cannot train on a batch of 1; the peak is linear in b


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of one training step as a function of the micro-batch b (see module docstring).

    params_bytes (parameters and buffers), grads_bytes and optimizer_bytes are one member's;
    `lines` are one member's (intercept, slope) pairs whose maximum is its peak; the other
    n_members - 1 members add their parameters and optimizer state (their gradients are freed).
    """

    fixed_bytes: int
    per_sample_bytes: int
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activation_bytes_per_sample: int
    n_members: int = 1
    lines: tuple[tuple[int, int], ...] = ()

    @property
    def other_members_bytes(self) -> int:
        return (self.n_members - 1) * (self.params_bytes + self.optimizer_bytes)

    def peak(self, b: int) -> int:
        """Estimated peak bytes of a training step at micro-batch `b`."""
        lines = self.lines or ((self.fixed_bytes - self.other_members_bytes,
                                self.per_sample_bytes),)
        return int(max(a + s * b for a, s in lines)) + self.other_members_bytes

    def with_members(self, n_members: int) -> MemoryEstimate:
        extra = (n_members - self.n_members) * (self.params_bytes + self.optimizer_bytes)
        return replace(self, n_members=n_members, fixed_bytes=self.fixed_bytes + extra)


def upper_envelope(
    lines: list[tuple[int, int]], b_min: float = 1.0
) -> tuple[tuple[int, int], ...]:
    """The lines (intercept, slope) that are the maximum somewhere on [b_min, inf), by slope."""
    best: dict[int, int] = {}
    for a, s in lines:
        best[s] = max(a, best.get(s, a))
    hull: list[tuple[int, int]] = []
    for s, a in sorted(best.items()):
        while hull:
            a0, s0 = hull[-1]
            cross = (a0 - a) / (s - s0)  # where the new, steeper line overtakes the last one
            left = (hull[-2][0] - a0) / (s0 - hull[-2][1]) if len(hull) > 1 else -math.inf
            if cross <= max(left, b_min):
                hull.pop()
            else:
                break
        hull.append((a, s))
    return tuple(hull)


def fit_traces(t1: Trace, t2: Trace, n_members: int = 1) -> MemoryEstimate:
    """Pair the two traces allocation by allocation and fit `a + s * b` to each (see docstring)."""
    db = t2.batch - t1.batch
    if len(t1.timeline) == len(t2.timeline):
        raw = [
            (l2 - l1, l1 * t2.batch - l2 * t1.batch) for l1, l2 in zip(t1.timeline, t2.timeline)
        ]
        pairs = [(num // db, ds // db) for ds, num in raw]  # (a, s); exact when linear
    else:  # data-dependent ops: fall back to the two peaks
        s = (t2.peak - t1.peak) // db
        pairs = [(t1.peak - s * t1.batch, s)]
    lines = upper_envelope(pairs)
    a, s = lines[-1]  # the steepest: dominant at large batches
    est = MemoryEstimate(
        fixed_bytes=a,
        per_sample_bytes=s,
        params_bytes=t1.params_bytes,
        grads_bytes=t1.grads_bytes,
        optimizer_bytes=t1.optimizer_bytes,
        activation_bytes_per_sample=s,
        n_members=1,
        lines=lines,
    )
    return est.with_members(n_members)


def estimate_module_memory(
    factory: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    *,
    n_classes: int,
    n_members: int = 1,
    optimizer: str = "adamw",
    amp: bool = False,
    batches: tuple[int, int] = TRACE_BATCHES,
    target: str = "cpu",
) -> MemoryEstimate:
    """`estimate_step_memory` for any module built by `factory` (forward(x, lengths))."""
    t1, t2 = (
        trace_step(
            factory, tuple(input_shape), b, n_classes=n_classes, optimizer=optimizer, amp=amp,
            target=target,
        )
        for b in batches
    )
    return fit_traces(t1, t2, n_members)


_CACHE: dict[str, MemoryEstimate] = {}


def estimate_step_memory(
    model_cfg: dict[str, Any],
    *,
    n_features: int,
    n_classes: int,
    input_shape: tuple[int, ...],
    n_members: int = 1,
    optimizer: str = "adamw",
    amp: bool = False,
    target: str = "cpu",
) -> MemoryEstimate:
    """Peak memory of one training step of `model_cfg` at the longest input, on fake tensors,
    for the device `target` ("cpu": oneDNN's kernels as measured; "cuda": with the cuDNN terms
    of memory/cuda_terms.py).

    input_shape is one sample: (S,) raw audio or (T, F) frames. Cached per arguments.
    """
    from trainables.models import build_model

    key = repr((sorted(model_cfg.items()), n_features, n_classes, tuple(input_shape), optimizer,
                amp, target))
    if key not in _CACHE:
        factory = partial(build_model, dict(model_cfg), n_features=n_features, n_classes=n_classes)
        _CACHE[key] = estimate_module_memory(
            factory, input_shape, n_classes=n_classes, optimizer=optimizer, amp=amp, target=target
        )
    return _CACHE[key].with_members(n_members)


def calibrate(estimate: MemoryEstimate, measured: dict[int, int]) -> MemoryEstimate:
    """Correct an estimate with measured peaks {batch: bytes} of one member (e.g. one real CUDA
    step, torch.cuda.max_memory_allocated): one point shifts every line by the difference (the
    allocator's and cuBLAS/cuDNN workspaces are per step, not per sample); two points replace the
    lines by the measured line. Never lowers the estimate below the measurement."""
    one = estimate.with_members(1)
    if len(measured) >= 2:
        (b1, p1), (b2, p2) = sorted(measured.items())[:2]
        s = (p2 - p1) // (b2 - b1)
        lines: tuple[tuple[int, int], ...] = ((p1 - s * b1, s),)
    else:
        ((b, p),) = measured.items()
        shift = p - one.peak(b)
        base = one.lines or ((one.fixed_bytes, one.per_sample_bytes),)
        lines = tuple((a + shift, s) for a, s in base)
    a, s = lines[-1]
    out = replace(
        one, lines=lines, fixed_bytes=a, per_sample_bytes=s, activation_bytes_per_sample=s
    )
    return out.with_members(estimate.n_members)


def with_frozen_model(est: MemoryEstimate, frozen: MemoryEstimate, copies: int) -> MemoryEstimate:
    """`est` plus a frozen model beside each of `copies` members (a distillation teacher): its
    parameters once per copy, and per sample at most its TRAINING-step activations (a forward
    under no_grad keeps less, so this errs on the safe side)."""
    extra = copies * frozen.params_bytes
    per_sample = frozen.activation_bytes_per_sample
    return replace(
        est,
        fixed_bytes=est.fixed_bytes + extra,
        per_sample_bytes=est.per_sample_bytes + per_sample,
        lines=tuple((a + extra, s + per_sample) for a, s in est.lines),
    )


def estimate_trial_memory(
    config: TrialConfig | Mapping[str, Any],
    *,
    n_features: int,
    n_classes: int,
    input_shape: tuple[int, ...],
    n_members: int,
    on_gpu: bool = False,
) -> MemoryEstimate:
    """The peak-memory estimate of one trial's training step: its model with every member's
    parameters and optimizer state, plus a distillation teacher per member when there is one.
    `on_gpu`: planned for a CUDA device, where `train.amp: auto` means autocast (optim.py
    choose_precision), so the step is estimated in reduced precision, as it runs, and with the
    cuDNN terms (target "cuda"); on the CPU only `amp: on` autocasts. `config`: the trial's
    TrialConfig (a plain dict is built into one here)."""
    trial = as_trial_config(config)
    amp = trial.train.amp
    common = dict(
        n_features=n_features,
        n_classes=n_classes,
        input_shape=tuple(input_shape),
        optimizer=trial.train.optimizer,
        amp=amp == "on" or (on_gpu and amp == "auto"),
        target="cuda" if on_gpu else "cpu",
    )
    est = estimate_step_memory(thaw(trial.model), n_members=n_members, **common)
    teacher = (trial.distill or {}).get("teacher_model")
    if teacher:
        est = with_frozen_model(est, estimate_step_memory(thaw(teacher), **common), n_members)
    return est
