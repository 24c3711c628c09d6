"""`resnet_lstm`: 2D ResNet on log-mel (time x mel) -> BiLSTM over time -> masked pooling -> head.

(B, T, F) -> (B, 1, T, F) -> stem -> stages of BasicBlocks (stage i > 0 halves time and mel)
-> (B, C, T', F') -> flatten C*F' per step -> (B, T', C*F') -> BiLSTM -> pool -> head.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.models.head import DNNHead
from trainables.models.masked_norm import MaskedBatchNorm2d
from trainables.models.param_checks import (
    MAX_DEPTH,
    check_choice,
    check_float,
    check_int,
    check_int_list,
)
from trainables.models.pooling import POOLINGS, conv_lengths, mask_time, masked_pool
from trainables.models.sequence import MaskedLSTM


class BasicBlock(nn.Module):
    """Two 3x3 convs + identity (or 1x1 projection) shortcut, as in ResNet-18.

    Padded time steps are zeroed after every conv: a 3x3 conv at the last valid step reads one step
    beyond it, which must be zero as it would be without the padding (BN and ReLU make it nonzero).
    BatchNorm takes its training statistics over the valid steps only (MaskedBatchNorm2d).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = MaskedBatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = MaskedBatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                MaskedBatchNorm2d(out_channels),
            )

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out_lengths = conv_lengths(lengths, 3, self.stride, padding=1)
        h = self.bn1(self.conv1(x), out_lengths)  # (B, C, T', F')
        h = mask_time(torch.relu(h), out_lengths, dim=2)
        h = self.bn2(self.conv2(h), out_lengths)
        if isinstance(self.shortcut, nn.Sequential):  # 1x1 projection conv -> BN
            short = self.shortcut[1](self.shortcut[0](x), out_lengths)
        else:
            short = x
        h = torch.relu(h + short)
        return mask_time(h, out_lengths, dim=2), out_lengths


class ResNetLstm(nn.Module):
    """`blocks` BasicBlocks per stage, one stage per entry of `channels`."""

    INPUTS: tuple[str, ...] = ("logmel", "mfcc")

    def __init__(
        self,
        *,
        n_classes: int,
        n_features: int,
        channels: list[int] = [16, 32, 64],  # noqa: B006 -- YAML-friendly, never mutated
        blocks: int = 1,
        lstm_hidden: int = 64,
        lstm_layers: int = 1,
        bidirectional: bool = True,
        pooling: str = "mean",
        dropout: float = 0.1,
        head_hidden: list[int] = [128, 128],  # noqa: B006
        head_norm: str = "layer",
    ) -> None:
        super().__init__()
        channels = check_int_list("model.channels", channels)
        check_int("model.blocks", blocks, maximum=MAX_DEPTH)
        check_int("model.lstm_hidden", lstm_hidden)
        check_int("model.lstm_layers", lstm_layers, maximum=MAX_DEPTH)
        check_float("model.dropout", dropout, 0.0, 1.0)
        self.pooling = check_choice("model.pooling", pooling, POOLINGS)
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels[0], 3, 1, 1, bias=False), MaskedBatchNorm2d(channels[0]),
            nn.ReLU(),
        )
        self.stages = nn.ModuleList()
        in_channels, mels = channels[0], n_features
        for i, c in enumerate(channels):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(in_channels, c, stride)]
            stage += [BasicBlock(c, c, 1) for _ in range(blocks - 1)]
            self.stages.append(nn.ModuleList(stage))
            in_channels = c
            mels = (mels - 1) // stride + 1  # 3x3, padding 1
        self.dropout = nn.Dropout(dropout)
        self.lstm = MaskedLSTM(
            in_channels * mels, lstm_hidden, lstm_layers, bool(bidirectional), dropout
        )
        self.head = DNNHead(self.lstm.out_dim, n_classes, head_hidden, head_norm, dropout)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        x = mask_time(x, lengths, dim=1)  # (B, T, F)
        conv, norm, act = self.stem  # a Sequential: the state_dict keys of older checkpoints
        h = mask_time(act(norm(conv(x[:, None]), lengths)), lengths, dim=2)  # (B, C0, T, F)
        maps = [(h, lengths)]
        for stage in self.stages:
            for block in stage:
                h, lengths = block(h, lengths)  # (B, C_i, T_i, F_i)
            maps.append((h, lengths))
        seq = h.permute(0, 2, 1, 3).flatten(2)  # (B, T', C*F')
        seq, layers = self.lstm(self.dropout(seq), lengths)  # (B, T', H or 2H)
        logits, head_hiddens = self.head(masked_pool(seq, lengths, self.pooling))
        if not return_hidden:
            return logits
        # Feature maps: mean over mel, then mean over valid time -> (B, C_i).
        hiddens = [masked_pool(m.mean(3).transpose(1, 2), n, "mean") for m, n in maps]
        hiddens += [masked_pool(o, lengths, self.pooling) for o in layers]
        return logits, hiddens + head_hiddens
