"""A 1D CNN over the raw waveform, shared by `cnn_lstm` and the raw front-end of `transformer`."""

from __future__ import annotations

import torch
from torch import nn

from trainables.models.masked_norm import MaskedBatchNorm1d
from trainables.models.param_checks import check_int_list
from trainables.models.pooling import conv_lengths


class ConvStack1d(nn.Module):
    """[Conv1d(k_i, stride s_i, no padding) -> BatchNorm (optional) -> ReLU] per `channels` entry.

    Convolutions are 'valid' (padding 0) on purpose: an output step whose window lies inside the
    valid samples never reads the zero padding, so the valid outputs do not depend on how much
    padding follows, and `lengths` map through with integer arithmetic. (B, 1, S) -> (B, C, T).
    BatchNorm takes its training statistics over the valid steps only (MaskedBatchNorm1d).
    """

    def __init__(
        self,
        in_channels: int,
        channels: list[int],
        kernel_sizes: list[int],
        strides: list[int],
        batch_norm: bool,
        prefix: str = "model.",
    ) -> None:
        super().__init__()
        channels = check_int_list(prefix + "channels", channels)
        n = len(channels)
        self.kernel_sizes = check_int_list(prefix + "kernel_sizes", kernel_sizes, length=n)
        self.strides = check_int_list(prefix + "strides", strides, length=n)
        self.blocks = nn.ModuleList()
        for out_channels, k, s in zip(channels, self.kernel_sizes, self.strides):
            self.blocks.append(
                nn.Sequential(
                    nn.Conv1d(in_channels, out_channels, k, stride=s, bias=not batch_norm),
                    MaskedBatchNorm1d(out_channels) if batch_norm else nn.Identity(),
                    nn.ReLU(),
                )
            )
            in_channels = out_channels
        self.out_dim = in_channels

    def min_samples(self) -> int:
        """Shortest input that yields one output step (shorter inputs are zero-padded to it)."""
        need = 1
        for k, s in zip(reversed(self.kernel_sizes), reversed(self.strides)):
            need = (need - 1) * s + k
        return need

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """x (B, C_in, S) -> (B, C, T), lengths in steps (B,), every block's (output, lengths)."""
        short = self.min_samples() - x.shape[-1]
        if short > 0:  # a static shape check, not data-dependent
            x = nn.functional.pad(x, (0, short))
        outputs = []
        for block, k, s in zip(self.blocks, self.kernel_sizes, self.strides):
            conv, norm, act = block  # a Sequential: the state_dict keys of older checkpoints
            lengths = conv_lengths(lengths, k, s)
            h = conv(x)  # (B, C_i, T_i)
            x = act(norm(h, lengths) if isinstance(norm, MaskedBatchNorm1d) else norm(h))
            outputs.append((x, lengths))
        return x, lengths, outputs
