"""Optimizer, learning-rate schedule and mixed precision of one member (the `train` section)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainables.errors import ConfigError


def build_optimizer(model: nn.Module, train: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum) over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    name = train["optimizer"]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=train["lr"], weight_decay=train["weight_decay"])
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=train["lr"], momentum=train["momentum"], weight_decay=train["weight_decay"]
        )
    raise ConfigError("train.optimizer", f"unknown optimizer {name!r}; valid: adamw, sgd")


def lr_factor(
    steps_per_epoch: int, epochs: int, warmup_epochs: float, schedule: str
) -> Callable[[int], float]:
    """Multiplier of the base lr at optimizer step `step` (0-based): linear warmup per step over
    `warmup_epochs`, then cosine decay to 0 over the remaining steps of `epochs`, or constant."""
    if schedule not in ("cosine", "constant"):
        raise ConfigError(
            "train.schedule", f"unknown schedule {schedule!r}; valid: cosine, constant"
        )
    total = max(1, steps_per_epoch * epochs)
    warmup = int(round(steps_per_epoch * warmup_epochs))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, train: Mapping[str, Any], steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-optimizer-step LambdaLR (its state_dict holds only the step count)."""
    factor = lr_factor(steps_per_epoch, train["epochs"], train["warmup_epochs"], train["schedule"])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass(frozen=True)
class Precision:
    """How a step runs: autocast dtype (None = full precision), whether a GradScaler is needed."""

    dtype: torch.dtype | None
    scaler: bool

    @property
    def name(self) -> str:
        return "fp32" if self.dtype is None else str(self.dtype).removeprefix("torch.")


def choose_precision(amp: str, device: torch.device) -> Precision:
    """`auto`: bf16 autocast on CUDA if supported, else fp16 + GradScaler; off on CPU.
    `on`: the same on CUDA, bf16 autocast on CPU. `off`: full precision."""
    if amp == "off":
        return Precision(None, False)
    if amp not in ("auto", "on"):
        raise ConfigError("train.amp", f"unknown amp mode {amp!r}; valid: auto, on, off")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, False)
        return Precision(torch.float16, True)
    if amp == "on":
        return Precision(torch.bfloat16, False)
    return Precision(None, False)
