"""EXPERIMENT, not product code and no part of the GPU check (bench/gpu_check): a torch.func
prototype of training M members (folds x seeds) as one fused computation.

    python -m bench.experiments.fusion_prototype --dry-run       # M = 1, 2 at tiny sizes, CPU
    python -m bench.experiments.fusion_prototype --device cpu --threads 1

M members of the default Transformer trained one after another vs as one fused computation
(torch.func.stack_module_state + functional_call + vmap, one fused/foreach AdamW over the stacked
parameters, grad clipping per member); member-steps per second and their ratio; numerical check:
same init and batches give the same losses and updated parameters. The trainer does not use it
(docs/gpu.md says what it measured). Exit 0 when the numerical check held, else 1.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from bench.gpu_check.common import (
    N_CLASSES,
    PartResult,
    Run,
    _free,
    _mib,
    _start_peaks,
    _sync,
)
from bench.gpu_check.parts import print_part

GRAD_FLOOR = 1e-4  # gradients below this fraction of the largest are rounding noise
DRY_TRANSFORMER = {"name": "transformer", "layers": 1, "d_model": 16, "heads": 2, "ff_dim": 32,
                   "head_hidden": [16]}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.experiments.fusion_prototype",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="M = 1, 2 at tiny sizes, CPU")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="write the result to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda" or (args.device == "auto" and not args.dry_run
                                     and torch.cuda.is_available())
    run = Run(torch.device("cuda" if cuda else "cpu"), args.dry_run)
    started = time.perf_counter()
    result = part5_fusion(run)
    result.seconds = time.perf_counter() - started
    if not all(result.checks.values()):
        result.status = "failed"
    print_part(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result.as_json(), indent=2, default=str))
    return 0 if result.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
