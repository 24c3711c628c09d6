"""Memory benchmark: SincNet framings, estimate vs measured peak, and the planner's micro-batch.

    python bench/memory.py            # full run (CPU: a few minutes; needs ~12 GB of RAM)
    python bench/memory.py --quick    # smaller inputs and batches

Every number is measured side by side in this one run, on this machine:
1. The SincNet front-end (trainables/models/sinc_frontend.py) at 4 s of 16 kHz audio: `naive`
   (the reference [batch*frames, 1, 3200] layout), `per_frame` (same function, sinc conv once over
   the waveform) and `shared`; peak bytes of forward+backward (c10 allocator, torch profiler memory
   events, see trainables/memory/measure.py; CUDA: max_memory_allocated) and the wall time of a
   second, unprofiled forward+backward; max |per_frame - naive| on the same weights and input.
2. The fake-tensor estimate vs the measured peak of a training step for every model family.
3. The micro-batch the planner picks for SincNet at logical batch 32 on an 80 GiB budget, 10
   members, vs the memory a fixed batch of 32 needs (both from the estimate).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainables.memory import (  # noqa: E402
    choose_micro_batch,
    estimate_step_memory,
    measure_step_peaks,
)
from trainables.models.sinc_frontend import SincFrontend  # noqa: E402

GIB, MIB = 2**30, 2**20


def _peak_fwd_bwd(module: torch.nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Peak allocator bytes of one forward+backward (params, grads, input included)."""
    from torch.profiler import ProfilerActivity, profile

    base = sum(p.nbytes for p in module.parameters()) + x.nbytes
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = module(x)
        out.float().mean().backward()
        out = out.detach()
    live = peak = 0
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return base + peak, out


def _time_fwd_bwd(module: torch.nn.Module, x: torch.Tensor) -> float:
    module.zero_grad(set_to_none=True)
    start = time.perf_counter()
    module(x).float().mean().backward()
    return time.perf_counter() - start


def table_framings(seconds: float, batches: list[int]) -> str:
    samples = int(seconds * 16_000)
    torch.manual_seed(0)
    modules = {f: SincFrontend(framing=f) for f in ("naive", "per_frame", "shared")}
    modules["per_frame"].load_state_dict(modules["naive"].state_dict())
    rows = [f"SincNet front-end, {seconds:g} s @ 16 kHz ({samples} samples), fwd+bwd, CPU "
            f"(1 thread). Goals: per_frame >= 2x below naive with identical outputs; "
            f"shared >= 15x below naive.",
            f"{'batch':>5} | {'naive MiB':>10} {'per_frame MiB':>13} {'shared MiB':>10} | "
            f"{'naive/pf':>8} {'naive/sh':>8} | {'naive s':>8} {'pf s':>7} {'sh s':>7} | "
            f"{'max|pf-naive|':>13}"]
    for b in batches:
        x = torch.randn(b, samples, generator=torch.Generator().manual_seed(b))
        peaks, secs, outs = {}, {}, {}
        for name, module in modules.items():
            module.zero_grad(set_to_none=True)
            peaks[name], outs[name] = _peak_fwd_bwd(module, x)
            secs[name] = _time_fwd_bwd(module, x)
        diff = (outs["per_frame"] - outs["naive"]).abs().max().item()
        rows.append(
            f"{b:>5} | {peaks['naive'] / MIB:>10.1f} {peaks['per_frame'] / MIB:>13.1f} "
            f"{peaks['shared'] / MIB:>10.1f} | {peaks['naive'] / peaks['per_frame']:>7.2f}x "
            f"{peaks['naive'] / peaks['shared']:>7.2f}x | {secs['naive']:>8.2f} "
            f"{secs['per_frame']:>7.2f} {secs['shared']:>7.2f} | {diff:>13.2e}"
        )
        del outs
    return "\n".join(rows)


