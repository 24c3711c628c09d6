"""Sequence models shared by the families: a padding-exact (Bi)LSTM and a Transformer stack.

Both take (B, T, D) plus valid lengths (B,) and return the output sequence and every layer's
output, so a family can pool any of them as distillation hiddens. Neither syncs with the host.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainables.models.pooling import length_mask, valid_lengths
from trainables.models.sample_noise import SampleEncoderLayer


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's valid steps in place of order, leave its padding where it is. (B, T, D).

    Its own inverse. The index is built with tensor arithmetic, so no host sync and no packing.
    """
    batch, steps, dim = x.shape
    lengths = valid_lengths(lengths, steps)[:, None]  # (B, 1)
    t = torch.arange(steps, device=x.device)[None, :]  # (1, T)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (B, T)
    return x.gather(1, index[:, :, None].expand(batch, steps, dim))


class MaskedLSTM(nn.Module):
    """A stack of (Bi)LSTM layers whose outputs on valid steps ignore the zero padding exactly.

    Why not nn.LSTM(bidirectional=True): on a padded batch its backward direction starts at the END
    of the padded row, so it reads the zero padding first and the valid steps' outputs depend on
    how much padding there is. pack_padded_sequence fixes that but needs lengths on the CPU (a host
    sync, and impossible on fake tensors). Instead the backward direction is a forward LSTM run on
    each row reversed within its own length; its state at a valid step has seen valid steps only.
    The cost: the two directions run as two kernels instead of one fused cuDNN call.
    """

    def __init__(
        self, in_dim: int, hidden: int, layers: int, bidirectional: bool, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        for _ in range(layers):
            self.forward_layers.append(nn.LSTM(in_dim, hidden, batch_first=True))
            if bidirectional:
                self.backward_layers.append(nn.LSTM(in_dim, hidden, batch_first=True))
            in_dim = hidden * (2 if bidirectional else 1)
        self.out_dim = in_dim
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outputs = []
        for i, lstm in enumerate(self.forward_layers):
            if i > 0:
                x = self.dropout(x)  # between layers, as nn.LSTM(dropout=...) does
            h, _ = lstm(x)  # (B, T, H); causal, so valid steps never see the padding
            if self.bidirectional:
                back, _ = self.backward_layers[i](reverse_within_length(x, lengths))
                h = torch.cat([h, reverse_within_length(back, lengths)], dim=-1)  # (B, T, 2H)
            x = h
            outputs.append(x)
        return x, outputs


def sinusoidal_positions(steps: int, dim: int, device: torch.device) -> torch.Tensor:
    """(T, D) fixed sin/cos positional encoding (Vaswani et al.), computed for any length."""
    position = torch.arange(steps, device=device, dtype=torch.float32)[:, None]  # (T, 1)
    freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )  # (ceil(D/2),)
    angles = position * freq  # (T, ceil(D/2))
    pe = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (T, 2*ceil(D/2))
    return pe[:, :dim]


class TransformerStack(nn.Module):
    """Positional encoding + `layers` encoder layers with a key padding mask.

    An nn.ModuleList of encoder layers rather than nn.TransformerEncoder: the latter deep-copies
    one layer (awkward on the meta device) and may convert to nested tensors. SampleEncoderLayer:
    nn.TransformerEncoderLayer with per-sample attention dropout (models/sample_noise.py).
    """

    def __init__(
        self,
        d_model: int,
        heads: int,
        ff_dim: int,
        layers: int,
        dropout: float,
        norm_first: bool = True,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            SampleEncoderLayer(
                d_model, heads, ff_dim, dropout, batch_first=True, norm_first=norm_first
            )
            for _ in range(layers)
        )
        # Pre-norm layers leave the residual stream un-normalised: close it with a final norm.
        self.final_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        steps = x.shape[1]
        x = self.dropout(x + sinusoidal_positions(steps, x.shape[2], x.device).to(x.dtype))
        padding = ~length_mask(lengths, steps)  # (B, T), True = ignore this key
        outputs = []
        for i, layer in enumerate(self.layers):
            x = layer(x, src_key_padding_mask=padding)  # (B, T, D)
            if i == len(self.layers) - 1:
                x = self.final_norm(x)
            outputs.append(x)
        return x, outputs
