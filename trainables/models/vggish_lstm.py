"""`vggish_lstm`: the VGGish CNN on 96x64 log-mel patches -> LSTM over patches -> pooling -> head.

(B, T, 64) -> pad T to a multiple of 96 -> (B*P, 1, 96, 64) patches -> VGGish features
-> (B*P, 512w, 6, 4) -> flatten -> Linear embedding -> (B, P, E) -> (Bi)LSTM -> pool -> head.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from trainables.errors import ConfigError, DataError
from trainables.models.head import DNNHead
from trainables.models.param_checks import MAX_DEPTH, check_choice, check_float, check_int
from trainables.models.pooling import POOLINGS, mask_time, masked_pool
from trainables.models.sequence import MaskedLSTM

PATCH_FRAMES, PATCH_MELS = 96, 64  # VGGish: 0.96 s of 10 ms frames x 64 mel bands
VGGISH_LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")


def vggish_features(width: float) -> nn.Sequential:
    """The VGGish conv stack; module indices as torchvggish's `features` (weights load by key)."""
    layers: list[nn.Module] = []
    in_channels = 1
    for v in VGGISH_LAYOUT:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            out_channels = max(1, round(int(v) * width))
            conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
            # No batch norm in VGGish: with torch's default init the signal shrinks ~1/sqrt(3) per
            # conv and the patch embeddings start nearly constant. He init, as torchvision's VGG.
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU()]
            in_channels = out_channels
    return nn.Sequential(*layers)


def load_vggish_weights(features: nn.Sequential, path: str) -> None:
    """Load a local state dict (keys `features.N.*` as torchvggish, or bare `N.*`)."""
    file = Path(path)
    if not file.is_file():
        raise DataError(file, "VGGish weights file not found (weights are never downloaded at run "
                              "time: put the state dict there or set model.weights: null)")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    try:
        features.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(file, f"not a VGGish CNN state dict for this width: {exc}") from exc


class VggishLstm(nn.Module):
    """`width` scales every conv's channels (1.0 = VGGish, needed for pretrained `weights`)."""

    INPUTS: tuple[str, ...] = ("logmel",)

    def __init__(
        self,
        *,
        n_classes: int,
        n_features: int,
        width: float = 1.0,
        embedding: int = 128,
        weights: str | None = None,
        freeze_cnn: bool = False,
        lstm_hidden: int = 128,
        lstm_layers: int = 1,
        bidirectional: bool = False,
        pooling: str = "mean",
        dropout: float = 0.1,
        head_hidden: list[int] = [128, 128],  # noqa: B006 -- YAML-friendly, never mutated
        head_norm: str = "layer",
    ) -> None:
        super().__init__()
        if n_features != PATCH_MELS:
            raise ConfigError(
                "data.n_mels",
                f"vggish_lstm reads 96x64 log-mel patches, so it needs n_mels=64, but got "
                f"n_features={n_features}",
            )
        check_float("model.width", width, 1e-3, 16.0)
        check_int("model.embedding", embedding)
        check_int("model.lstm_hidden", lstm_hidden)
        check_int("model.lstm_layers", lstm_layers, maximum=MAX_DEPTH)
        check_float("model.dropout", dropout, 0.0, 1.0)
        self.pooling = check_choice("model.pooling", pooling, POOLINGS)
        self.cnn = vggish_features(width)
        if weights is not None:
            if width != 1.0:
                raise ConfigError(
                    "model.width", f"pretrained weights need width 1.0, but got {width!r}"
                )
            load_vggish_weights(self.cnn, weights)
        if freeze_cnn:
            self.cnn.requires_grad_(False)
        cnn_out = self.cnn[-3].out_channels * (PATCH_FRAMES // 16) * (PATCH_MELS // 16)
        self.embed = nn.Sequential(nn.Linear(cnn_out, embedding), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.lstm = MaskedLSTM(embedding, lstm_hidden, lstm_layers, bool(bidirectional), dropout)
        self.head = DNNHead(self.lstm.out_dim, n_classes, head_hidden, head_norm, dropout)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        batch, frames, mels = x.shape
        x = mask_time(x, lengths, dim=1)  # (B, T, 64); the last patch is padded with zeros
        patches = -(-frames // PATCH_FRAMES)  # ceil, from the static shape
        x = nn.functional.pad(x, (0, 0, 0, patches * PATCH_FRAMES - frames))
        x = x.reshape(batch * patches, 1, PATCH_FRAMES, mels)  # (B*P, 1, 96, 64)
        h = self.cnn(x)  # (B*P, C, 6, 4)
        emb = self.embed(h.flatten(1)).view(batch, patches, -1)  # (B, P, E)
        # A patch counts when it holds at least one valid frame.
        n = torch.div(lengths + PATCH_FRAMES - 1, PATCH_FRAMES, rounding_mode="floor")
        seq, layers = self.lstm(self.dropout(emb), n)  # (B, P, H or 2H)
        logits, head_hiddens = self.head(masked_pool(seq, n, self.pooling))
        if not return_hidden:
            return logits
        cnn_pooled = h.mean((2, 3)).view(batch, patches, -1)  # (B, P, C)
        hiddens = [masked_pool(cnn_pooled, n, "mean"), masked_pool(emb, n, "mean")]
        hiddens += [masked_pool(o, n, self.pooling) for o in layers]
        return logits, hiddens + head_hiddens
