"""The shared pieces: lengths arithmetic, masked pooling, the padding-exact BiLSTM, the head."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from trainables.errors import ConfigError
from trainables.models.head import DNNHead
from trainables.models.pooling import conv_lengths, masked_pool
from trainables.models.sequence import MaskedLSTM, reverse_within_length, sinusoidal_positions


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"), [(1, 1, 0), (5, 2, 0), (3, 2, 1), (64, 8, 0)]
)
def test_conv_lengths_match_a_real_convolution(kernel, stride, padding) -> None:
    conv = nn.Conv1d(1, 1, kernel, stride, padding)
    for n in range(kernel, kernel + 20):
        expected = conv(torch.zeros(1, 1, n)).shape[-1]
        assert conv_lengths(torch.tensor([n]), kernel, stride, padding).item() == expected


def test_masked_pool_matches_a_loop_over_valid_steps() -> None:
    x = torch.randn(4, 7, 3)
    lengths = torch.tensor([7, 1, 4, 0])  # 0 is pooled as 1: a row never pools nothing
    for mode, ref in [
        ("mean", lambda r: r.mean(0)), ("max", lambda r: r.amax(0)), ("last", lambda r: r[-1])
    ]:
        out = masked_pool(x, lengths, mode)
        for i, n in enumerate(lengths.clamp(min=1).tolist()):
            torch.testing.assert_close(out[i], ref(x[i, :n]))


def test_masked_pool_rejects_an_unknown_mode() -> None:
    with pytest.raises(ConfigError, match="'avg'") as err:
        masked_pool(torch.zeros(1, 2, 3), torch.tensor([2]), "avg")
    assert err.value.key == "model.pooling"


def test_reverse_within_length_reverses_valid_steps_only() -> None:
    x = torch.arange(10.0).view(2, 5, 1)
    out = reverse_within_length(x, torch.tensor([5, 3]))
    assert out[:, :, 0].tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]
    torch.testing.assert_close(reverse_within_length(out, torch.tensor([5, 3])), x)


@pytest.mark.parametrize("layers", [1, 2])
def test_masked_bilstm_equals_packed_nn_lstm_on_valid_steps(layers) -> None:
    """The reference: nn.LSTM(bidirectional) on pack_padded_sequence (which needs CPU lengths)."""
    torch.manual_seed(0)
    ours = MaskedLSTM(3, 5, layers, bidirectional=True).eval()
    ref = nn.LSTM(3, 5, layers, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for i in range(layers):
            pairs = [("", ours.forward_layers[i]), ("_reverse", ours.backward_layers[i])]
            for suffix, lstm in pairs:
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref, f"{name}_l{i}{suffix}").copy_(getattr(lstm, f"{name}_l0"))
    x = torch.randn(3, 6, 3)
    lengths = torch.tensor([6, 2, 4])
    out, per_layer = ours(x, lengths)
    packed, _ = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    expected, _ = pad_packed_sequence(packed, batch_first=True, total_length=6)
    assert out.shape == (3, 6, 10) and len(per_layer) == layers
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[i, :n], expected[i, :n])


def test_sinusoidal_positions_are_distinct_and_bounded() -> None:
    pe = sinusoidal_positions(50, 15, torch.device("cpu"))
    assert pe.shape == (50, 15) and pe.abs().max() <= 1.0
    assert torch.cdist(pe, pe).add(torch.eye(50)).min() > 0.1  # every position is distinguishable


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_head_returns_logits_and_each_hidden_activation(norm) -> None:
    head = DNNHead(10, 4, [16, 8], norm=norm, dropout=0.0)
    logits, hiddens = head(torch.randn(5, 10))
    assert logits.shape == (5, 4) and [h.shape for h in hiddens] == [(5, 16), (5, 8)]
    assert all((h >= 0).all() for h in hiddens)  # post-ReLU
    norms = [m for m in head.modules() if isinstance(m, nn.BatchNorm1d | nn.LayerNorm)]
    assert len(norms) == (0 if norm == "none" else 2)


def test_head_without_hidden_layers_is_linear() -> None:
    head = DNNHead(10, 4, [])
    logits, hiddens = head(torch.randn(5, 10))
    assert hiddens == [] and logits.shape == (5, 4)
    assert sum(p.numel() for p in head.parameters()) == 10 * 4 + 4
