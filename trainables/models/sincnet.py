"""`sincnet`: SincNet front-end per 200 ms frame -> sequence model over frames -> pooling -> head.

(B, S) --SincFrontend--> (B, n_frames, D) (n_frames = 400, D = 6420 at 4 s with the defaults)
--LSTM | BiLSTM | Transformer--> (B, n_frames, H) --masked pooling--> (B, H) --head--> logits.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.models.cnn_lstm import require_raw
from trainables.models.head import DNNHead
from trainables.models.param_checks import (
    MAX_DEPTH,
    Constraint,
    check_choice,
    check_float,
    check_int,
)
from trainables.models.pooling import POOLINGS, mask_time, masked_pool
from trainables.models.sequence import MaskedLSTM, TransformerStack
from trainables.models.sinc_frontend import SincFrontend

SEQUENCES = ("lstm", "bilstm", "transformer")


class SincNet(nn.Module):
    """Front-end defaults = SincNet's reference (see SincFrontend); `framing` picks how it runs:
    "per_frame" (reference layout, lean), "naive" (reference code), "shared" (whole-wave)."""

    INPUTS: tuple[str, ...] = ("raw",)
    CONSTRAINTS: tuple[Constraint, ...] = (
        Constraint(("sequence", "seq_hidden", "seq_heads"),
                   "seq_hidden % seq_heads == 0 when sequence is transformer",
                   lambda sequence, seq_hidden, seq_heads: (
                       sequence != "transformer" or seq_hidden % seq_heads == 0)),
        Constraint(("conv_channels", "conv_kernels", "pools"),
                   "len(conv_kernels) == len(conv_channels) and len(pools) == "
                   "len(conv_channels) + 1",
                   lambda conv_channels, conv_kernels, pools: (
                       len(conv_kernels) == len(conv_channels)
                       and len(pools) == len(conv_channels) + 1)),
    )

    def __init__(
        self,
        *,
        n_classes: int,
        n_features: int,
        framing: str = "per_frame",
        sinc_filters: int = 80,
        sinc_taps: int = 251,
        conv_channels: list[int] = [60, 60],  # noqa: B006 -- YAML-friendly, never mutated
        conv_kernels: list[int] = [5, 5],  # noqa: B006
        pools: list[int] = [3, 3, 3],  # noqa: B006
        win: int = 3200,
        shift: int = 160,
        sequence: str = "lstm",
        seq_hidden: int = 256,
        seq_layers: int = 1,
        seq_heads: int = 4,
        pooling: str = "mean",
        dropout: float = 0.1,
        head_hidden: list[int] = [128, 128],  # noqa: B006
        head_norm: str = "layer",
        sample_rate: int = 16_000,  # of the waveform: 16000 / data.downsample
    ) -> None:
        super().__init__()
        require_raw("sincnet", n_features)
        check_int("model.sample_rate", sample_rate)
        check_choice("model.sequence", sequence, SEQUENCES)
        check_int("model.seq_hidden", seq_hidden)
        check_int("model.seq_layers", seq_layers, maximum=MAX_DEPTH)
        check_int("model.seq_heads", seq_heads)
        check_float("model.dropout", dropout, 0.0, 1.0)
        self.pooling = check_choice("model.pooling", pooling, POOLINGS)
        self.frontend = SincFrontend(
            framing=framing, sinc_filters=sinc_filters, sinc_taps=sinc_taps,
            conv_channels=conv_channels, conv_kernels=conv_kernels, pools=pools,
            win=win, shift=shift, sample_rate=sample_rate,
        )
        self.dropout = nn.Dropout(dropout)
        self.proj: nn.Module = nn.Identity()
        if sequence == "transformer":
            if seq_hidden % seq_heads:
                raise ConfigError(
                    "model.seq_hidden",
                    f"seq_hidden must be divisible by seq_heads, but got seq_hidden={seq_hidden}, "
                    f"seq_heads={seq_heads}",
                )
            self.proj = nn.Linear(self.frontend.out_dim, seq_hidden)
            self.sequence: nn.Module = TransformerStack(
                seq_hidden, seq_heads, 2 * seq_hidden, seq_layers, dropout
            )
            out_dim = seq_hidden
        else:
            self.sequence = MaskedLSTM(
                self.frontend.out_dim, seq_hidden, seq_layers, sequence == "bilstm", dropout
            )
            out_dim = self.sequence.out_dim
        self.head = DNNHead(out_dim, n_classes, head_hidden, head_norm, dropout)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        x = mask_time(x, lengths, dim=1)  # (B, S)
        out = self.frontend(x, lengths, return_hidden=return_hidden)
        feats, front = out if return_hidden else (out, [])  # (B, n, D), [(B, C_i)]
        frames = self.frontend.frame_lengths(lengths)  # (B,) frames starting inside the audio
        seq, layers = self.sequence(self.proj(self.dropout(feats)), frames)  # (B, n, H)
        logits, head_hiddens = self.head(masked_pool(seq, frames, self.pooling))
        if not return_hidden:
            return logits
        hiddens = front + [masked_pool(o, frames, self.pooling) for o in layers]
        return logits, hiddens + head_hiddens
