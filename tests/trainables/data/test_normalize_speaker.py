"""`data.normalize: speaker`: every speaker z-scored with its own statistics, label-free."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.batching import fold_stats
from trainables.data import prepare_data
from trainables.data.features import normalize_speakers
from trainables.errors import ConfigError


def _valid_moments(x: torch.Tensor, lengths: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean/std per feature dim over every valid frame of the rows (numpy, no shared code)."""
    frames = np.concatenate([x[i, : int(n)].numpy().reshape(int(n), -1)
                             for i, n in enumerate(lengths)])
    return frames.mean(0), frames.std(0)


def _two_speakers() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Speaker B = a louder, higher copy of A's feature distribution (offset + scale)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 20, 3, generator=gen)
    x[3:] = 5.0 + 3.0 * x[3:]
    lengths = torch.tensor([20, 12, 7, 20, 15, 9])
    mask = torch.arange(20)[None, :] < lengths[:, None]
    return x * mask[..., None], lengths, ["A", "A", "A", "B", "B", "B"]


def test_each_speaker_gets_zero_mean_unit_std_over_its_valid_frames() -> None:
    x, lengths, speakers = _two_speakers()
    y = normalize_speakers(x, lengths, speakers)
    for rows in (slice(0, 3), slice(3, 6)):
        mean, std = _valid_moments(y[rows], lengths[rows])
        np.testing.assert_allclose(mean, 0.0, atol=1e-5)
        np.testing.assert_allclose(std, 1.0, atol=1e-4)
    # padding stays exactly zero
    mask = torch.arange(20)[None, :] < lengths[:, None]
    assert torch.all(y[~mask] == 0)
    # before: B sat 5 units above A in every dim; a global (train-style) z-score keeps that gap
    gap = _valid_moments(x[3:], lengths[3:])[0] - _valid_moments(x[:3], lengths[:3])[0]
    assert np.all(gap > 4)


def test_a_speaker_uses_only_its_own_rows() -> None:
    x, lengths, speakers = _two_speakers()
    y = normalize_speakers(x, lengths, speakers)
    changed = x.clone()
    changed[3:] = changed[3:] * 10 - 50  # B changes; A's normalized rows must not
    z = normalize_speakers(changed, lengths, speakers)
    torch.testing.assert_close(z[:3], y[:3])
    torch.testing.assert_close(z[3:], y[3:], atol=1e-4, rtol=1e-4)  # affine change: same z


def test_raw_waveforms_use_one_statistic_per_speaker() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([0.1 * torch.randn(2, 400, generator=gen),
                   0.5 + 2.0 * torch.randn(2, 400, generator=gen)])
    lengths = torch.tensor([400, 300, 400, 250])
    y = normalize_speakers(x, lengths, ["A", "A", "B", "B"])
    assert y.shape == x.shape
    for rows in (slice(0, 2), slice(2, 4)):
        mean, std = _valid_moments(y[rows], lengths[rows])
        np.testing.assert_allclose(mean, 0.0, atol=1e-5)
        np.testing.assert_allclose(std, 1.0, atol=1e-4)
    assert torch.all(y[1, 300:] == 0) and torch.all(y[3, 250:] == 0)


def test_wrong_number_of_speakers_is_refused() -> None:
    x, lengths, speakers = _two_speakers()
    with pytest.raises(ValueError, match="5 speakers for 6 feature rows"):
        normalize_speakers(x, lengths, speakers[:5])


def test_prepare_data_applies_it_per_speaker_and_caches_it(corpus_cfgs: dict,
                                                           cache_dir: str) -> None:
    cfg = {**corpus_cfgs["manifest"], "cache_dir": cache_dir, "normalize": "speaker"}
    data = prepare_data(cfg)
    assert data.normalize == "speaker"
    assert fold_stats(data, data.folds[0].train) is None  # nothing more per fold
    spk = np.asarray(data.speakers)
    for name in sorted(set(data.speakers)):
        rows = np.flatnonzero(spk == name)
        mean, std = _valid_moments(data.features[rows], data.lengths[rows])
        np.testing.assert_allclose(mean, 0.0, atol=1e-4)
        np.testing.assert_allclose(std, 1.0, atol=1e-3)
    again = prepare_data(cfg)
    assert again.info["cache"] == "hit"
    torch.testing.assert_close(again.features, data.features)
    raw = prepare_data({**cfg, "normalize": "none"})
    assert raw.info["cache_key"] != data.info["cache_key"]  # normalize is part of the key
    assert not torch.allclose(raw.features, data.features)


def test_unknown_normalize_lists_speaker(corpus_cfgs: dict, cache_dir: str) -> None:
    with pytest.raises(ConfigError, match="speaker") as err:
        prepare_data({**corpus_cfgs["manifest"], "cache_dir": cache_dir, "normalize": "spk"})
    assert err.value.key == "data.normalize"
