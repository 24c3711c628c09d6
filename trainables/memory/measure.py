"""Measure the real peak memory of the training step that trainables/memory/trace.py traces.

Each measurement runs in a fresh subprocess (`python -m trainables.memory.measure JSON`), with one
torch thread and a fixed glibc mmap threshold (MALLOC_MMAP_THRESHOLD_, which also turns off glibc's
dynamic threshold), so nothing left over from the caller counts and repeated runs agree:
- CUDA: torch.cuda.max_memory_allocated() minus memory_allocated() before the model was built.
- CPU: the bytes the c10 CPU allocator holds, from the torch profiler's memory events
  (profile_memory=True: one event per allocation and free, with its size). Peak = the bytes of the
  parameters, buffers and inputs allocated before the profiled window (summed over their unique
  storages) + the maximum over the window of the running sum of the events' sizes. This is the
  CPU counterpart of max_memory_allocated: tensor bytes, not the process RSS (which also holds
  code pages, the allocator's free lists and oneDNN's internal scratchpads).
The step itself is trace.run_steps: two steps of two micro-batches each, the same ops as
the trace.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables.memory.kernels import profiled_peak
from trainables.memory.trace import make_inputs, make_optimizer, run_steps

MMAP_THRESHOLD = 128 * 1024
ROOT = Path(__file__).resolve().parents[2]  # the repository (for the subprocess' PYTHONPATH)


def _resolve_factory(spec: dict[str, Any]) -> Callable[[], nn.Module]:
    """{"model_cfg", "n_features", "n_classes"} -> build_model; {"factory": "mod:Name" or
    "/path/file.py:Name", "kwargs": {...}} -> Name(**kwargs)."""
    if "model_cfg" in spec:
        from trainables.models import build_model

        return partial(
            build_model, spec["model_cfg"], n_features=spec["n_features"],
            n_classes=spec["n_classes"],
        )
    where, name = spec["factory"].rsplit(":", 1)
    if where.endswith(".py"):
        mod_spec = importlib.util.spec_from_file_location(Path(where).stem, where)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[mod_spec.name] = module
        mod_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    return partial(getattr(module, name), **spec.get("kwargs", {}))


def _bytes(tensors: list[torch.Tensor]) -> int:
    storages = {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def _measure_once(spec: dict[str, Any], batch: int, device: torch.device) -> int:
    factory = _resolve_factory(spec)
    amp_dtype = torch.bfloat16 if spec.get("amp") else None
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model = factory().to(device).train()
    inputs = make_inputs(tuple(spec["input_shape"]), batch, spec["n_classes"], device, real=True)
    opt = make_optimizer(model, spec.get("optimizer", "adamw"))
    if device.type == "cuda":
        run_steps(model, opt, inputs, amp_dtype=amp_dtype)
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    base = _bytes([*model.parameters(), *model.buffers(), *inputs])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run_steps(model, opt, inputs, amp_dtype=amp_dtype)
    return int(base + profiled_peak(prof))


def measure_in_process(spec: dict[str, Any], batches: list[int], device: str = "cpu") -> list[int]:
    """The peaks at `batches` measured in THIS process (measure_step_peaks isolates it)."""
    torch.set_num_threads(1)
    dev = torch.device(device)
    out = []
    for b in batches:
        out.append(_measure_once(spec, int(b), dev))
        gc.collect()
    return out


def measure_step_peaks(
    spec: dict[str, Any], batches: list[int], device: str = "cpu", timeout: float = 600.0
) -> list[int]:
    """Real peak bytes of one member's training step at each batch size, in a fresh subprocess.

    spec: {"input_shape", "n_classes", "optimizer"?, "amp"?} plus either {"model_cfg",
    "n_features"} or {"factory": "module:Name" | "/file.py:Name", "kwargs"}.
    """
    env = dict(os.environ)
    env.update(
        MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD), MALLOC_TRIM_THRESHOLD_=str(MMAP_THRESHOLD),
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
    )
    payload = json.dumps({"spec": spec, "batches": list(batches), "device": device})
    proc = subprocess.run(
        [sys.executable, "-m", "trainables.memory.measure", payload],
        capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"memory measurement failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return [int(v) for v in json.loads(proc.stdout.strip().splitlines()[-1])]


def measure_step_peak(
    model_cfg: dict[str, Any],
    *,
    n_features: int,
    n_classes: int,
    input_shape: tuple[int, ...],
    batch_size: int,
    optimizer: str = "adamw",
    amp: bool = False,
    device: str = "cpu",
) -> int:
    """The measured peak bytes of one REAL training step of one member (see module docstring)."""
    spec = {
        "model_cfg": model_cfg, "n_features": n_features, "n_classes": n_classes,
        "input_shape": list(input_shape), "optimizer": optimizer, "amp": amp,
    }
    return measure_step_peaks(spec, [batch_size], device)[0]


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    peaks = measure_in_process(args["spec"], args["batches"], args.get("device", "cpu"))
    sys.stdout.write("\n" + json.dumps(peaks) + "\n")

