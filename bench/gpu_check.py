"""GPU check (issue 16): one short command that measures sersweep's GPU paths, one table per part.

    python bench/gpu_check.py                         # every part on CUDA (<= 7 min, one H200)
    python bench/gpu_check.py --dry-run               # every part at tiny sizes on the CPU
    python bench/gpu_check.py --parts 1,2,5 --json gpu_check.json
    python bench/gpu_check.py --parts 5 --device cpu  # the fusion prototype, full size, CPU

1. The planner's estimate vs CUDA max_memory_allocated / max_memory_reserved of one training step
   (trainables.memory.run_steps: 2 micro-batches + AdamW, twice), every family, two batch sizes,
   fp32 and bf16 autocast; goal |error| <= 5 % on allocated. Then calibrated with one real step at
   the smaller batch (trainables.memory.calibrate) and checked at the larger one. Each measurement
   runs in a fresh process (unless --in-process): cuBLAS/cuDNN workspaces are paid once per
   process, as in a trial.
2. SincNet at the research's reference: 4 s at 16 kHz, 200 ms windows, 10 ms shift, batch 32:
   naive / per_frame / shared, fp32 and bf16 autocast: peak memory and step time, and
   max |per_frame - naive| on the same weights and input.
3. Under a capped budget (torch.cuda.set_per_process_memory_fraction, 24 GiB): a fixed batch of
   32 naive runs out of memory, the planner's micro-batch x accumulation runs, and the cap lowered
   mid-run gives a real CUDA OOM that trainables.memory.retry_on_oom (the training loop's retry)
   recovers by halving; the sizes it went through are recorded.
4. Trials per GPU: small trials through a real Ray Tune sweep (orchestrator.runner.run_sweep)
   with gpus_per_trial: auto vs one trial at a time (gpus_per_trial: 1). Without Ray or Optuna
   the part prints "not run: Ray missing" and the other parts still run.
5. Fusion prototype: M members (folds x seeds) of the default Transformer trained one after
   another vs as one fused computation (torch.func.stack_module_state + functional_call + vmap,
   one fused/foreach AdamW over the stacked parameters, grad clipping per member); member-steps
   per second and their ratio; numerical check: same init and batches give the same losses and
   updated parameters.
tests: the `gpu`-marked tests (pytest -m gpu): which ran, which passed.

--dry-run runs every part at tiny sizes on the CPU and makes no CUDA call: part 1 measures CPU
peaks (trainables.memory.measure_in_process; no "reserved" there), part 3 SIMULATES the cap (a
forward pre-hook raises torch.OutOfMemoryError when the estimated peak exceeds it; the retry path
is the real one), part 4 runs a real Ray sweep of CPU trials (concurrency 2 vs 1) and shows the GPU
shares `auto` would ask for on a 141 GiB GPU, part 5 runs M = 1, 2 with the numerical check.
Exit status 0 when every part ran and every check held, else 1. Project modules are imported
inside the parts: a part whose imports are missing on the GPU machine fails alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/gpu_check.py` puts bench/ first on sys.path, where a bench script named like a
# standard-library module would shadow it: the repository root goes there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import copy  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GIB, MIB = 2**30, 2**20
N_CLASSES = 4
GOAL_ERROR_PCT = 5.0
PARTS = ("1", "2", "3", "4", "5", "tests")
# Seconds each part may take in the full run on one H200 (7 minutes in all); printed beside the
# measured wall time so that a part that outgrows its share shows.
BUDGET_S = {"1": 90, "2": 45, "3": 45, "4": 150, "5": 45, "tests": 30}
GPU_MEMORY_FRACTION = 0.9  # the planner's default resources.gpu_memory_fraction
RAW_4S = 64_000  # 4 s at 16 kHz

# variant -> (model config, n_features, one sample's input shape): bench/memory.py's full sizes
FULL_FAMILIES: dict[str, tuple[dict[str, Any], int, tuple[int, ...]]] = {
    "cnn_lstm": ({"name": "cnn_lstm"}, 1, (RAW_4S,)),
    "sincnet per_frame": ({"name": "sincnet", "framing": "per_frame"}, 1, (16_000,)),
    "sincnet shared": ({"name": "sincnet", "framing": "shared"}, 1, (RAW_4S,)),
    "transformer": ({"name": "transformer"}, 64, (400, 64)),
    "resnet_lstm": ({"name": "resnet_lstm"}, 64, (400, 64)),
    "vggish_lstm": ({"name": "vggish_lstm"}, 64, (400, 64)),
    # 4 s of wav2vec2/HuBERT base hidden states: 200 frames x 13 layers x 768
    "ssl_head": ({"name": "ssl_head"}, 768, (200, 13, 768)),
}
# A tiny SincNet for the dry-run of parts 1-3 (0.25 s, 50 ms windows, 10 ms shift); naive in
# part 1 too, so that one estimate serves all three.
DRY_SINCNET = {"name": "sincnet", "sinc_filters": 8, "sinc_taps": 51, "conv_channels": [8, 8],
               "win": 800, "shift": 160, "seq_hidden": 16, "head_hidden": [16]}
DRY_FAMILIES: dict[str, tuple[dict[str, Any], int, tuple[int, ...]]] = {
    "cnn_lstm": ({"name": "cnn_lstm", "channels": [8, 16], "kernel_sizes": [16, 8],
                  "strides": [4, 4], "lstm_hidden": 16}, 1, (4000,)),
    "sincnet": ({**DRY_SINCNET, "framing": "naive"}, 1, (4000,)),
    "transformer": ({"name": "transformer", "d_model": 32, "heads": 2, "ff_dim": 64}, 16,
                    (50, 16)),
    "resnet_lstm": ({"name": "resnet_lstm", "channels": [4, 8], "lstm_hidden": 16}, 16, (50, 16)),
    "vggish_lstm": ({"name": "vggish_lstm", "width": 0.25, "lstm_hidden": 16}, 64, (96, 64)),
    "ssl_head": ({"name": "ssl_head", "proj_dim": 16, "head_hidden": [16]}, 16, (20, 3, 16)),
}
GRAD_FLOOR = 1e-4  # part 5: gradients below this fraction of the largest are rounding noise
DRY_TRANSFORMER = {"name": "transformer", "layers": 1, "d_model": 16, "heads": 2, "ff_dim": 32,
                   "head_hidden": [16]}


@dataclass(frozen=True)
class Run:
    """How this invocation runs: the device, and whether it is the tiny CPU dry-run."""

    device: torch.device
    dry_run: bool
    families: tuple[str, ...] | None = None  # part 1's variants (None: all of them)
    in_process: bool = False  # part 1: every measurement in this process (no fresh ones)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class PartResult:
    """One part's outcome: its table, notes, hard checks (any False -> exit 1) and wall time."""

    part: str
    title: str
    goal: str = ""
    status: str = "ok"  # ok | failed (a check did not hold) | error (it raised) | not run
    table: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        rows = [] if self.table is None else _json_rows(self.table)
        return {"part": self.part, "title": self.title, "goal": self.goal, "status": self.status,
                "seconds": round(self.seconds, 2), "budget_s": BUDGET_S.get(self.part),
                "checks": self.checks, "notes": self.notes, "rows": rows, "extra": self.extra}


