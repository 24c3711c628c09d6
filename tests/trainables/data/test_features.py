"""One suite over every feature extractor, then downsampling, normalization and train_stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.data import FEATURES, get_feature, train_stats
from trainables.data.features import STD_FLOOR, downsample, normalize_utterances
from trainables.errors import ConfigError

MAX_SECONDS = 0.5
CFG = {"n_mels": 24, "n_mfcc": 13, "compare_deltas": True}


def _waves() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(16_000) / 16_000
    # Lengths: shorter than, equal to and longer than max_seconds (8000 samples).
    return [(0.3 * np.sin(2 * np.pi * f * t[:n]) + 0.02 * rng.standard_normal(n))
            .astype(np.float32) for f, n in [(150, 3000), (220, 8000), (300, 16_000)]]


# ssl features are a memory-mapped handle, not a tensor: tests/trainables/data/test_ssl.py
@pytest.fixture(scope="module", params=sorted(k for k in FEATURES if k != "ssl"))
def featurized(request: pytest.FixtureRequest):
    ext = get_feature({"features": request.param, **CFG})
    feats, lengths = ext.featurize(_waves(), MAX_SECONDS)
    return ext, feats, lengths


def test_registry_has_every_feature_kind() -> None:
    assert set(FEATURES) >= {"raw", "logmel", "mfcc", "compare", "egemaps"}
    with pytest.raises(ConfigError) as err:
        get_feature({"features": "mel"})
    assert err.value.key == "data.features" and "'logmel'" in str(err.value)


def test_fixed_shape_and_lengths(featurized) -> None:
    ext, feats, lengths = featurized
    rows = ext.n_rows(8000)
    assert feats.dtype == torch.float32 and lengths.dtype == torch.int64
    if ext.kind == "raw":
        assert feats.shape == (3, 8000)
    else:
        width = {"logmel": 24, "mfcc": 13, "compare": 130, "egemaps": 25}[ext.kind]
        assert feats.shape == (3, rows, width)
    assert lengths[0] < lengths[1] == lengths[2] == rows  # short: fewer rows; long: cropped
    assert lengths[0] == ext.n_rows(3000)
    assert torch.isfinite(feats).all()


def test_padding_is_zero_and_valid_part_is_not(featurized) -> None:
    _, feats, lengths = featurized
    n = int(lengths[0])
    assert (feats[0, n:] == 0).all()
    assert feats[0, :n].abs().sum() > 0


def test_features_of_an_utterance_do_not_depend_on_its_batch(featurized) -> None:
    ext, feats, _ = featurized
    alone, _ = ext.featurize(_waves()[1:2], MAX_SECONDS)
    torch.testing.assert_close(alone[0], feats[1], rtol=1e-4, atol=1e-4)


def test_features_separate_different_signals(featurized) -> None:
    _, feats, lengths = featurized
    n = int(lengths[0])
    assert not torch.allclose(feats[0, :n], feats[1, :n], atol=1e-3)


def test_downsample_halves_rows_and_lengths(featurized) -> None:
    _, feats, lengths = featurized
    small, small_len = downsample(feats, lengths, 2)
    assert small.shape[1] == (feats.shape[1] + 1) // 2
    assert small_len.tolist() == [(int(n) + 1) // 2 for n in lengths]
    assert (small[0, int(small_len[0]):] == 0).all()
    # Polyphase low-pass + decimation keeps the slow trend of each row.
    x = feats[1].double()
    assert torch.allclose(small[1].double().mean(0), x.mean(0), atol=0.1 * x.abs().max() + 1e-3)


def test_normalize_utterances(featurized) -> None:
    _, feats, lengths = featurized
    out = normalize_utterances(feats, lengths)
    for i, n in enumerate(lengths.tolist()):
        valid = out[i, :n].double()
        if out.dim() == 3:
            varying = feats[i, :n].std(0) > 1e-3  # constant dims stay ~0 (std floor)
            assert valid.mean(0).abs().max() < 1e-4
            assert torch.allclose(valid.std(0, unbiased=False)[varying],
                                  torch.ones(int(varying.sum()), dtype=torch.float64), atol=1e-3)
        else:
            assert abs(valid.mean()) < 1e-4 and abs(valid.std(unbiased=False) - 1) < 1e-3
        assert (out[i, n:] == 0).all()


def test_train_stats_use_only_valid_rows_of_idx() -> None:
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(6, 10, 3, generator=gen) * torch.tensor([1.0, 5.0, 0.0]) + 2.0
    lengths = torch.tensor([10, 4, 7, 1, 10, 3])
    idx = np.array([1, 2, 5])
    valid = torch.cat([feats[i, : lengths[i]] for i in idx])
    garbage = feats.clone()
    for i in range(6):
        garbage[i, lengths[i]:] = 1e6  # padding must not matter
    garbage[0] = -1e6  # nor rows outside idx
    mean, std = train_stats(garbage, lengths, idx)
    assert mean.shape == std.shape == (3,)
    torch.testing.assert_close(mean, valid.mean(0))
    torch.testing.assert_close(std[:2], valid.std(0, unbiased=False)[:2])
    assert std[2] == pytest.approx(STD_FLOOR)  # a constant dim is clamped away from 0


def test_train_stats_raw_is_one_scalar() -> None:
    feats = torch.tensor([[1.0, 3.0, 99.0], [5.0, 99.0, 99.0], [7.0, 7.0, 7.0]])
    mean, std = train_stats(feats, torch.tensor([2, 1, 3]), np.array([0, 1]))
    assert mean.shape == std.shape == (1,)
    assert mean.item() == pytest.approx(3.0)
    assert std.item() == pytest.approx(np.std([1.0, 3.0, 5.0]))