FULL_FAMILIES = {
    "cnn_lstm": ({"name": "cnn_lstm"}, 1, (64000,)),
    "sincnet per_frame": ({"name": "sincnet", "framing": "per_frame"}, 1, (16000,)),
    "sincnet shared": ({"name": "sincnet", "framing": "shared"}, 1, (64000,)),
    "transformer": ({"name": "transformer"}, 64, (400, 64)),
    "resnet_lstm": ({"name": "resnet_lstm"}, 64, (400, 64)),
    "vggish_lstm": ({"name": "vggish_lstm"}, 64, (400, 64)),
    # 4 s of wav2vec2/HuBERT base hidden states: 200 frames x 13 layers x 768
    "ssl_head": ({"name": "ssl_head"}, 768, (200, 13, 768)),
}


def table_estimates(quick: bool) -> str:
    from trainables.models import MODELS

    if quick:
        tests = Path(__file__).resolve().parent.parent / "tests" / "trainables" / "memory"
        sys.path.insert(0, str(tests))
        from test_memory import FAMILIES  # tiny configs of every family

        cases = FAMILIES
    else:
        cases = FULL_FAMILIES
    batches = [2, 4]
    missing = sorted(set(MODELS) - {cfg["name"] for cfg, _, _ in cases.values()})
    rows = ["Estimate (fake tensors) vs measured peak of one training step (AdamW, 2 micro-"
            "batches + step, steady state), CPU. Goal: |error| <= 5 % and never under by more "
            "than 2 %.",
            f"{'family':<18} {'input':<10} {'b':>2} {'estimate MiB':>12} {'measured MiB':>12} "
            f"{'error':>7}"]
    for name, (cfg, n_features, shape) in cases.items():
        est = estimate_step_memory(cfg, n_features=n_features, n_classes=4, input_shape=shape)
        spec = {"model_cfg": cfg, "n_features": n_features, "n_classes": 4,
                "input_shape": list(shape)}
        for b, real in zip(batches, measure_step_peaks(spec, batches)):
            err = 100 * (est.peak(b) - real) / real
            rows.append(f"{name:<18} {str(shape):<10} {b:>2} {est.peak(b) / MIB:>12.1f} "
                        f"{real / MIB:>12.1f} {err:>+6.2f}%")
    if missing:
        rows.append(f"NOT COVERED (no config here): {missing}")
    return "\n".join(rows)


def table_plan(seconds: float) -> str:
    samples, members, logical = int(seconds * 16_000), 10, 32
    rows = [f"Planner: SincNet at {seconds:g} s, logical batch {logical}, {members} members "
            f"(estimates; nothing allocated). 80 GiB = the brief's budget, 24 GiB for contrast.",
            f"{'framing':<10} {'budget':>7} {'GiB/sample':>10} {'fixed GiB':>9} | "
            f"{'fixed b=32 needs':>16} | {'micro':>5} {'accum':>5} {'peak at micro':>13}"]
    for budget in (80 * GIB, 24 * GIB):
        for framing in ("naive", "per_frame", "shared"):
            est = estimate_step_memory(  # planned for a GPU: the CUDA target's terms
                {"name": "sincnet", "framing": framing}, n_features=1, n_classes=4,
                input_shape=(samples,), n_members=members, target="cuda",
            )
            micro, accum = choose_micro_batch(est, budget, logical)
            at_micro = f"{est.peak(micro) / GIB:>9.2f} GiB" if micro else "DOES NOT FIT"
            rows.append(
                f"{framing:<10} {budget / GIB:>3.0f} GiB {est.per_sample_bytes / GIB:>10.3f} "
                f"{est.fixed_bytes / GIB:>9.2f} | {est.peak(logical) / GIB:>12.2f} GiB | "
                f"{micro:>5} {accum:>5} {at_micro:>13}"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs and batches")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seconds, batches = (1.0, [1, 2]) if args.quick else (4.0, [1, 2, 4, 8])
    print(f"torch {torch.__version__}, device cpu, {'quick' if args.quick else 'full'} run\n")
    print("(1) " + table_framings(seconds, batches), end="\n\n", flush=True)
    print("(2) " + table_estimates(args.quick), end="\n\n", flush=True)
    print("(3) " + table_plan(4.0), flush=True)


if __name__ == "__main__":
    main()
