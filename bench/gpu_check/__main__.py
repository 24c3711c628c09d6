"""GPU check (issue 16): one short command that measures sersweep's GPU paths, one table per part.

    python -m bench.gpu_check                       # every part on CUDA (<= 7 min, one H200)
    python -m bench.gpu_check --dry-run             # every part at tiny sizes on the CPU
    python -m bench.gpu_check --parts 1,2,cluster --json gpu_check.json
    python -m bench.gpu_check --on-cluster HEAD:6379  # the GPU parts on a cluster's GPU node

1. The planner's estimate vs CUDA max_memory_allocated / max_memory_reserved of one training step
   (trainables.memory.run_steps: 2 micro-batches + AdamW, twice), every family, two batch sizes,
   fp32 and bf16 autocast; goal |error| <= 5 % on allocated. Then calibrated with one real step at
   the smaller batch (trainables.memory.calibrate) and checked at the larger one. The estimate is
   the CUDA target's (cuDNN RNN reserve/workspace, conv-workspace allowance: memory/cuda_terms.py);
   terms_ratio = (measured - bare estimate) / (estimate - bare estimate), the measured correction
   of those terms for the LSTM and conv families. Each measurement
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
cluster. GPU discovery and placement (orchestrator.cluster.cluster_from_nodes,
   planner.gpu_targets / choose_target) on constructed `ray.nodes()` rows: a CPU head, L4
   nodes that declare their memory, an H100 node asked by a probe, a dead node; each config
   on the smallest type that holds it in one step, else micro-batched, else does_not_fit.
   Joined to a cluster, also what discover_cluster finds there. No GPU needed.
tests: the `gpu`-marked tests (pytest -m gpu): which ran, which passed.

--dry-run runs every part at tiny sizes on the CPU and makes no CUDA call: part 1 measures CPU
peaks (trainables.memory.measure_in_process; no "reserved" there), part 3 SIMULATES the cap (a
forward pre-hook raises torch.OutOfMemoryError when the estimated peak exceeds it; the retry path
is the real one), part 4 runs a real Ray sweep of CPU trials (concurrency 2 vs 1) and shows the GPU
shares `auto` would ask for on a 141 GiB GPU.
Exit status 0 when every part ran and every check held, else 1. Project modules are imported
inside the parts: a part whose imports are missing on the GPU machine fails alone.
--on-cluster ADDRESS joins that Ray cluster and runs the GPU parts (1, 2, 3, tests) in one
`ray.remote(num_gpus=1)` task on a GPU node (the repository must be importable there, as for
the sweep's trials); they print in the task's log and come back to print here. Parts 4 and
cluster run here, on the driver (cluster then also shows what discover_cluster finds). With
--dry-run the task asks for a CPU instead of a GPU.
The fusion prototype (torch.func, members fused) is no part of this check:
bench/experiments/fusion_prototype.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from bench.gpu_check.cluster import run_on_cluster
from bench.gpu_check.common import BUDGET_S, PARTS, PartResult
from bench.gpu_check.estimates import measure_job
from bench.gpu_check.parts import (
    GPU_PARTS,
    environment,
    make_run,
    print_environment,
    print_part,
    run_part,
    run_parts,
)


def parse_parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {unknown}; valid: {','.join(PARTS)}")
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check",
                                     description=__doc__.split("\n")[0])
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
    parser.add_argument("--on-cluster", default=None, metavar="ADDRESS",
                        help="join this Ray cluster; the GPU parts run in a Ray task on a GPU "
                             "node")
    parser.add_argument("--measure-one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.measure_one is not None:  # the fresh process of part 1
        sys.stdout.write("\n" + json.dumps(measure_job(json.loads(args.measure_one))) + "\n")
        return 0
    families = tuple(f.strip() for f in args.families.split(",")) if args.families else None
    options = {"dry_run": args.dry_run, "device": args.device, "families": families,
               "in_process": args.in_process, "threads": args.threads}
    try:
        run = make_run(options) if not args.on_cluster else make_run({**options, "device": "cpu"})
    except ValueError as exc:
        parser.error(str(exc))
    env = environment(run)
    print_environment(env)
    results: list[PartResult] = []
    started = time.perf_counter()
    remote = [key for key in args.parts if key in GPU_PARTS] if args.on_cluster else []
    if remote:
        try:
            node_env, remote_results = run_on_cluster(args.on_cluster, remote, options,
                                                      run_parts)
        except ValueError as exc:  # no GPU there: one line, exit 2, nothing written
            parser.error(str(exc))
        env["gpu_node"] = node_env
        print_environment(node_env, f"GPU node of {args.on_cluster}")
        for result in remote_results:
            print_part(result)
        results.extend(remote_results)
    for key in args.parts:
        if key not in remote:
            results.append(run_part(key, run))
            print_part(results[-1])
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