def _json_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows with NaN as null (JSON has no NaN) and numpy scalars as Python numbers."""
    out = []
    for row in table.to_dict("records"):
        clean = {}
        for key, value in row.items():
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            clean[str(key)] = value
        out.append(clean)
    return out


def _sync(run: Run) -> None:
    if run.cuda:
        torch.cuda.synchronize(run.device)


def _free(run: Run) -> None:
    """CUDA: drop what the last measurement left, so the next one starts from an empty cache.
    (Nothing on the CPU, where a gc pass over torch's heap costs about a second.)"""
    if run.cuda:
        gc.collect()
        torch.cuda.empty_cache()


def _mib(n: float | None) -> float:
    return float("nan") if n is None else round(n / MIB, 1)


def _gib(n: float | None) -> float:
    return float("nan") if n is None else round(n / GIB, 2)


def _pct(estimate: float, measured: float | None) -> float:
    """Error of the estimate in % of the measurement (NaN without one)."""
    if not measured:
        return float("nan")
    return round(100.0 * (estimate - measured) / measured, 2)


# -- part 1: estimate vs measured peaks -------------------------------------------------------


def measure_job(job: dict[str, Any]) -> dict[str, Any]:
    """Peak bytes of one member's training step (the estimate's step, trainables.memory.run_steps)
    at job["batch"]: {"allocated", "reserved"}. CUDA: max_memory_allocated / max_memory_reserved
    above what was held before the model was built. CPU: the c10 allocator's peak from the torch
    profiler (trainables.memory.measure_in_process); "reserved" has no CPU counterpart (None)."""
    from trainables.memory import make_inputs, make_optimizer, measure_in_process, run_steps
    from trainables.models import build_model

    device = torch.device(job["device"])
    if device.type == "cpu":
        spec = {"model_cfg": job["model_cfg"], "n_features": job["n_features"],
                "n_classes": N_CLASSES, "input_shape": job["input_shape"], "amp": job["amp"]}
        return {"allocated": measure_in_process(spec, [job["batch"]], "cpu")[0], "reserved": None}
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize(device)
    alloc0, reserved0 = torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)
    torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model = build_model(job["model_cfg"], n_features=job["n_features"], n_classes=N_CLASSES)
    model = model.to(device).train()
    inputs = make_inputs(tuple(job["input_shape"]), job["batch"], N_CLASSES, device, real=True)
    opt = make_optimizer(model, "adamw")
    run_steps(model, opt, inputs, amp_dtype=torch.bfloat16 if job["amp"] else None)
    torch.cuda.synchronize(device)
    return {"allocated": int(torch.cuda.max_memory_allocated(device) - alloc0),
            "reserved": int(torch.cuda.max_memory_reserved(device) - reserved0)}


