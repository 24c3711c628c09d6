"""`transformer`: Transformer encoder over frame features, or raw audio through a 1D CNN front-end.

frames (B, T, F) --Linear--> (B, T, d_model)
raw    (B, S) --ConvStack1d--> (B, C, T) --Linear--> (B, T, d_model)
then + sinusoidal positions -> `layers` encoder layers (key padding mask) -> masked pool -> head.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.models.conv import ConvStack1d
from trainables.models.head import DNNHead
from trainables.models.param_checks import (
    MAX_DEPTH,
    Constraint,
    check_choice,
    check_float,
    check_int,
)
from trainables.models.pooling import POOLINGS, mask_time, masked_pool
from trainables.models.sequence import TransformerStack

INITS = ("normal", "xavier", "kaiming")
FRONTENDS = ("auto", "none", "cnn")


class Transformer(nn.Module):
    """`frontend`: "cnn" = raw waveform (n_features=1), "none" = frame features, "auto" picks."""

    INPUTS: tuple[str, ...] = ("logmel", "mfcc", "compare", "egemaps", "raw")
    CONSTRAINTS: tuple[Constraint, ...] = (
        Constraint(("d_model", "heads"), "d_model % heads == 0 (each head gets d_model/heads)",
                   lambda d_model, heads: d_model % heads == 0),
    )

    def __init__(
        self,
        *,
        n_classes: int,
        n_features: int,
        layers: int = 2,
        d_model: int = 64,
        heads: int = 4,
        ff_dim: int = 128,
        dropout: float = 0.1,
        pooling: str = "mean",
        init: str = "xavier",
        norm_first: bool = True,
        frontend: str = "auto",
        # Raw front-end: strides 5*8*8 = 320 samples = 20 ms per step (200 steps at 4 s).
        cnn_channels: list[int] = [64, 64, 64],  # noqa: B006 -- YAML-friendly, never mutated
        cnn_kernel_sizes: list[int] = [10, 8, 8],  # noqa: B006
        cnn_strides: list[int] = [5, 8, 8],  # noqa: B006
        head_hidden: list[int] = [128, 128],  # noqa: B006
        head_norm: str = "layer",
    ) -> None:
        super().__init__()
        check_int("model.layers", layers, maximum=MAX_DEPTH)
        check_int("model.d_model", d_model)
        check_int("model.heads", heads)
        check_int("model.ff_dim", ff_dim)
        check_float("model.dropout", dropout, 0.0, 1.0)
        self.pooling = check_choice("model.pooling", pooling, POOLINGS)
        check_choice("model.init", init, INITS)
        check_choice("model.frontend", frontend, FRONTENDS)
        if d_model % heads:
            raise ConfigError(
                "model.d_model",
                f"d_model must be divisible by heads (each head gets d_model/heads dims), "
                f"but got d_model={d_model}, heads={heads}",
            )
        raw = n_features == 1
        if frontend == "auto":
            frontend = "cnn" if raw else "none"
        if raw != (frontend == "cnn"):
            raise ConfigError(
                "model.frontend",
                "frontend 'cnn' is for the raw waveform (n_features=1) and 'none' for frame "
                f"features, but got frontend={frontend!r} with n_features={n_features}",
            )
        self.cnn = None
        in_dim = n_features
        if frontend == "cnn":
            self.cnn = ConvStack1d(
                1, cnn_channels, cnn_kernel_sizes, cnn_strides, True, prefix="model.cnn_"
            )
            in_dim = self.cnn.out_dim
        self.proj = nn.Linear(in_dim, d_model)
        self.encoder = TransformerStack(d_model, heads, ff_dim, layers, dropout, bool(norm_first))
        self.head = DNNHead(d_model, n_classes, head_hidden, head_norm, dropout)
        self._init_weights(init)

    def _init_weights(self, init: str) -> None:
        # Matrices of the projection and the encoder (attention in_proj is a bare Parameter, so
        # go by parameter, not by module type); norms keep ones/zeros, biases start at zero.
        for name, p in [*self.proj.named_parameters(), *self.encoder.named_parameters()]:
            if "norm" in name:
                continue
            if p.dim() < 2:
                nn.init.zeros_(p)
            elif init == "normal":
                nn.init.normal_(p, std=0.02)
            elif init == "xavier":
                nn.init.xavier_uniform_(p)
            else:
                nn.init.kaiming_uniform_(p, nonlinearity="relu")

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        x = mask_time(x, lengths, dim=1)  # (B, S) or (B, T, F); padding really zero
        if self.cnn is not None:
            h, lengths, _ = self.cnn(x[:, None, :], lengths)  # (B, C, T)
            x = h.transpose(1, 2)  # (B, T, C)
        x = self.proj(x)  # (B, T, d_model)
        seq, layers = self.encoder(x, lengths)  # (B, T, d_model), one per layer
        logits, head_hiddens = self.head(masked_pool(seq, lengths, self.pooling))
        if not return_hidden:
            return logits
        hiddens = [masked_pool(h, lengths, self.pooling) for h in [x, *layers]]
        return logits, hiddens + head_hiddens
