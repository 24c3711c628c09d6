"""Part 2: SincNet at the research's reference size, three framings, fp32 and bf16."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import torch

from bench.gpu_check.common import (
    DRY_SINCNET,
    N_CLASSES,
    RAW_4S,
    PartResult,
    Run,
    _free,
    _gib,
    _pct,
    _peaks,
    _start_peaks,
    _sync,
)


def part2_sincnet(run: Run) -> PartResult:
    from trainables.memory import (
        estimate_step_memory,
        is_oom,
        make_inputs,
        make_optimizer,
        run_steps,
    )
    from trainables.models import build_model

    batch, samples, timed = (2, 4000, 1) if run.dry_run else (32, RAW_4S, 3)
    base = DRY_SINCNET if run.dry_run else {"name": "sincnet"}
    probe = build_model(dict(base), n_features=1, n_classes=N_CLASSES).frontend
    frames, win, shift = probe.n_frames(samples), probe.win, probe.shift
    result = PartResult(
        "2", f"SincNet, batch {batch} x {samples} samples -> [{batch}, {frames}, {win}] frames "
             f"(shift {shift}), one training step (fwd + bwd + AdamW)",
        "per_frame >= 2x below naive in peak memory, identical outputs; step times side by side")
    rows = []
    for framing in ("naive", "per_frame", "shared"):
        cfg = {**base, "framing": framing}
        # bf16 autocast is what a CUDA trial runs (train.amp: auto); on a CPU the trainer runs
        # fp32, and oneDNN has no bf16 LSTM on CPUs without AVX-512 BF16 / AMX
        for precision in ("fp32", "bf16") if run.cuda else ("fp32",):
            amp_dtype = torch.bfloat16 if precision == "bf16" else None
            # fp32 only: a bf16 trace of this model takes several times longer (part 1 has
            # bf16 estimates), and this part's budget goes to the GPU steps. Dry-run: naive only
            # (part 3 reuses it); each trace costs seconds on a CPU and tests nothing new here.
            wanted = amp_dtype is None and (not run.dry_run or framing == "naive")
            estimate = estimate_step_memory(
                cfg, n_features=1, n_classes=N_CLASSES, input_shape=(samples,)
            ).peak(batch) if wanted else None
            alloc0, reserved0 = _start_peaks(run)
            torch.manual_seed(0)
            model = build_model(cfg, n_features=1, n_classes=N_CLASSES).to(run.device).train()
            opt = make_optimizer(model, "adamw")
            inputs = make_inputs((samples,), batch, N_CLASSES, run.device, real=True)
            seconds, outcome = float("nan"), "ran"
            try:
                # warm-up: optimizer state, cuDNN algorithm choice, allocator blocks
                run_steps(model, opt, inputs, amp_dtype=amp_dtype, steps=1, micro=1)
                _sync(run)
                start = time.perf_counter()
                run_steps(model, opt, inputs, amp_dtype=amp_dtype, steps=timed, micro=1)
                _sync(run)
                seconds = (time.perf_counter() - start) / timed
            except RuntimeError as exc:  # an OOM is a finding of this row, not of the part
                if not is_oom(exc):
                    raise
                outcome = "OOM"
            alloc, reserved = _peaks(run, alloc0, reserved0)
            rows.append({
                "framing": framing, "precision": precision, "estimate_GiB": _gib(estimate),
                "allocated_GiB": _gib(alloc), "reserved_GiB": _gib(reserved),
                "error_%": float("nan") if estimate is None else _pct(estimate, alloc),
                "step_s": round(seconds, 4), "samples_per_s": round(batch / seconds, 1),
                "outcome": outcome,
            })
            del model, opt, inputs
            _free(run)
    table = pd.DataFrame(rows)
    result.table = table
    fp32 = table[table.precision == "fp32"].set_index("framing")
    if run.cuda:
        ratio = fp32.loc["naive", "allocated_GiB"] / fp32.loc["per_frame", "allocated_GiB"]
        result.notes.append(f"naive / per_frame peak (fp32): {ratio:.2f}x")
        result.extra["naive_over_per_frame"] = float(ratio)
    diff, scale = _framing_difference(run, base, batch, samples)
    result.notes.append(f"max |per_frame - naive| logits (fp32, eval, same weights): {diff:.3e} "
                        f"(max |logit| {scale:.3e})")
    result.extra["max_abs_diff_per_frame_naive"] = diff
    result.notes.append("the estimate assumes 2 micro-batches per step (one set of gradients live "
                        "during the second forward); the timed step is 1 micro-batch")
    # same function by construction: only rounding may differ (cuDNN picks other conv algorithms
    # for the two layouts, and TF32 convolutions are on by default on CUDA)
    tolerance = 1e-4 * max(1.0, scale) if not run.cuda else 1e-2 * max(1.0, scale)
    result.checks["per_frame == naive"] = bool(diff <= tolerance)
    return result


def _framing_difference(
    run: Run, base: dict[str, Any], batch: int, samples: int
) -> tuple[float, float]:
    from trainables.models import build_model

    torch.manual_seed(0)
    naive = build_model({**base, "framing": "naive"}, n_features=1, n_classes=N_CLASSES)
    per_frame = build_model({**base, "framing": "per_frame"}, n_features=1, n_classes=N_CLASSES)
    per_frame.load_state_dict(naive.state_dict())
    x = torch.randn(batch, samples, generator=torch.Generator().manual_seed(1)).to(run.device)
    lengths = torch.full((batch,), samples, dtype=torch.long, device=run.device)
    with torch.no_grad():
        a = naive.to(run.device).eval()(x, lengths)
        del naive
        _free(run)
        b = per_frame.to(run.device).eval()(x, lengths)
    return float((a - b).abs().max()), float(a.abs().max())