def measure_in_fresh_process(job: dict[str, Any], timeout_s: float = 300.0) -> dict[str, Any]:
    """`measure_job` in a new Python process (this file, --measure-one): nothing the caller
    allocated or cached (cuBLAS/cuDNN workspaces, the caching allocator's blocks) counts."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--measure-one", json.dumps(job)],
        capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=timeout_s,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {job} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _measured_or_error(
    measure: Callable[[dict[str, Any]], dict[str, Any]], job: dict[str, Any]
) -> dict[str, Any]:
    """`measure(job)`, or {"allocated": None, "reserved": None, "error": the last lines} when it
    fails (a CUDA OOM, a crash in one family): the other rows of the table still come back."""
    try:
        return measure(job)
    except Exception as exc:  # noqa: BLE001 -- recorded in the table and failing a check
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        return {"allocated": None, "reserved": None,
                "error": f"{type(exc).__name__}: {' | '.join(lines[-3:])[:300]}"}


def part1_estimates(run: Run) -> PartResult:
    from trainables.memory import calibrate, estimate_step_memory
    from trainables.models import MODELS

    every = DRY_FAMILIES if run.dry_run else FULL_FAMILIES
    unknown = sorted(set(run.families or ()) - set(every))
    if unknown:
        raise ValueError(f"--families: unknown variant(s) {unknown}; valid: {sorted(every)}")
    families = {k: v for k, v in every.items() if run.families is None or k in run.families}
    batches = (2, 4) if run.dry_run else (8, 32)
    # The trainer runs bf16 autocast on a CUDA GPU that supports it (train.amp: auto), fp32 on CPU.
    precisions = ("fp32",) if run.dry_run else ("fp32", "bf16")
    result = PartResult("1", "Estimate (fake tensors) vs measured peak of one training step",
                        f"|error| <= {GOAL_ERROR_PCT:g} % on allocated, raw or after calibrating "
                        "with one real step")
    jobs = [
        {"variant": name, "model_cfg": cfg, "n_features": nf, "input_shape": list(shape),
         "batch": b, "amp": precision == "bf16", "device": str(run.device)}
        for name, (cfg, nf, shape) in families.items() for precision in precisions
        for b in batches
    ]
    # GPU: every measurement in a fresh process, 6 at a time (peak stats are per process, so they
    # do not disturb each other). Dry-run: the first through a fresh process (that path works),
    # the rest in this one (a process start costs seconds on the CPU). --in-process: none.
    with ThreadPoolExecutor(max_workers=6 if run.cuda else 1) as pool:
        fresh = [] if run.in_process else jobs if run.cuda else jobs[:1]
        futures = [pool.submit(_measured_or_error, measure_in_fresh_process, job)
                   for job in fresh]
        estimates = {}  # traced on fake CPU tensors here while the measurements run
        for job in jobs:
            key = (job["variant"], job["amp"])
            if key not in estimates:
                estimates[key] = estimate_step_memory(
                    job["model_cfg"], n_features=job["n_features"], n_classes=N_CLASSES,
                    input_shape=tuple(job["input_shape"]), amp=job["amp"])
        measured = [f.result() for f in futures]
    measured += [_measured_or_error(measure_job, job) for job in jobs[len(measured):]]
    rows = []
    for (variant, amp), est in estimates.items():
        mine = [(j, m) for j, m in zip(jobs, measured)
                if (j["variant"], j["amp"]) == (variant, amp)]
        (j1, m1) = mine[0]
        calibrated = calibrate(est, {j1["batch"]: m1["allocated"]}) if m1["allocated"] else None
        for i, (job, m) in enumerate(mine):
            b = job["batch"]
            cal = calibrated.peak(b) if i and calibrated is not None else float("nan")
            err = _pct(est.peak(b), m["allocated"])
            cal_err = _pct(cal, m["allocated"]) if math.isfinite(cal) else float("nan")
            best = min(abs(err), abs(cal_err)) if i else abs(err)
            goal = "ERROR" if "error" in m else "met" if best <= GOAL_ERROR_PCT else "MISSED"
            rows.append({
                "variant": variant, "precision": "bf16" if amp else "fp32",
                "input": str(tuple(job["input_shape"])), "batch": b,
                "estimate_MiB": _mib(est.peak(b)), "allocated_MiB": _mib(m["allocated"]),
                "reserved_MiB": _mib(m["reserved"]), "error_%": err,
                "reserved_error_%": _pct(est.peak(b), m["reserved"]),
                "calibrated_MiB": _mib(cal) if math.isfinite(cal) else float("nan"),
                "calibrated_error_%": cal_err,
                "goal": goal,
                # what a trial with train.amp: auto is planned with (the fp32 estimate)
                "auto_plan_MiB": _mib(estimates[(variant, False)].peak(b))
                if (variant, False) in estimates else float("nan"),
            })
    result.table = pd.DataFrame(rows)
    failed = [(j["variant"], j["amp"], j["batch"], m["error"]) for j, m in zip(jobs, measured)
              if "error" in m]
    for variant, amp, b, error in failed:
        result.notes.append(f"measurement of {variant} {'bf16' if amp else 'fp32'} b={b} "
                            f"failed: {error}")
    result.checks["every measurement ran"] = not failed
    missing = sorted(set(MODELS) - {cfg["name"] for cfg, _, _ in every.values()})
    if missing:
        result.notes.append(f"NOT COVERED (no config in bench/gpu_check.py): {missing}")
    result.checks["every family has a config here"] = not missing
    if run.families is not None:
        result.notes.append(f"--families: {len(families)} of {len(every)} variants measured")
    result.notes.append(f"{len(fresh)} of {len(jobs)} measurements in a fresh process")
    result.notes.append(
        f"calibrated = trainables.memory.calibrate(estimate, {{b={batches[0]}: allocated}}) "
        f"predicting b={batches[1]} (one real step shifts every line of the estimate)")
    if run.cuda:
        result.notes.append(
            "auto_plan_MiB: a trial with train.amp: auto trains bf16 on this GPU but is planned "
            "with the fp32 estimate (estimate_trial_memory: amp = train.amp == 'on')")
    else:
        result.notes.append("dry-run: CPU allocator peaks (torch profiler), no 'reserved'")
    met = (result.table["goal"] == "met").sum()
    result.notes.append(f"goal met on {met}/{len(result.table)} rows")
    return result


# -- part 2: SincNet at the reference size ----------------------------------------------------


def _peaks(run: Run, alloc0: int, reserved0: int) -> tuple[int | None, int | None]:
    if not run.cuda:
        return None, None
    return (int(torch.cuda.max_memory_allocated(run.device) - alloc0),
            int(torch.cuda.max_memory_reserved(run.device) - reserved0))


def _start_peaks(run: Run) -> tuple[int, int]:
    if not run.cuda:
        return 0, 0
    _free(run)
    torch.cuda.synchronize(run.device)
    torch.cuda.reset_peak_memory_stats(run.device)
    return torch.cuda.memory_allocated(run.device), torch.cuda.memory_reserved(run.device)


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
        for precision in ("fp32", "bf16"):
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


# -- part 3: a capped budget, the planner, a real OOM recovered ----------------------------------


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


# -- part 4: trials per GPU through a real Ray Tune sweep ---------------------------------------

PACK_SWEEP = """\
name: {name}
data: {{corpus: synthetic, synthetic_utterances: {utterances}, features: logmel, n_mels: 32,
        max_seconds: 2.0, downsample: 2, use_folds: 1, cache_dir: {cache}}}
