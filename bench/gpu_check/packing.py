"""Part 4: trials per GPU through a real Ray Tune sweep (gpus_per_trial auto vs 1)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.gpu_check.common import (
    GIB,
    GPU_MEMORY_FRACTION,
    N_CLASSES,
    RAW_4S,
    PartResult,
    Run,
)

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
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
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
