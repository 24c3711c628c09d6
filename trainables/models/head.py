"""The DNN head shared by every family: [Linear -> norm -> ReLU -> dropout] * n -> Linear."""

from __future__ import annotations

import torch
from torch import nn

from trainables.models.masked_norm import GhostBatchNorm1d
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
                norm_layer = GhostBatchNorm1d(size)
            elif norm == "layer":
                norm_layer = nn.LayerNorm(size)
            # no bias before BatchNorm: it cancels, and AdamW would turn its float-noise gradient
            # into full-size steps (numbers that then depend on the micro-batch's rounding)
            linear = nn.Linear(in_dim, size, bias=norm != "batch")
            self.layers.append(nn.Sequential(linear, norm_layer, nn.ReLU(), nn.Dropout(dropout)))
            in_dim = size
        self.out = nn.Linear(in_dim, n_classes)
        self._register_load_state_dict_pre_hook(_fold_bias_into_running_mean)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        hiddens = []
        for layer in self.layers:
            x = layer(x)  # (B, hidden_i)
            hiddens.append(x)
        return self.out(x), hiddens  # (B, n_classes), [(B, hidden_i)]


def _fold_bias_into_running_mean(state_dict: dict[str, torch.Tensor], prefix: str,
                                 *args: object) -> None:
    """Older checkpoints have a Linear bias before each BatchNorm: BN(Wx + b) with running mean m
    equals BN(Wx) with running mean m - b, so the bias is folded into the mean and dropped."""
    for key in [k for k in state_dict if k.startswith(prefix + "layers.")
                and k.endswith(".0.bias")]:
        mean_key = key[: -len("0.bias")] + "1.running_mean"
        if mean_key in state_dict:
            state_dict[mean_key] = state_dict[mean_key] - state_dict.pop(key)
