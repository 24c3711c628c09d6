"""Transformer-specific behaviour: the init schemes and the raw/frame front-end choice."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.models import build_model


def model(**kwargs):
    torch.manual_seed(0)
    cfg = {"name": "transformer", "d_model": 64, "heads": 4, "ff_dim": 256, **kwargs}
    return build_model(cfg, n_features=40, n_classes=4)


def test_init_schemes_set_the_encoder_matrices() -> None:
    normal = model(init="normal").encoder.layers[0].linear1.weight
    xavier = model(init="xavier").encoder.layers[0].linear1.weight
    kaiming = model(init="kaiming").encoder.layers[0].linear1.weight
    assert normal.std().item() == pytest.approx(0.02, rel=0.05)
    assert xavier.abs().max() <= math.sqrt(6 / (64 + 256))  # fan_in + fan_out
    assert kaiming.abs().max() <= math.sqrt(6 / 64)  # gain sqrt(2) * sqrt(3 / fan_in)
    assert kaiming.abs().max() > math.sqrt(6 / (64 + 256))  # wider than xavier: a real difference
    assert (model(init="kaiming").encoder.layers[0].linear1.bias == 0).all()


def test_auto_frontend_follows_the_input() -> None:
    torch.manual_seed(0)
    raw = build_model({"name": "transformer"}, n_features=1, n_classes=4)
    frames = build_model({"name": "transformer"}, n_features=40, n_classes=4)
    assert raw.cnn is not None and frames.cnn is None
    # The raw default: 320 samples per step -> 200 steps for 4 s.
    assert raw(torch.randn(1, 64_000), torch.tensor([64_000]), return_hidden=True)[1][0].shape == (
        1, 64)
    assert raw.cnn.min_samples() <= 320 + 10
