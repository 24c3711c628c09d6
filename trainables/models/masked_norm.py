"""BatchNorm whose batch statistics cover only the valid (unpadded) time steps.

Why: a batch pads every clip to its longest, and nn.BatchNorm takes mean and variance over the
padding too: a 3 s and a 0.5 s clip in one batch gave a batch variance 0.58x the variance over
their valid steps, so what a model learns depended on how clips were batched. Here, in training,
mean and (biased) variance are taken over the valid steps only (`lengths` -> mask), the running
statistics are updated from them exactly as nn.BatchNorm does (momentum, unbiased running var,
num_batches_tracked), and eval normalizes with the running statistics as usual. Subclasses of
nn.BatchNorm1d/2d: the same parameters, buffers and state_dict keys (old checkpoints load).

Tensor arithmetic only (no .item(), no boolean indexing): traceable on fake tensors by the memory
estimator. Statistics are computed in float32 (under bf16/fp16 autocast too).

Ghost batches: inside trainables/models/sample_noise.py's `sample_noise` (the trainer's training
forward), the statistics are taken per ghost batch of `train.norm_batch` consecutive samples, so
they do not depend on the micro-batch the planner chose (GhostBatchNorm1d: the same for the
DNN head's plain BatchNorm).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from trainables.models.pooling import length_mask
from trainables.models.sample_noise import active_norm_batch, ghost_groups


def _ghost(norm: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor], x: torch.Tensor,
           mask: torch.Tensor | None) -> torch.Tensor:
    """`norm(x_g, mask_g)` per ghost batch of x (dim 0), concatenated; the whole batch outside
    `sample_noise` or when it is a single ghost batch."""
    size = active_norm_batch()
    if size is None or x.shape[0] <= size:
        return norm(x, mask)
    sizes = ghost_groups(x.shape[0], size)
    masks = [None] * len(sizes) if mask is None else mask.split(sizes)
    return torch.cat([norm(part, m) for part, m in zip(x.split(sizes), masks, strict=True)])


def _masked_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor,
                       mask: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Training-mode batch norm of x over `dims`, counting only where `mask` (broadcastable to x,
    1.0 valid / 0.0 padded) is 1; updates bn's running statistics."""
    xf = x.float()
    shape = [1] * x.dim()
    shape[1] = x.shape[1]
    count = mask.expand_as(xf).sum(dims)  # (C,) valid positions per channel (all equal)
    mean = (xf * mask).sum(dims) / count  # (C,)
    centered = xf - mean.view(shape)
    var = (centered.square() * mask).sum(dims) / count  # (C,) biased, as BatchNorm normalizes
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            momentum = (1.0 / bn.num_batches_tracked.float() if bn.momentum is None
                        else bn.momentum)  # None: cumulative average, as nn.BatchNorm
            unbiased = var * count / (count - 1).clamp(min=1)
            bn.running_mean.mul_(1 - momentum).add_(momentum * mean)
            bn.running_var.mul_(1 - momentum).add_(momentum * unbiased)
    scale = torch.rsqrt(var + bn.eps)  # (C,)
    if bn.affine:
        y = centered * (scale * bn.weight).view(shape) + bn.bias.view(shape)
    else:
        y = centered * scale.view(shape)
    return y.to(x.dtype)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """x (B, C, T) with `lengths` (B,) valid steps: training statistics over valid steps only."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None or not self.training:
            return super().forward(x)
        mask = length_mask(lengths, x.shape[2])[:, None, :].to(torch.float32)  # (B, 1, T)
        return _ghost(lambda part, m: _masked_batch_norm(self, part, m, (0, 2)), x, mask)


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """x (B, C, T, F), time on dim 2, with `lengths` (B,): statistics over valid steps only."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None or not self.training:
            return super().forward(x)
        mask = length_mask(lengths, x.shape[2])[:, None, :, None].to(torch.float32)  # (B,1,T,1)
        return _ghost(lambda part, m: _masked_batch_norm(self, part, m, (0, 2, 3)), x, mask)


class GhostBatchNorm1d(nn.BatchNorm1d):
    """nn.BatchNorm1d on (B, C) whose training statistics are per ghost batch (module docstring);
    the same parameters, buffers and state_dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        return _ghost(lambda part, _: super(GhostBatchNorm1d, self).forward(part), x, None)
