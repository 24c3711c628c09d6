"""Part 3: a capped budget, the planner's micro-batches, a real OOM recovered by halving."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from bench.gpu_check.common import (
    DRY_SINCNET,
    GIB,
    GPU_MEMORY_FRACTION,
    MIB,
    N_CLASSES,
    RAW_4S,
    PartResult,
    Run,
    _free,
    _gib,
    _peaks,
    _start_peaks,
)


class SimulatedCap:
    """Dry-run stand-in for the CUDA allocator's cap (the CPU has none): a forward pre-hook that
    raises torch.OutOfMemoryError when the estimated peak at the incoming batch exceeds `cap`."""

    def __init__(self, peak: Callable[[int], int], cap: int) -> None:
        self.peak, self.cap = peak, cap

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        b = int(args[0].shape[0])
        if self.peak(b) > self.cap:
            raise torch.OutOfMemoryError(
                f"simulated: out of memory at micro-batch {b} (estimated peak "
                f"{self.peak(b) / MIB:.1f} MiB > cap {self.cap / MIB:.1f} MiB)")


def part3_capped(run: Run) -> PartResult:
    from trainables.batching import MicroBatch, micro_chunks
    from trainables.errors import TrainingError
    from trainables.memory import choose_micro_batch, estimate_step_memory, is_oom, retry_on_oom
    from trainables.models import build_model

    logical = 32
    cfg = {**DRY_SINCNET, "framing": "naive"} if run.dry_run else {"name": "sincnet",
                                                                    "framing": "naive"}
    samples = 4000 if run.dry_run else RAW_4S
    est = estimate_step_memory(cfg, n_features=1, n_classes=N_CLASSES, input_shape=(samples,))
    if run.dry_run:  # a cap the planner answers with micro-batch 8 (accumulation 4)
        cap = int((est.peak(8) + est.peak(9)) / 2 / GPU_MEMORY_FRACTION)
    else:
        total = torch.cuda.get_device_properties(run.device).total_memory
        cap = min(24 * GIB, int(0.9 * total))
    budget = int(cap * GPU_MEMORY_FRACTION)  # what the planner plans against, as in a trial
    micro, accumulation = choose_micro_batch(est, budget, logical)
    result = PartResult(
        "3", f"SincNet naive, {samples} samples, logical batch {logical}, under a capped budget "
             f"({'SIMULATED cap: dry-run, CPU' if run.dry_run else 'CUDA memory fraction'})",
        "fixed 32 runs out of memory; the planner's micro x accumulation fits; a real OOM mid-run "
        "is recovered by halving")
    torch.manual_seed(0)
    model = build_model(cfg, n_features=1, n_classes=N_CLASSES).to(run.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(logical, samples, generator=gen).to(run.device)
    lengths = torch.full((logical,), samples, dtype=torch.long, device=run.device)
    y = (torch.arange(logical) % N_CLASSES).to(run.device)

    def backward(size: int) -> float:
        """The logical batch in micro-batches of `size` (trainables/members.py Member.backward)."""
        total = 0.0
        for chunk in micro_chunks(torch.arange(logical), size):
            chunk = chunk.to(run.device)
            loss = F.cross_entropy(model(x[chunk], lengths[chunk]).float(), y[chunk],
                                   reduction="sum") / logical
            loss.backward()
            total += float(loss.detach())
        return total

    def before_retry() -> None:  # what Member._logical_step does before the next attempt
        opt.zero_grad(set_to_none=True)
        _free(run)

    hook: SimulatedCap | None = None
    handle = None
    if run.dry_run:
        hook = SimulatedCap(est.peak, cap)
        handle = model.register_forward_pre_hook(hook)
    else:
        set_cap(run, cap)
    rows: list[dict[str, Any]] = []
    mb = MicroBatch(micro)

    def retried_step(phase: str, cap_now: int, epoch: int) -> list[dict[str, Any]]:
        """One logical step through retry_on_oom from mb.size: its row, and the halvings."""
        before = len(mb.events)
        alloc0, reserved0 = _start_peaks(run)
        outcome = "ran"
        try:
            retry_on_oom(backward, mb, member=0, epoch=epoch, phase="train",
                         before_retry=before_retry)
            opt.step()
        except TrainingError as exc:  # out of memory even at micro-batch 1: a finding
            outcome = "FAILED: " + str(exc).splitlines()[0][:90]
        opt.zero_grad(set_to_none=True)
        alloc, reserved = _peaks(run, alloc0, reserved0)
        events = mb.events[before:]
        if outcome == "ran" and epoch == 2:
            outcome = "recovered" if events else "no OOM"
        rows.append(_cap_row(phase, cap_now, logical, mb.size, est.peak(mb.size), alloc,
                             reserved, outcome, events))
        return events

    try:
        # (a) the fixed batch of 32, no retry: expected to run out of memory
        alloc0, reserved0 = _start_peaks(run)
        outcome = "ran"
        try:
            backward(logical)
            opt.step()
        except RuntimeError as exc:
            if not is_oom(exc):
                raise
            outcome = "OOM: " + str(exc).splitlines()[0][:90]
        opt.zero_grad(set_to_none=True)
        alloc, reserved = _peaks(run, alloc0, reserved0)
        rows.append(_cap_row("(a) fixed batch 32", cap, logical, logical, est.peak(logical),
                             alloc, reserved, outcome, []))
        _free(run)
        # (b) the planner's micro-batch x accumulation, through the retry helper (a halving here
        # would mean the estimate was low: it is recorded, not hidden)
        planned_events = retried_step("(b) planner micro x accum", cap, epoch=1)
        # (c) the cap lowered mid-run, between peak(micro // 4) and peak(micro // 2): the next
        # step runs out of memory at `micro` and `micro // 2`, then fits
        low = max(1, mb.size // 4)
        cap2 = (est.peak(low) + est.peak(max(low, mb.size // 2))) // 2
        if hook is not None:
            hook.cap = cap2
        else:
            set_cap(run, cap2)
        lowered_events = retried_step("(c) cap lowered mid-run", cap2, epoch=2)
    finally:
        if handle is not None:
            handle.remove()
        if run.cuda:
            set_cap(run, None)
    result.table = pd.DataFrame(rows)
    fixed_oom = rows[0]["outcome"].startswith("OOM")
    result.notes += [
        f"estimate: {est.per_sample_bytes / MIB:.1f} MiB/sample + {est.fixed_bytes / MIB:.1f} "
        f"MiB; planner budget = cap x {GPU_MEMORY_FRACTION} = {budget / GIB:.3f} GiB -> micro "
        f"{micro}, accumulation {accumulation}",
        ("(a) ran out of memory, as the estimate says" if fixed_oom
         else "(a) did NOT run out of memory")
        + f" (estimated {est.peak(logical) / GIB:.2f} GiB vs cap {cap / GIB:.2f} GiB)",
        f"(c) micro-batch sizes recorded by MicroBatch.events: {_events_text(lowered_events)}",
        "steps in fp32: the precision of the estimate (a train.amp: auto trial is planned with "
        "it too); chunk = the largest micro-batch micro_chunks really runs",
    ]
    if planned_events:
        result.notes.append(f"(b) needed halvings: the estimate was low ({planned_events})")
    if run.cuda and rows[1]["allocated_GiB"] > cap / GIB:
        result.notes.append("(b) allocated more than the cap: check the measurement")
    result.checks["(c) OOM recovered by halving"] = rows[-1]["outcome"] == "recovered"
    result.extra.update(cap_bytes=cap, lowered_cap_bytes=cap2, planned_micro=micro,
                        planned_accumulation=accumulation, planned_events=planned_events,
                        lowered_events=lowered_events, fixed_batch_oom=fixed_oom)
    return result


def set_cap(run: Run, cap: int | None) -> None:
    """Cap this process' CUDA memory at `cap` bytes (None: the whole GPU), then release the
    cached blocks so that the new cap applies to the next allocations."""
    total = torch.cuda.get_device_properties(run.device).total_memory
    torch.cuda.set_per_process_memory_fraction(1.0 if cap is None else cap / total, run.device)
    _free(run)


def _events_text(events: list[dict[str, Any]]) -> str:
    return ", ".join(f"{e['from']}->{e['to']}" for e in events) or "none"


def _cap_row(phase: str, cap: int, logical: int, micro: int, estimate: int,
             alloc: int | None, reserved: int | None, outcome: str,
             events: list[dict[str, Any]]) -> dict[str, Any]:
    """micro = MicroBatch.size; micro_chunks splits the logical batch into `accumulation`
    near-equal chunks, the largest of which (`chunk`) is what a forward really sees."""
    accumulation = math.ceil(logical / micro)
    return {"phase": phase, "cap_GiB": _gib(cap), "micro": micro, "accumulation": accumulation,
            "chunk": math.ceil(logical / accumulation), "estimate_GiB": _gib(estimate),
            "allocated_GiB": _gib(alloc), "reserved_GiB": _gib(reserved),
            "halvings": _events_text(events), "outcome": outcome}
