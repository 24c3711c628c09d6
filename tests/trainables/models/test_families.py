"""The shared suite every registered model family must pass, on tiny sizes (CPU, one thread)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.models import MODELS, build_model

N_CLASSES = 4

# name -> (tiny hyper-parameters, input kind, n_features, time steps or samples)
TINY: dict[str, tuple[dict[str, Any], str, int, int]] = {
    "cnn_lstm": (
        dict(channels=[4, 8], kernel_sizes=[16, 4], strides=[8, 4], lstm_hidden=8,
             head_hidden=[16]),
        "raw", 1, 1600,
    ),
    "sincnet": (
        dict(sinc_filters=8, sinc_taps=31, conv_channels=[4], conv_kernels=[3], pools=[3, 3],
             win=400, shift=80, seq_hidden=8, head_hidden=[16]),
        "raw", 1, 1600,
    ),
    "transformer": (dict(d_model=16, heads=2, ff_dim=32, head_hidden=[16]), "logmel", 8, 40),
    "resnet_lstm": (dict(channels=[4, 8], lstm_hidden=8, head_hidden=[16]), "logmel", 16, 40),
    "vggish_lstm": (
        dict(width=1 / 16, embedding=16, lstm_hidden=8, head_hidden=[16]), "logmel", 64, 150
    ),
    # (B, T, D) is one hidden state; tests/trainables/models/test_ssl_head.py covers (B, T, L, D)
    "ssl_head": (dict(proj_dim=16, attention_dim=8, head_hidden=[16]), "ssl", 8, 40),
}
# Variants that take other code paths: (family, extra hyper-parameters, kind, n_features, steps).
VARIANTS = [(name, {}, kind, nf, steps) for name, (_, kind, nf, steps) in TINY.items()] + [
    ("cnn_lstm", dict(bidirectional=False, lstm_layers=2, batch_norm=False), "raw", 1, 1600),
    ("sincnet", dict(framing="shared", sequence="bilstm"), "raw", 1, 1600),
    ("sincnet", dict(framing="naive", sequence="transformer", seq_heads=2), "raw", 1, 1600),
    ("transformer", dict(cnn_channels=[8, 8], cnn_kernel_sizes=[10, 8], cnn_strides=[5, 8],
                         norm_first=False, init="kaiming"), "raw", 1, 1600),
    ("resnet_lstm", dict(blocks=2, lstm_layers=2, head_norm="batch"), "mfcc", 16, 40),
    ("vggish_lstm", dict(bidirectional=True), "logmel", 64, 150),
    ("ssl_head", dict(layer=0, pooling="attentive", layer_norm=False), "ssl", 8, 40),
]
IDS = [f"{v[0]}-{i}" for i, v in enumerate(VARIANTS)]


def make(name: str, extra: dict[str, Any], n_features: int, **overrides: Any) -> nn.Module:
    torch.manual_seed(0)
    cfg = {"name": name, **TINY[name][0], **extra, **overrides}
    return build_model(cfg, n_features=n_features, n_classes=N_CLASSES)


def batch(kind: str, n_features: int, steps: int, size: int = 3) -> tuple[torch.Tensor, ...]:
    """Random inputs, zero beyond each row's length; rows of full, 3/4 and 3/5 length."""
    g = torch.Generator().manual_seed(1)
    shape = (size, steps) if kind == "raw" else (size, steps, n_features)
    x = torch.randn(shape, generator=g)
    lengths = torch.tensor([steps, steps * 3 // 4, steps * 3 // 5][:size] * (size // 3 + 1))[:size]
    mask = torch.arange(steps)[None, :] < lengths[:, None]
    x = x * (mask if kind == "raw" else mask[:, :, None])
    labels = torch.randint(0, N_CLASSES, (size,), generator=g)
    return x, lengths, labels


def test_every_registered_family_is_covered() -> None:
    assert set(MODELS) == set(TINY)
    for name, (_, kind, _, _) in TINY.items():
        assert kind in MODELS[name].INPUTS


@pytest.mark.parametrize(("name", "extra", "kind", "nf", "steps"), VARIANTS, ids=IDS)
def test_forward_shape_and_hiddens(name, extra, kind, nf, steps) -> None:
    model = make(name, extra, nf).eval()
    x, lengths, _ = batch(kind, nf, steps)
    logits = model(x, lengths)
    assert logits.shape == (3, N_CLASSES) and torch.isfinite(logits).all()
    logits2, hiddens = model(x, lengths, return_hidden=True)
    torch.testing.assert_close(logits2, logits)
    assert len(hiddens) >= (4 if name in ("transformer", "cnn_lstm", "sincnet") else 1)
    for h in hiddens:
        assert h.dim() == 2 and h.shape[0] == 3 and torch.isfinite(h).all()


@pytest.mark.parametrize("pooling", ["mean", "max", "last"])
@pytest.mark.parametrize(("name", "extra", "kind", "nf", "steps"), VARIANTS, ids=IDS)
def test_padding_invariance(name, extra, kind, nf, steps, pooling) -> None:
    """Each row alone, cut to its length == the row in a padded batch == with more padding."""
    model = make(name, extra, nf, pooling=pooling).eval()
    x, lengths, _ = batch(kind, nf, steps)
    with torch.no_grad():
        logits, hiddens = model(x, lengths, return_hidden=True)
        more = torch.cat([x, torch.zeros_like(x)[:, : steps // 2]], dim=1)
        torch.testing.assert_close(model(more, lengths), logits, atol=1e-5, rtol=1e-4)
        # Garbage in the padding is ignored too (models zero it; the contract says zeros).
        noisy = more + (torch.arange(more.shape[1]) >= steps).view(1, -1, *[1] * (x.dim() - 2))
        torch.testing.assert_close(model(noisy, lengths), logits, atol=1e-5, rtol=1e-4)
        for i, n in enumerate(lengths.tolist()):
            alone, alone_hiddens = model(x[i : i + 1, :n], lengths[i : i + 1], return_hidden=True)
            torch.testing.assert_close(alone[0], logits[i], atol=1e-5, rtol=1e-4)
            for a, h in zip(alone_hiddens, hiddens):
                torch.testing.assert_close(a[0], h[i], atol=1e-5, rtol=1e-4)
    # The rows differ, so the check above is not comparing constants.
    assert not torch.allclose(logits[0], logits[2], atol=1e-4)


@pytest.mark.parametrize(("name", "extra", "kind", "nf", "steps"), VARIANTS, ids=IDS)
def test_backward_gives_finite_grads_everywhere(name, extra, kind, nf, steps) -> None:
    model = make(name, extra, nf).train()
    x, lengths, labels = batch(kind, nf, steps)
    nn.functional.cross_entropy(model(x, lengths), labels).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize(("name", "extra", "kind", "nf", "steps"), VARIANTS, ids=IDS)
def test_builds_and_steps_on_meta_device(name, extra, kind, nf, steps) -> None:
    """What the memory estimator does: build, forward and backward with no real storage."""
    with torch.device("meta"):
        model = make(name, extra, nf)
        x, lengths = (torch.zeros(2, steps) if kind == "raw" else torch.zeros(2, steps, nf),
                      torch.full((2,), steps))
        logits, hiddens = model(x, lengths, return_hidden=True)
        logits.sum().backward()
    assert all(p.is_meta for p in model.parameters())
    assert logits.is_meta and logits.shape == (2, N_CLASSES)


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_few_steps_fit_a_fixed_batch(name) -> None:
    _, kind, nf, steps = TINY[name]
    model = make(name, {"dropout": 0.0}, nf).train()
    x, lengths, labels = batch(kind, nf, steps, size=6)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x, lengths), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        build_model({"name": "lstm_cnn"}, n_features=1, n_classes=4)
    assert err.value.key == "model.name"
    for name in MODELS:
        assert name in str(err.value)


def test_unknown_hyper_parameter_names_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        build_model({"name": "transformer", "layer": 3}, n_features=64, n_classes=4)
    assert err.value.key == "model.layer" and "'layers'" in str(err.value)


BAD = [
    ("transformer", 64, dict(pooling="avg"), "model.pooling", "'avg'"),
    ("transformer", 64, dict(d_model=30, heads=4), "model.d_model", "heads=4"),
    ("transformer", 64, dict(layers=0), "model.layers", "got 0"),
    ("transformer", 64, dict(layers=True), "model.layers", "True"),
    ("transformer", 64, dict(init="he"), "model.init", "'he'"),
    ("transformer", 64, dict(frontend="cnn"), "model.frontend", "n_features=64"),
    ("transformer", 1, dict(frontend="none"), "model.frontend", "n_features=1"),
    ("transformer", 1, dict(cnn_strides=[5, 8]), "model.cnn_strides", "3 entries"),
    ("transformer", 64, dict(dropout=1.5), "model.dropout", "1.5"),
    ("transformer", 64, dict(head_norm="group"), "model.head_norm", "'group'"),
    ("transformer", 64, dict(head_hidden=[128, -1]), "model.head_hidden", "-1"),
    ("cnn_lstm", 64, {}, "data.features", "n_features=64"),
    ("cnn_lstm", 1, dict(kernel_sizes=[64, 8]), "model.kernel_sizes", "3 entries"),
    ("cnn_lstm", 1, dict(channels=[]), "model.channels", "[]"),
    ("cnn_lstm", 1, dict(lstm_hidden=0), "model.lstm_hidden", "got 0"),
    ("resnet_lstm", 64, dict(blocks=0), "model.blocks", "got 0"),
    ("resnet_lstm", 64, dict(channels=[16, 0]), "model.channels", "0"),
    ("vggish_lstm", 40, {}, "data.n_mels", "n_features=40"),
    ("vggish_lstm", 64, dict(width=0), "model.width", "0"),
    ("sincnet", 1, dict(framing="frames"), "model.framing", "'frames'"),
    ("sincnet", 1, dict(sinc_taps=250), "model.sinc_taps", "250"),
    ("sincnet", 1, dict(pools=[3, 3]), "model.pools", "3 entries"),
    ("sincnet", 1, dict(win=300), "model.win", "win=300"),
    ("sincnet", 1, dict(sequence="gru"), "model.sequence", "'gru'"),
    ("sincnet", 1, dict(sequence="transformer", seq_hidden=10, seq_heads=4), "model.seq_hidden",
     "seq_heads=4"),
]


@pytest.mark.parametrize(("name", "nf", "kwargs", "key", "shown"), BAD)
def test_bad_hyper_parameters_raise_config_error(name, nf, kwargs, key, shown) -> None:
    with pytest.raises(ConfigError) as err:
        build_model({"name": name, **kwargs}, n_features=nf, n_classes=4)
    assert err.value.key == key
    assert shown in str(err.value)
