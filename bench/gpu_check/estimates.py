"""Part 1: the planner's estimate vs measured peaks, every family, two batch sizes."""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import torch

from bench.gpu_check.common import (
    DRY_FAMILIES,
    FULL_FAMILIES,
    GOAL_ERROR_PCT,
    N_CLASSES,
    ROOT,
    PartResult,
    Run,
    _mib,
    _pct,
)


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
    """`measure_job` in a new Python process (python -m bench.gpu_check --measure-one): nothing
    the caller allocated or cached (cuBLAS/cuDNN workspaces, the caching allocator's blocks)
    counts."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--measure-one", json.dumps(job)],
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
        # traced on fake CPU tensors here while the measurements run: for this device (CUDA:
        # the cuDNN terms; CPU: the real oneDNN kernels' scratch) and bare (no device term)
        estimates, bare = {}, {}
        target = "cuda" if run.cuda else "cpu"
        for job in jobs:
            key = (job["variant"], job["amp"])
            if key not in estimates:
                common = dict(n_features=job["n_features"], n_classes=N_CLASSES,
                              input_shape=tuple(job["input_shape"]), amp=job["amp"])
                estimates[key] = estimate_step_memory(job["model_cfg"], target=target, **common)
                bare[key] = estimate_step_memory(job["model_cfg"], target="bare", **common)
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
            terms = est.peak(b) - bare[(variant, amp)].peak(b)
            measured_terms = (m["allocated"] - bare[(variant, amp)].peak(b)
                              if m["allocated"] else None)
            rows.append({
                "variant": variant, "precision": "bf16" if amp else "fp32",
                "input": str(tuple(job["input_shape"])), "batch": b,
                "estimate_MiB": _mib(est.peak(b)), "allocated_MiB": _mib(m["allocated"]),
                # the device terms at the peak (estimate - bare estimate) vs what the
                # measurement holds above the bare estimate: their ratio is the measured
                # correction of the terms (1 = the formulas are right)
                "terms_MiB": _mib(terms), "measured_terms_MiB": _mib(measured_terms),
                "terms_ratio": round(measured_terms / terms, 2)
                if measured_terms is not None and terms else float("nan"),
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
        result.notes.append(f"NOT COVERED (no config in bench/gpu_check/common.py): {missing}")
    result.checks["every family has a config here"] = not missing
    if run.families is not None:
        result.notes.append(f"--families: {len(families)} of {len(every)} variants measured")
    result.notes.append(f"{len(fresh)} of {len(jobs)} measurements in a fresh process")
    result.notes.append(
        f"calibrated = trainables.memory.calibrate(estimate, {{b={batches[0]}: allocated}}) "
        f"predicting b={batches[1]} (one real step shifts every line of the estimate)")
    if run.cuda:
        result.notes.append(
            "auto_plan_MiB: the fp32 estimate; a trial with train.amp: auto trains bf16 on this "
            "GPU and is planned with the bf16 row's estimate (estimate_trial_memory, on_gpu)")
        result.notes.append(
            "terms: the cuDNN terms of trainables/memory/cuda_terms.py (RNN reserve space and "
            "workspace: cnn_lstm, resnet_lstm, vggish_lstm, sincnet; convolution-workspace "
            "allowance: every conv family); terms_ratio = measured_terms / terms is the measured "
            "correction of those formulas (docs/gpu.md, 'CUDA terms of the estimate')")
    else:
        result.notes.append("dry-run: CPU allocator peaks (torch profiler), no 'reserved'; "
                            "terms: the real oneDNN kernels' scratch (trainables/memory/"
                            "kernels.py)")
    met = (result.table["goal"] == "met").sum()
    result.notes.append(f"goal met on {met}/{len(result.table)} rows")
    return result
