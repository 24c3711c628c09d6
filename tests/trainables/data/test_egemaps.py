"""`features: egemaps`: openSMILE eGeMAPSv02 low-level descriptors as a frame feature."""

from __future__ import annotations

import numpy as np
import opensmile
import torch

from trainables.data import FEATURES, get_feature, prepare_data
from trainables.data.base import SAMPLE_RATE

N_LLD = 25


def _voiced(seconds: float, f0: float) -> np.ndarray:
    """A harmonic 'vowel' at f0 with a little noise (voiced: eGeMAPS finds its pitch)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    rng = np.random.default_rng(0)
    return (0.2 * wave + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def test_registered_with_25_llds_per_10ms_frame() -> None:
    assert "egemaps" in FEATURES
    extractor = get_feature({"features": "egemaps"})
    waves = [_voiced(0.5, 120.0), _voiced(1.2, 220.0), _voiced(2.0, 160.0)]
    feats, lengths = extractor.featurize(waves, max_seconds=1.5)
    n_out = extractor.n_rows(int(1.5 * SAMPLE_RATE))
    assert feats.shape == (3, n_out, N_LLD)
    # rows: what openSMILE itself emits for each (cropped) waveform
    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02,
                            opensmile.FeatureLevel.LowLevelDescriptors)
    for i, wave in enumerate(waves):
        ref = smile.process_signal(wave[: int(1.5 * SAMPLE_RATE)], SAMPLE_RATE)
        assert int(lengths[i]) == len(ref)
        np.testing.assert_allclose(feats[i, : len(ref)].numpy(),
                                   np.nan_to_num(ref.to_numpy(np.float32)), rtol=1e-5, atol=1e-5)
        assert torch.all(feats[i, int(lengths[i]):] == 0)  # padding
    assert torch.isfinite(feats).all()
    # F0 (semitones from 27.5 Hz) is found where voiced and ordered like the tones' pitch
    f0 = list(smile.feature_names).index("F0semitoneFrom27.5Hz_sma3nz")
    medians = [float(feats[i, : int(lengths[i]), f0][feats[i, : int(lengths[i]), f0] > 0]
                     .median()) for i in range(3)]
    assert medians[0] < medians[2] < medians[1]
    assert abs(medians[0] - 12 * np.log2(120 / 27.5)) < 1.0


def test_prepare_data_caches_egemaps(corpus_cfgs: dict, cache_dir: str) -> None:
    cfg = {**corpus_cfgs["manifest"], "cache_dir": cache_dir, "features": "egemaps",
           "max_seconds": 1.0}
    data = prepare_data(cfg)
    assert data.feature_kind == "egemaps" and data.n_features == N_LLD
    assert data.frame_rate == 100.0
    assert data.info["cache"] == "miss"
    again = prepare_data(cfg)
    assert again.info["cache"] == "hit"
    torch.testing.assert_close(again.features, data.features)
    assert again.info["cache_path"].split("/")[-1].startswith("egemaps_")