model: {{name: transformer, layers: 1, d_model: 32, heads: 2, ff_dim: 64, head_hidden: [32]}}
train: {{epochs: {epochs}, batch_size: 16, seeds: [0]}}
search:
  metric: val_uar
  mode: max
  sampler: random
  seed: 0
  trials: {trials}
  max_concurrent: {max_concurrent}
  baseline: false  # the reference baseline (opensmile) is no part of packing
  scheduler: {{type: none}}
  params:
    train.lr: {{loguniform: [1.0e-4, 3.0e-3]}}
resources: {{cpus_per_trial: 1, gpus_per_trial: {gpus}}}
"""


def part4_packing(run: Run) -> PartResult:
    result = PartResult("4", "Trials per GPU: gpus_per_trial auto (packed) vs one at a time",
                        "packed sweep faster than one trial at a time; shares from the planner")
    try:
        import optuna  # noqa: F401 -- only whether it is there
        import ray
    except ImportError as exc:
        result.status = "not run"
        result.notes.append(f"not run: Ray missing ({exc})")
        return result
    from orchestrator.planner import plan_configs

    gpu_total = 141 * GIB if not run.cuda else int(
        torch.cuda.get_device_properties(run.device).total_memory)
    shares = []
    for label, model, shape, nf in (
        ("tiny transformer, 50 x 32 frames", {"name": "transformer", "layers": 1,
                                              "d_model": 32, "heads": 2, "ff_dim": 64,
                                              "head_hidden": [32]}, (50, 32), 32),
        ("default transformer, 4 s", {"name": "transformer"}, (400, 64), 64),
        ("sincnet per_frame, 4 s", {"name": "sincnet", "framing": "per_frame"}, (RAW_4S,), 1),
    ):
        # what `sweep.py plan --gpu-memory` prints: the share gpus_per_trial: auto asks for
        (row,) = plan_configs(
            [{"model": model, "train": {"batch_size": 32}}], data_shape=shape, n_features=nf,
            n_classes=N_CLASSES, n_folds=5, gpu_total_bytes=gpu_total,
            resources={"gpus_per_trial": "auto", "gpu_memory_fraction": GPU_MEMORY_FRACTION})
        shares.append(f"{label}: {row.gpu_fraction:g} GPU (micro {row.micro_batch}, "
                      f"{row.estimated_peak / GIB:.2f} GiB)")
    where = "this GPU" if run.cuda else "a FAKE 141 GiB GPU (dry-run: planner only)"
    result.notes.append(f"gpus_per_trial: auto asks (5 members, batch 32) on {where}: "
                        + "; ".join(shares))
    if not run.cuda and not run.dry_run:
        result.status = "not run"
        result.notes.append("sweep not run: needs CUDA (use --dry-run for the CPU path)")
        return result
    from orchestrator.runner import run_sweep
    from orchestrator.sweepfile import load_spec
    from trainables.data import prepare_data

    # One at a time first: it pays one worker's cold start (torch, CUDA context), which the
    # packed sweep then pays for its other workers in parallel; the other order would charge
    # the packed sweep alone for Ray's first workers.
    if run.dry_run:  # CPU trials (no GPU: auto = CPU only), concurrency 1 vs 2
        arms = (("one at a time (CPU)", "auto", 1), ("auto, 2 at a time (CPU)", "auto", 2))
        trials, epochs, utterances = 2, 1, 40
    else:
        arms = (("gpus_per_trial 1", "1", "null"), ("auto (packed)", "auto", "null"))
        trials, epochs, utterances = 8, 2, 200
    rows = []
    started_ray = not ray.is_initialized()
    with tempfile.TemporaryDirectory(prefix="gpu_check_pack_") as tmp:
        data = None
        try:
            if started_ray:  # a private Ray (never a cluster found on this machine), started
                # once, outside the timed sweeps; run_sweep then uses it
                os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
                ray.init(include_dashboard=False, log_to_driver=False)
            for i, (label, gpus, concurrent) in enumerate(arms):
                path = Path(tmp) / f"pack{i}.yaml"
                path.write_text(PACK_SWEEP.format(
                    name=f"pack{i}", utterances=utterances, cache=f"{tmp}/cache", epochs=epochs,
                    trials=trials, max_concurrent=concurrent, gpus=gpus))
                spec = load_spec(path)
                if data is None:
                    data = prepare_data(spec.base_config()["data"])
                outcome = run_sweep(spec, results_root=f"{tmp}/results", data=data)
                trials_df = pd.read_parquet(Path(outcome.sweep_dir) / "trials")
                rows.append(_pack_row(label, outcome.wall_seconds, trials_df))
        finally:
            if started_ray:
                ray.shutdown()
    table = pd.DataFrame(rows)
    result.table = table
    speedup = table.loc[0, "wall_s"] / table.loc[1, "wall_s"]
    result.notes.append(f"one at a time / packed wall time: {speedup:.2f}x")
    result.extra["speedup"] = float(speedup)
    result.checks["every trial completed"] = bool((table["completed"] == table["trials"]).all())
    return result


def _pack_row(label: str, wall_s: float, trials: pd.DataFrame) -> dict[str, Any]:
    """One sweep: wall time, trials completed, GPU share and device of the trials, and how many
    ran at once (the most overlapping [started_at, ended_at] intervals)."""
    spans = sorted((r.started_at, 1) for r in trials.itertuples())
    spans += sorted((r.ended_at, -1) for r in trials.itertuples())
    live = most = 0
    for _, step in sorted(spans, key=lambda s: (s[0], s[1])):
        live += step
        most = max(most, live)
    fractions = sorted({float(v) for v in trials["gpu_fraction"].dropna()})
    return {"sweep": label, "trials": len(trials),
            "completed": int((trials["status"] == "completed").sum()),
            "wall_s": round(wall_s, 1),
            "trial_s_mean": round(float(trials["wall_seconds"].mean()), 1),
            "max_at_once": most, "gpu_fraction": ",".join(f"{f:g}" for f in fractions) or "-",
            "device": ",".join(sorted(set(trials["device"].astype(str)))),
            "micro_batch": ",".join(str(v) for v in sorted(set(trials["micro_batch"])))}


# -- part 5: the fusion prototype ----------------------------------------------------------------


class SequentialMembers:
    """M members trained one after another, each with its own AdamW (trainables.optim), as the
    lock-step trainer does (forward, cross entropy, backward, clip, step, zero_grad)."""

    def __init__(self, models: list[nn.Module], train: dict[str, Any], grad_clip: float) -> None:
        from trainables.optim import build_optimizer

        self.models = [copy.deepcopy(m) for m in models]
        self.optimizers = [build_optimizer(m, train) for m in self.models]
        self.grad_clip = grad_clip
        # the numerical check's record: each element's largest |gradient| over the steps
        self.max_grad: list[dict[str, torch.Tensor]] | None = None

    def step(self, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor,
             amp_dtype: torch.dtype | None) -> torch.Tensor:
        """x (M, B, ...), lengths and y (M, B) -> the M losses (M,)."""
        losses = []
        for m, (model, opt) in enumerate(zip(self.models, self.optimizers)):
            with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x[m], lengths[m])  # (B, C)
            loss = F.cross_entropy(logits.float(), y[m])
            loss.backward()
            if self.max_grad is not None:
                seen = self.max_grad[m]
                for name, p in model.named_parameters():
                    g = p.grad.detach().abs()
                    seen[name] = torch.maximum(seen[name], g) if name in seen else g
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        return torch.stack(losses)

    def parameters_of(self, m: int) -> dict[str, torch.Tensor]:
        return dict(self.models[m].named_parameters())


class FusedMembers:
    """The same M members as ONE computation: parameters stacked along a leading member axis
    (torch.func.stack_module_state), the model applied per member by functional_call under vmap
    (each member its own batch and dropout draws), one AdamW over the stacked tensors (fused on
    CUDA, foreach on the CPU) and grad clipping per member, as clip_grad_norm_ computes it."""

    def __init__(self, models: list[nn.Module], train: dict[str, Any], grad_clip: float) -> None:
        from torch.func import functional_call, stack_module_state, vmap

        params, buffers = stack_module_state(models)  # name -> (M, ...)
        self.params, self.buffers = params, buffers
        base = copy.deepcopy(models[0]).to("meta")  # the architecture only, no storage
        self.grad_clip = grad_clip
        on_cuda = next(iter(params.values())).is_cuda
        self.optimizer = torch.optim.AdamW(
            list(params.values()), lr=train["lr"], weight_decay=train["weight_decay"],
            **({"fused": True} if on_cuda else {"foreach": True}))

        def member_loss(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                        x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = functional_call(base, (p, b), (x, lengths))  # (B, C)
            return F.cross_entropy(logits.float(), y)

        self.losses = vmap(member_loss, randomness="different")

    def step(self, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor,
             amp_dtype: torch.dtype | None) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            losses = self.losses(self.params, self.buffers, x, lengths, y)  # (M,)
        losses.sum().backward()  # members are independent: each gets its own gradient
        grads = [p.grad for p in self.params.values()]
        norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads], 1)
        total = torch.linalg.vector_norm(norms, dim=1)  # (M,) one norm per member
        coef = (self.grad_clip / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return losses.detach()

    def parameters_of(self, m: int) -> dict[str, torch.Tensor]:
        return {name: p[m] for name, p in self.params.items()}


def _member_models(cfg: dict[str, Any], n_features: int, count: int,
                   device: torch.device) -> list[nn.Module]:
    """One model per member, seeded by the member (as trainables.members.Member is)."""
    from trainables.models import build_model

    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        models.append(build_model(cfg, n_features=n_features, n_classes=N_CLASSES)
                      .to(device).train())
    return models


def _member_batches(count: int, batch: int, shape: tuple[int, ...], n: int,
                    device: torch.device) -> list[tuple[torch.Tensor, ...]]:
    """`n` batches, each (x (M, B, *shape), lengths (M, B), y (M, B)): every member its own."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        x = torch.randn(count, batch, *shape, generator=gen)
        lengths = torch.randint(shape[0] // 2, shape[0] + 1, (count, batch), generator=gen)
        y = torch.randint(0, N_CLASSES, (count, batch), generator=gen)
        out.append((x.to(device), lengths.to(device), y.to(device)))
    return out


def fusion_agreement(cfg: dict[str, Any], n_features: int, shape: tuple[int, ...], batch: int,
                     count: int, steps: int, device: torch.device) -> dict[str, float]:
    """Fused vs sequential on the same init and batches (fp32, dropout off so both compute the
    same function): max |loss diff| over `steps` steps, and max |param diff| after them.

    The parameter comparison leaves out elements whose gradient never rose above
    GRAD_FLOOR x the member's largest gradient: there the gradient is rounding noise (e.g. the
    attention's key bias, whose gradient is exactly zero in exact arithmetic) and Adam, which
    divides by the gradient's own size, turns noise of either sign into a full step of lr, so
    the two runs legitimately part by up to 2 x lr x steps. `param_diff_all` keeps them."""
    from trainables.config import TRAIN_DEFAULTS

    cfg = {**cfg, "dropout": 0.0}
    models = _member_models(cfg, n_features, count, device)
    sequential = SequentialMembers(models, TRAIN_DEFAULTS, TRAIN_DEFAULTS["grad_clip"])
    sequential.max_grad = [{} for _ in range(count)]
    fused = FusedMembers(models, TRAIN_DEFAULTS, TRAIN_DEFAULTS["grad_clip"])
    loss_diff = 0.0
    for x, lengths, y in _member_batches(count, batch, shape, steps, device):
        a = sequential.step(x, lengths, y, None)
        b = fused.step(x, lengths, y, None)
        loss_diff = max(loss_diff, float((a - b).abs().max()))
    param_diff = param_diff_all = 0.0
    noise = total = 0
    for m in range(count):
        mine, theirs = sequential.parameters_of(m), fused.parameters_of(m)
        grads = sequential.max_grad[m]
        floor = GRAD_FLOOR * max(float(g.max()) for g in grads.values())
        for name, p in mine.items():
            diff = (p.detach() - theirs[name].detach()).abs()
            informative = grads[name] > floor
            param_diff_all = max(param_diff_all, float(diff.max()))
            if informative.any():
                param_diff = max(param_diff, float(diff[informative].max()))
            noise += int((~informative).sum())
            total += diff.numel()
    return {"loss_diff": loss_diff, "param_diff": param_diff, "param_diff_all": param_diff_all,
            "noise_fraction": noise / max(1, total)}


def _time_steps(run: Run, members: SequentialMembers | FusedMembers,
                batches: list[tuple[torch.Tensor, ...]], warmup: int, timed: int,
                amp_dtype: torch.dtype | None) -> tuple[float, float, int | None]:
    """Wall seconds and this process' CPU seconds per step (after `warmup` steps), and the peak
    allocated bytes (CUDA). The CPU seconds do not count time the process waited for a core (on
    a shared CPU the wall time does); on a GPU they are the host's cost of launching the work."""
    alloc0, _ = _start_peaks(run)
    for i in range(warmup):
        members.step(*batches[i % len(batches)], amp_dtype)
    _sync(run)
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(timed):
        members.step(*batches[i % len(batches)], amp_dtype)
    _sync(run)
    seconds = (time.perf_counter() - start) / timed
    cpu_seconds = (time.process_time() - cpu_start) / timed
    peak = int(torch.cuda.max_memory_allocated(run.device) - alloc0) if run.cuda else None
    return seconds, cpu_seconds, peak


def part5_fusion(run: Run) -> PartResult:
    from trainables.config import TRAIN_DEFAULTS

    if run.dry_run:
        cfg, n_features, shape, batch = DRY_TRANSFORMER, 8, (20, 8), 4
        counts, warmup, timed, check_steps = (1, 2), 1, 2, 3
    else:
        cfg, n_features, shape, batch = {"name": "transformer"}, 64, (400, 64), 32
        counts = (1, 4, 10)
        warmup, timed, check_steps = (3, 20, 3) if run.cuda else (1, 3, 2)
    precisions = ("fp32", "bf16") if run.cuda else ("fp32",)
    result = PartResult(
        "5", f"Fusion prototype: {cfg['name']} {cfg if run.dry_run else '(defaults)'}, batch "
             f"{batch} x {shape}, fwd + bwd + clip + AdamW per member, sequential vs fused",
        "fused / sequential member-steps per second > 1 on the GPU; the two agree numerically")
    loss_tol, param_tol = 1e-4, 1e-4
    rows, fallbacks = [], set()
    for count in counts:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check = fusion_agreement(cfg, n_features, shape, batch, count, check_steps,
                                     run.device)
            batches = _member_batches(count, batch, shape, 2, run.device)
            for precision in precisions:
                amp_dtype = torch.bfloat16 if precision == "bf16" else None
                models = _member_models(cfg, n_features, count, run.device)
                timings = {}
                for name, kind in (("sequential", SequentialMembers), ("fused", FusedMembers)):
                    members = kind(models, TRAIN_DEFAULTS, TRAIN_DEFAULTS["grad_clip"])
                    timings[name] = _time_steps(run, members, batches, warmup, timed, amp_dtype)
                    del members
                    _free(run)
                seq_s, seq_cpu, seq_peak = timings["sequential"]
                fused_s, fused_cpu, fused_peak = timings["fused"]
                agree = check["loss_diff"] <= loss_tol and check["param_diff"] <= param_tol
                fp32 = precision == "fp32"
                rows.append({
                    "members": count, "precision": precision,
                    "sequential_member_steps_s": round(count / seq_s, 2),
                    "fused_member_steps_s": round(count / fused_s, 2),
                    "fused_over_sequential": round(seq_s / fused_s, 3),
                    "sequential_cpu_s_per_step": round(seq_cpu, 4),
                    "fused_cpu_s_per_step": round(fused_cpu, 4),
                    "fused_over_sequential_cpu": round(seq_cpu / fused_cpu, 3),
                    "sequential_peak_MiB": _mib(seq_peak), "fused_peak_MiB": _mib(fused_peak),
                    "max_loss_diff": check["loss_diff"] if fp32 else float("nan"),
                    "max_param_diff": check["param_diff"] if fp32 else float("nan"),
                    "max_param_diff_all": check["param_diff_all"] if fp32 else float("nan"),
                    "noise_params_%": round(100 * check["noise_fraction"], 3) if fp32
                    else float("nan"),
                    "agree": ("yes" if agree else "NO") if fp32 else "-",
                })
                del models
                _free(run)
        for w in caught:
            found = re.search(r"batching rule for (\S+?)\.", str(w.message))
            if found:
                fallbacks.add(found.group(1))
        result.checks[f"M={count}: fused == sequential"] = bool(
            check["loss_diff"] <= loss_tol and check["param_diff"] <= param_tol)
    result.table = pd.DataFrame(rows)
    result.notes.append(f"numerical check: fp32, dropout 0, {check_steps} steps, same init and "
                        f"batches; tolerance |loss| <= {loss_tol:g}, |param| <= {param_tol:g} "
                        f"on the elements whose gradient exceeded {GRAD_FLOOR:g} x the largest "
                        "(noise_params_% left out: rounding noise that Adam scales to lr; "
                        "max_param_diff_all includes them)")
    result.notes.append(f"timing: {warmup} warm-up + {timed} timed steps, dropout as configured "
                        "(vmap randomness='different'), grad clip 1.0, AdamW lr 5e-4; *_cpu: "
                        "this process' CPU seconds (time.process_time), immune to waiting for a "
                        "shared core; on a GPU, the host's cost of launching the step")
    if fallbacks:
        result.notes.append("vmap fell back to a per-member loop (no batching rule) for: "
                            + ", ".join(sorted(fallbacks)))
    result.extra["vmap_fallbacks"] = sorted(fallbacks)
    return result


# -- the gpu-marked tests -------------------------------------------------------------------------


def gpu_tests(run: Run) -> PartResult:
    result = PartResult("tests", "The gpu-marked tests (pytest -m gpu)", "all pass on CUDA")
    if run.dry_run or not run.cuda:
        result.status = "not run"
        result.notes.append("skipped in dry-run: needs CUDA" if run.dry_run
                            else "not run: needs CUDA")
        return result
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                   if "mark.gpu" in p.read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider",
         "--continue-on-collection-errors", *files],
        capture_output=True, text=True, cwd=str(ROOT), timeout=600,
    )
    rows = [{"test": line.split(" ", 1)[1].split(" - ")[0], "outcome": line.split(" ", 1)[0]}
            for line in proc.stdout.splitlines()
            if line.split(" ", 1)[0] in ("PASSED", "FAILED", "ERROR", "SKIPPED")]
    result.table = pd.DataFrame(rows, columns=["test", "outcome"])
    result.notes.append(f"pytest exit {proc.returncode}: {proc.stdout.strip().splitlines()[-1:]}")
    result.checks["gpu tests pass"] = proc.returncode == 0
    return result


