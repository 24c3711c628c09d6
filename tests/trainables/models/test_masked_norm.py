"""Issue 13: BatchNorm statistics over valid steps only (trainables/models/masked_norm.py), in the
raw conv front-end (cnn_lstm, transformer) and in resnet_lstm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.models import build_model
from trainables.models.conv import ConvStack1d
from trainables.models.pooling import length_mask

SR = 16_000


def _clips() -> tuple[torch.Tensor, torch.Tensor]:
    """A 3 s and a 0.5 s clip in one zero-padded batch (B, S)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3 * SR, generator=g) * 0.3 + 0.2
    lengths = torch.tensor([3 * SR, SR // 2])
    return x * length_mask(lengths, x.shape[1]).float(), lengths


def _bn_inputs_and_outputs(model: nn.Module) -> list[tuple[nn.Module, list]]:
    seen = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight.dim() == 1:
            record: list = []
            module.register_forward_hook(
                lambda mod, args, out, record=record: record.append((args[0], out)))
            seen.append((module, record))
    return seen


def _valid_stats(t: torch.Tensor, steps: torch.Tensor, time_dim: int) -> tuple:
    """Per-channel mean and biased var of t over the valid steps (time on `time_dim`)."""
    mask = length_mask(steps, t.shape[time_dim]).float()
    shape = [1] * t.dim()
    shape[0], shape[time_dim] = mask.shape
    m = mask.view(shape).expand_as(t)
    dims = tuple(d for d in range(t.dim()) if d != 1)
    mean = (t * m).sum(dims) / m.sum(dims)
    var = ((t - mean.view([1, -1] + [1] * (t.dim() - 2))) ** 2 * m).sum(dims) / m.sum(dims)
    return mean, var


def test_conv_front_end_normalizes_with_the_valid_steps_statistics() -> None:
    torch.manual_seed(0)
    stack = ConvStack1d(1, [8, 8], [64, 8], [8, 4], batch_norm=True).train()
    x, lengths = _clips()
    hooks = _bn_inputs_and_outputs(stack)
    with torch.no_grad():
        out, _, blocks = stack(x[:, None, :], lengths)
    ratios = []
    for (bn, record), (_, steps) in zip(hooks, blocks, strict=True):
        before, after = record[0]
        valid_mean, valid_var = _valid_stats(before, steps, 2)
        padded_var = before.var(dim=(0, 2), unbiased=False)
        ratios.append(float((padded_var / valid_var).mean()))
        # the batch variance used is the valid steps' one: valid outputs are standardized
        out_mean, out_var = _valid_stats(after, steps, 2)
        torch.testing.assert_close(out_mean, torch.zeros_like(out_mean), atol=1e-4, rtol=0)
        torch.testing.assert_close(out_var, torch.ones_like(out_var), atol=1e-3, rtol=0)
        # running statistics: momentum 0.1 from (0, 1), unbiased variance, as nn.BatchNorm
        n = float(length_mask(steps, before.shape[2]).sum())
        torch.testing.assert_close(bn.running_mean, 0.1 * valid_mean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * valid_var * n / (n - 1),
                                   atol=1e-5, rtol=1e-4)
    assert min(ratios) < 0.9  # the padding really would have shrunk the variance


def test_eval_uses_running_statistics_like_batchnorm() -> None:
    torch.manual_seed(0)
    stack = ConvStack1d(1, [4], [16], [4], batch_norm=True)
    x, lengths = _clips()
    stack.train()
    for _ in range(3):
        stack(x[:, None, :], lengths)
    stack.eval()
    bn = stack.blocks[0][1]
    reference = nn.BatchNorm1d(4).eval()
    reference.load_state_dict(bn.state_dict())  # same keys and buffers as nn.BatchNorm1d
    h = stack.blocks[0][0](x[:, None, :])
    torch.testing.assert_close(bn(h, lengths), reference(h))
    assert int(bn.num_batches_tracked) == 3


@pytest.mark.parametrize("name", ["cnn_lstm", "transformer", "resnet_lstm"])
def test_valid_outputs_do_not_depend_on_batch_padding(name: str) -> None:
    """Training-mode logits of a clip are the same whether the batch is padded to 3 s or to 1 s
    (with nn.BatchNorm the padding changed the batch statistics, hence the logits)."""
    raw = name != "resnet_lstm"
    small = {"cnn_lstm": dict(channels=[4, 4], kernel_sizes=[64, 8], strides=[16, 4],
                              lstm_hidden=4, head_hidden=[8], dropout=0.0),
             "transformer": dict(layers=1, d_model=8, heads=2, ff_dim=8, head_hidden=[8],
                                 cnn_channels=[4, 4], cnn_kernel_sizes=[64, 8],
                                 cnn_strides=[16, 4], dropout=0.0),
             "resnet_lstm": dict(channels=[4, 4], lstm_hidden=4, head_hidden=[8],
                                 dropout=0.0)}[name]
    torch.manual_seed(0)
    model = build_model({"name": name, **small}, n_features=1 if raw else 16, n_classes=3)
    g = torch.Generator().manual_seed(1)
    if raw:
        short, long_ = SR // 2, SR
        x = torch.randn(2, 3 * SR, generator=g)
    else:
        short, long_ = 50, 100
        x = torch.randn(2, 300, 16, generator=g)
    lengths = torch.tensor([long_, short])
    x = x * length_mask(lengths, x.shape[1]).float().view(2, -1, *([1] * (x.dim() - 2)))
    model.train()
    wide = model(x, lengths)  # padded to 3 s / 300 frames
    tight = model(x[:, :long_], lengths)  # padded only to the longest clip
    torch.testing.assert_close(wide, tight, atol=1e-4, rtol=1e-4)
