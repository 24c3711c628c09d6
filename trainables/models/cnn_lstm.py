"""`cnn_lstm`: 1D CNN on the raw waveform -> (Bi)LSTM over its steps -> masked pooling -> head."""

from __future__ import annotations

import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.models.conv import ConvStack1d
from trainables.models.head import DNNHead
from trainables.models.param_checks import MAX_DEPTH, check_choice, check_float, check_int
from trainables.models.pooling import POOLINGS, mask_time, masked_pool
from trainables.models.sequence import MaskedLSTM


def require_raw(family: str, n_features: int) -> None:
    if n_features != 1:
        raise ConfigError(
            "data.features",
            f"{family} reads the raw waveform (n_features=1), but got n_features={n_features}",
        )


class CnnLstm(nn.Module):
    """Defaults: 4 s at 16 kHz -> strides 8*4*4 = 128 -> ~500 LSTM steps of 128 channels (8 ms)."""

    INPUTS: tuple[str, ...] = ("raw",)

    def __init__(
        self,
        *,
        n_classes: int,
        n_features: int,
        channels: list[int] = [32, 64, 128],  # noqa: B006 -- YAML-friendly default, never mutated
        kernel_sizes: list[int] = [64, 8, 8],  # noqa: B006
        strides: list[int] = [8, 4, 4],  # noqa: B006
        batch_norm: bool = True,
        lstm_hidden: int = 64,
        lstm_layers: int = 1,
        bidirectional: bool = True,
        pooling: str = "mean",
        dropout: float = 0.1,
        head_hidden: list[int] = [128, 128],  # noqa: B006
        head_norm: str = "layer",
    ) -> None:
        super().__init__()
        require_raw("cnn_lstm", n_features)
        self.pooling = check_choice("model.pooling", pooling, POOLINGS)
        check_int("model.lstm_hidden", lstm_hidden)
        check_int("model.lstm_layers", lstm_layers, maximum=MAX_DEPTH)
        check_float("model.dropout", dropout, 0.0, 1.0)
        self.cnn = ConvStack1d(1, channels, kernel_sizes, strides, bool(batch_norm))
        self.dropout = nn.Dropout(dropout)
        self.lstm = MaskedLSTM(
            self.cnn.out_dim, lstm_hidden, lstm_layers, bool(bidirectional), dropout
        )
        self.head = DNNHead(self.lstm.out_dim, n_classes, head_hidden, head_norm, dropout)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        x = mask_time(x, lengths, dim=1)  # (B, S); the contract says zero padding: make sure
        h, steps, blocks = self.cnn(x[:, None, :], lengths)  # (B, C, T), (B,)
        seq, layers = self.lstm(self.dropout(h.transpose(1, 2)), steps)  # (B, T, H or 2H)
        logits, head_hiddens = self.head(masked_pool(seq, steps, self.pooling))  # (B, n_classes)
        if not return_hidden:
            return logits
        # Conv features are mean-pooled (their `last` step is an arbitrary window); LSTM outputs
        # use the model's pooling, the representation the head sees.
        hiddens = [masked_pool(b.transpose(1, 2), n, "mean") for b, n in blocks]
        hiddens += [masked_pool(o, steps, self.pooling) for o in layers]
        return logits, hiddens + head_hiddens
