"""The parts of the GPU check by key, and how they run: one part (run_part), several in this
process (run_parts: also what the Ray task of --on-cluster runs on a GPU node), printed."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from bench.gpu_check.budget import part3_capped
from bench.gpu_check.cluster import part_cluster
from bench.gpu_check.common import BUDGET_S, GIB, PartResult, Run, _free
from bench.gpu_check.estimates import part1_estimates
from bench.gpu_check.gpu_tests import gpu_tests
from bench.gpu_check.packing import part4_packing
from bench.gpu_check.sincnet import part2_sincnet

PART_TITLES = {
    "1": "Estimate vs CUDA peaks, every family", "2": "SincNet at the reference batch",
    "3": "Capped budget, planner, real OOM recovery", "4": "Trials per GPU (Ray Tune)",
    "cluster": "GPU discovery and placement", "tests": "The gpu-marked tests",
}
PART_FUNCTIONS: dict[str, Callable[[Run], PartResult]] = {
    "1": part1_estimates, "2": part2_sincnet, "3": part3_capped, "4": part4_packing,
    "cluster": part_cluster, "tests": gpu_tests,
}
# The parts that need the GPU: with --on-cluster they run in a Ray task on a GPU node; the
# others (the sweep of part 4 starts its own trials, the placement part needs no GPU) run here.
GPU_PARTS = ("1", "2", "3", "tests")


def make_run(options: dict[str, Any]) -> Run:
    """The Run of `options` (dry_run, device: auto/cuda/cpu, families, in_process, threads) on
    this machine; ValueError for a combination it cannot run."""
    if options.get("threads"):
        torch.set_num_threads(options["threads"])
    if options["dry_run"]:
        if options["device"] == "cuda":
            raise ValueError("--dry-run runs on the CPU; it cannot take --device cuda")
        device = torch.device("cpu")  # no torch.cuda call at all
    elif options["device"] == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif options["device"] == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available())")
    else:
        device = torch.device(options["device"])
    return Run(device, options["dry_run"], options.get("families"), options["in_process"])


def run_part(key: str, run: Run) -> PartResult:
    """One part, timed; a part that raises is an `error` result (one GPU window must still
    yield every other part); a check that does not hold makes it `failed`."""
    begin = time.perf_counter()
    if key in ("1", "2", "3") and not run.cuda and not run.dry_run:
        result = PartResult(key, PART_TITLES[key], status="not run",
                            notes=["not run: needs CUDA (use --dry-run for the CPU path)"])
    else:
        try:
            result = PART_FUNCTIONS[key](run)
        except Exception:  # noqa: BLE001 -- printed and counted (exit 1)
            result = PartResult(key, PART_TITLES[key], status="error",
                                notes=[traceback.format_exc()])
    if result.status == "ok" and not all(result.checks.values()):
        result.status = "failed"
    result.seconds = time.perf_counter() - begin
    _free(run)
    return result


def run_parts(parts: list[str], options: dict[str, Any],
              ) -> tuple[dict[str, Any], list[PartResult]]:
    """`parts` in this process, each printed as it ends: (environment, results). The Ray task
    of --on-cluster (so its log shows them too)."""
    run = make_run(options)
    env = environment(run)
    print_environment(env)
    results = []
    for key in parts:
        results.append(run_part(key, run))
        print_part(results[-1])
    return env, results


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


def print_environment(env: dict[str, Any], label: str = "sersweep GPU check") -> None:
    print(f"{label}: " + ", ".join(f"{k} {v}" for k, v in env.items()), "\n", flush=True)


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
