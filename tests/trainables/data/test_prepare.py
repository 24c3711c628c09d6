"""prepare_data end to end: shapes, normalization, folds, the disk cache, bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.trainables.data.fixtures import SMALL_SYNTHETIC
from trainables.config import DATA_DEFAULTS, with_defaults
from trainables.data import PreparedData, prepare_data
from trainables.data.features import train_stats
from trainables.errors import ConfigError


def _cfg(cache_dir: str, **over) -> dict:
    return with_defaults({"synthetic_utterances": SMALL_SYNTHETIC, "max_seconds": 2.0,
                          "n_mels": 32, "cache_dir": cache_dir, **over}, DATA_DEFAULTS)


def test_synthetic_logmel_then_cache_hit(cache_dir: str) -> None:
    messages: list[str] = []
    first = prepare_data(_cfg(cache_dir), messages.append)
    assert isinstance(first, PreparedData) and first.info["cache"] == "miss"
    assert first.features.shape == (SMALL_SYNTHETIC, 201, 32) and first.frame_rate == 100.0
    assert first.lengths.max() == 201 and first.lengths.min() >= 101  # utterances are 1-6 s
    assert first.classes == ["neutral", "happy", "sad", "angry"] and first.n_features == 32
    assert len(first.folds) == 5 and first.normalize == "train"
    assert any("featurizing" in m for m in messages)
    files = list(Path(cache_dir).glob("prepared/*.pt"))
    assert len(files) == 1 and str(files[0]) == first.info["cache_path"]

    messages.clear()
    second = prepare_data(_cfg(cache_dir, use_folds=2), messages.append)
    assert second.info["cache"] == "hit"  # use_folds is not part of the cache key
    assert not any("featurizing" in m for m in messages)
    assert torch.equal(second.features, first.features) and second.ids == first.ids
    assert [f.name for f in second.folds] == [f.name for f in first.folds[:2]]

    third = prepare_data(_cfg(cache_dir, n_mels=16))
    assert third.info["cache"] == "miss" and third.n_features == 16


def test_a_corrupt_cache_file_is_rebuilt(cache_dir: str) -> None:
    first = prepare_data(_cfg(cache_dir, features="raw", max_seconds=1.0))
    path = first.info["cache_path"]
    with open(path, "wb") as f:
        f.write(b"truncated")
    again = prepare_data(_cfg(cache_dir, features="raw", max_seconds=1.0))
    assert again.info["cache"] == "miss" and torch.equal(again.features, first.features)
    assert prepare_data(_cfg(cache_dir, features="raw", max_seconds=1.0)).info["cache"] == "hit"


def test_raw_with_utterance_normalization_and_downsample(cache_dir: str) -> None:
    data = prepare_data(_cfg(cache_dir, features="raw", max_seconds=1.0, downsample=4,
                             normalize="utterance"))
    assert data.features.shape == (SMALL_SYNTHETIC, 4000) and data.frame_rate == 4000.0
    assert data.n_features == 1 and data.normalize == "utterance"
    row = data.features[0, : int(data.lengths[0])].double()
    assert abs(row.mean()) < 1e-4 and abs(row.std(unbiased=False) - 1) < 1e-3


def test_train_normalization_is_left_to_the_training_loop(cache_dir: str) -> None:
    data = prepare_data(_cfg(cache_dir))
    mean, std = train_stats(data.features, data.lengths, data.folds[0].train)
    assert mean.shape == (32,) and (std > 0.1).all()
    assert mean.abs().max() > 1.0  # log-mel values are not centred: nothing applied yet


def test_manifest_and_meld_corpora(corpus_cfgs: dict, cache_dir: str) -> None:
    meld = prepare_data({**corpus_cfgs["meld"], "cache_dir": cache_dir, "folds": "official",
                         "max_seconds": 0.5, "n_mels": 16})
    assert len(meld) == 43 and meld.n_classes == 7 and [f.name for f in meld.folds] == ["official"]
    assert meld.info["skipped"] == 2
    again = prepare_data({**corpus_cfgs["meld"], "cache_dir": cache_dir, "folds": "official",
                          "max_seconds": 0.5, "n_mels": 16})
    assert again.info["cache"] == "hit" and again.info["skipped_examples"]
    assert again.sessions == meld.sessions and again.folds[0].val.tolist() == \
        meld.folds[0].val.tolist()  # splits survive the cache
    man = prepare_data({**corpus_cfgs["manifest"], "cache_dir": cache_dir, "folds": "by_speaker",
                        "n_folds": 4, "features": "mfcc", "max_seconds": 0.5})
    assert man.features.shape == (12, 51, 40) and len(man.folds) == 4


@pytest.mark.parametrize("over, key", [
    ({"corpus": "timit"}, "data.corpus"),
    ({"features": "spectrogram"}, "data.features"),
    ({"normalize": "global"}, "data.normalize"),
    ({"max_seconds": 0}, "data.max_seconds"),
    ({"downsample": 1.5}, "data.downsample"),
    ({"use_folds": 0}, "data.use_folds"),
    ({"n_mels": -3}, "data.n_mels"),
    ({"synthetic_utterances": 10}, "data.synthetic_utterances"),
])
def test_bad_settings_are_config_errors(over: dict, key: str, cache_dir: str) -> None:
    with pytest.raises(ConfigError) as err:
        prepare_data(_cfg(cache_dir, **over))
    assert err.value.key == key
