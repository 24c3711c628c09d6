"""Masked pooling over time and the lengths bookkeeping that feeds it.

Everything here is tensor arithmetic on `lengths` (no .item(), no boolean indexing), so models stay
traceable on meta / fake tensors by the memory estimator, and data-independent in their shapes.
"""

from __future__ import annotations

import torch

from trainables.models.param_checks import check_choice

POOLINGS = ("max", "mean", "last")


def length_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, steps) bool, True on valid steps; lengths clamped to [1, steps] (`valid_lengths`)."""
    lengths = valid_lengths(lengths, steps)
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def valid_lengths(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    # At least one step: an utterance shorter than a model's receptive field still gets pooled (on
    # its first, partly padded step) instead of dividing by zero or taking the max of nothing.
    return lengths.to(torch.long).clamp(min=1, max=steps)


def conv_lengths(
    lengths: torch.Tensor, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> torch.Tensor:
    """Output lengths of a conv/pool layer (floor mode), integer arithmetic (torch docs)."""
    span = dilation * (kernel - 1) + 1
    out = torch.div(lengths + 2 * padding - span, stride, rounding_mode="floor") + 1
    return out.clamp(min=0)


def mask_time(x: torch.Tensor, lengths: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero the padded steps of `x` along its time axis `dim` (x is batch-first)."""
    mask = length_mask(lengths, x.shape[dim])  # (B, T)
    shape = [1] * x.dim()
    shape[0], shape[dim] = mask.shape
    return x * mask.view(shape).to(x.dtype)


def masked_pool(x: torch.Tensor, lengths: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool (B, T, D) over the valid steps of each row -> (B, D)."""
    batch, steps, _ = x.shape
    lengths = valid_lengths(lengths, steps)
    mask = length_mask(lengths, steps)[:, :, None]  # (B, T, 1)
    if mode == "mean":
        return (x * mask.to(x.dtype)).sum(1) / lengths[:, None].to(x.dtype)
    if mode == "max":
        return x.masked_fill(~mask, torch.finfo(x.dtype).min).amax(1)
    if mode == "last":
        index = (lengths - 1).view(batch, 1, 1).expand(batch, 1, x.shape[2])  # (B, 1, D)
        return x.gather(1, index).squeeze(1)
    check_choice("model.pooling", mode, POOLINGS)
    raise AssertionError("unreachable")