# -- driver ---------------------------------------------------------------------------------------

PART_TITLES = {
    "1": "Estimate vs CUDA peaks, every family", "2": "SincNet at the reference batch",
    "3": "Capped budget, planner, real OOM recovery", "4": "Trials per GPU (Ray Tune)",
    "5": "Fusion prototype", "tests": "The gpu-marked tests",
}
PART_FUNCTIONS: dict[str, Callable[[Run], PartResult]] = {
    "1": part1_estimates, "2": part2_sincnet, "3": part3_capped, "4": part4_packing,
    "5": part5_fusion, "tests": gpu_tests,
}


def environment(run: Run) -> dict[str, Any]:
    """Date, machine and versions; the GPU, its driver and CUDA only on a CUDA run."""
    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(), "python": platform.python_version(),
        "torch": torch.__version__, "device": str(run.device), "dry_run": run.dry_run,
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
    }
    for package in ("numpy", "pandas", "ray", "optuna"):
        try:
            env[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            env[package] = None
    if run.cuda:
        props = torch.cuda.get_device_properties(run.device)
        env.update(gpu=props.name, gpu_memory_GiB=round(props.total_memory / GIB, 1),
                   capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), driver=_driver_version())
    return env


def _driver_version() -> str:
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return proc.stdout.strip() or f"unknown (nvidia-smi: {proc.stderr.strip()[:80]})"


