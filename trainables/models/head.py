"""The DNN head shared by every family: [Linear -> norm -> ReLU -> dropout] * n -> Linear."""

from __future__ import annotations

import torch
from torch import nn

from trainables.models.param_checks import check_choice, check_float, check_int_list

NORMS = ("none", "batch", "layer")


class DNNHead(nn.Module):
    """Maps a pooled utterance vector (B, in_dim) to logits (B, n_classes).

    `hidden` = sizes of the hidden layers ([] = a single linear layer). `norm="batch"` normalises
    with batch statistics while training, so it cannot train on a micro-batch of 1; "layer" can.
    `prefix` names the owning family's keys in error messages (`model.head_hidden`).
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: list[int],
        norm: str = "layer",
        dropout: float = 0.0,
        prefix: str = "model.head_",
    ) -> None:
        super().__init__()
        hidden = check_int_list(prefix + "hidden", hidden, allow_empty=True)
        check_choice(prefix + "norm", norm, NORMS)
        check_float(prefix + "dropout", dropout, 0.0, 1.0)
        self.layers = nn.ModuleList()
        for size in hidden:
            norm_layer: nn.Module = nn.Identity()
            if norm == "batch":
                norm_layer = nn.BatchNorm1d(size)
            elif norm == "layer":
                norm_layer = nn.LayerNorm(size)
            self.layers.append(
                nn.Sequential(nn.Linear(in_dim, size), norm_layer, nn.ReLU(), nn.Dropout(dropout))
            )
            in_dim = size
        self.out = nn.Linear(in_dim, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        hiddens = []
        for layer in self.layers:
            x = layer(x)  # (B, hidden_i)
            hiddens.append(x)
        return self.out(x), hiddens  # (B, n_classes), [(B, hidden_i)]