def print_part(result: PartResult) -> None:
    budget = BUDGET_S.get(result.part)
    print(f"== part {result.part}: {result.title}")
    if result.goal:
        print(f"   goal: {result.goal}")
    if result.table is not None and len(result.table):
        print(result.table.to_string(index=False))
    for note in result.notes:
        print(f"   {note}")
    failed = [name for name, ok in result.checks.items() if not ok]
    checks = f"checks FAILED: {failed}" if failed else f"{len(result.checks)} checks held"
    print(f"   part {result.part}: {result.status}, {checks}, {result.seconds:.1f} s "
          f"(full-run budget {budget} s)\n", flush=True)


def parse_parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {unknown}; valid: {','.join(PARTS)}")
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="every part at tiny sizes on the CPU, no CUDA call")
    parser.add_argument("--parts", type=parse_parts, default=list(PARTS),
                        help=f"comma-separated parts to run (default all: {','.join(PARTS)})")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="auto: cuda when available (not asked in --dry-run: cpu)")
    parser.add_argument("--json", default=None, help="write every result to this JSON file")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--families", default=None,
                        help="part 1: comma-separated variants to measure (default all)")
    parser.add_argument("--in-process", action="store_true",
                        help="part 1: measure in this process instead of fresh ones (faster; "
                             "then cuBLAS/cuDNN workspaces of earlier rows are not counted)")
    parser.add_argument("--measure-one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.measure_one is not None:  # the fresh process of part 1
        sys.stdout.write("\n" + json.dumps(measure_job(json.loads(args.measure_one))) + "\n")
        return 0
    if args.dry_run:
        if args.device == "cuda":
            parser.error("--dry-run runs on the CPU; it cannot take --device cuda")
        device = torch.device("cpu")  # no torch.cuda call at all
    elif args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available())")
    else:
        device = torch.device(args.device)
    families = tuple(f.strip() for f in args.families.split(",")) if args.families else None
    run = Run(device, args.dry_run, families, args.in_process)
    env = environment(run)
    print("sersweep GPU check: " + ", ".join(f"{k} {v}" for k, v in env.items()), "\n",
          flush=True)
    results = []
    started = time.perf_counter()
    for key in args.parts:
        begin = time.perf_counter()
        if key in ("1", "2", "3") and not run.cuda and not run.dry_run:
            result = PartResult(key, PART_TITLES[key], status="not run",
                                notes=["not run: needs CUDA (use --dry-run for the CPU path)"])
        else:
            try:
                result = PART_FUNCTIONS[key](run)
            except Exception:  # noqa: BLE001 -- printed and counted (exit 1): one GPU window
                # must still yield every other part
                result = PartResult(key, PART_TITLES[key], status="error",
                                    notes=[traceback.format_exc()])
        if result.status == "ok" and not all(result.checks.values()):
            result.status = "failed"
        result.seconds = time.perf_counter() - begin
        _free(run)
        print_part(result)
        results.append(result)
    total = time.perf_counter() - started
    summary = pd.DataFrame([{"part": r.part, "status": r.status, "seconds": round(r.seconds, 1),
                             "budget_s": BUDGET_S[r.part],
                             "checks_failed": [n for n, ok in r.checks.items() if not ok]}
                            for r in results])
    print(f"== summary ({total:.1f} s in all; full-run budget {sum(BUDGET_S.values())} s)")
    print(summary.to_string(index=False), flush=True)
    if args.json:
        payload = {"environment": env, "seconds": round(total, 2),
                   "parts": {r.part: r.as_json() for r in results}}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str))
    return 0 if all(r.status in ("ok", "not run") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
