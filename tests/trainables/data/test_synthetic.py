"""The synthetic corpus: IEMOCAP-like structure, determinism, disk cache, prosodic cues."""

from __future__ import annotations

from collections import Counter

import numpy as np

from tests.trainables.data.fixtures import SMALL_SYNTHETIC
from trainables.data.synthetic import CLASSES, SyntheticCorpus, generate


def test_structure_like_a_small_iemocap(corpus_cfgs: dict) -> None:
    content = SyntheticCorpus().load(corpus_cfgs["synthetic"])
    utts = content.utterances
    assert len(utts) == SMALL_SYNTHETIC and content.classes == CLASSES
    speakers = Counter(u.speaker for u in utts)
    assert len(speakers) == 10
    sessions = {u.session for u in utts}
    assert len(sessions) == 5
    for s in sessions:  # one F and one M speaker per session
        assert {u.speaker for u in utts if u.session == s} == {f"{s}_F", f"{s}_M"}
    seconds = np.array([len(u.waveform) / 16_000 for u in utts])
    assert seconds.min() >= 1.0 and seconds.max() <= 6.0
    assert all(u.split is None for u in utts)


def test_deterministic_in_seed_and_cached(tmp_path) -> None:
    cfg = {"synthetic_utterances": 40, "seed": 3, "cache_dir": str(tmp_path)}
    first = SyntheticCorpus().load(cfg)
    assert first.info["synthetic_cache"] == "miss"
    assert list((tmp_path / "synthetic").glob("*.npz"))
    second = SyntheticCorpus().load(cfg)
    assert second.info["synthetic_cache"] == "hit"
    fresh = generate(40, 3)
    for a, b, c in zip(first.utterances, second.utterances, fresh):
        assert a.id == b.id == c.id and a.label == b.label == c.label
        assert np.array_equal(a.waveform, b.waveform) and np.array_equal(a.waveform, c.waveform)
    other = generate(40, 4)
    assert not all(np.array_equal(a.waveform, b.waveform) for a, b in zip(fresh, other))


def test_emotion_shows_in_energy() -> None:
    # Real prosodic cues, averaged over many utterances: angry is louder than sad.
    utts = generate(120, 0)
    rms = {c: np.mean([np.sqrt(np.mean(u.waveform**2)) for u in utts if u.label == c])
           for c in CLASSES}
    assert rms["angry"] > rms["neutral"] > rms["sad"]


def test_voiced_speech_like_signal() -> None:
    u = generate(40, 1)[0]
    x = u.waveform.astype(np.float64)
    frames = x[: len(x) // 400 * 400].reshape(-1, 400)
    energy = (frames**2).mean(axis=1)
    # Syllables and pauses: frame energy spans a wide dynamic range, not a steady tone.
    assert 10 * np.log10(np.percentile(energy, 95) / np.percentile(energy, 10)) > 15
    loud = frames[np.argmax(energy)]
    ac = np.correlate(loud, loud, "full")[399:]
    lag = 40 + np.argmax(ac[40:320])  # 50-400 Hz
    assert ac[lag] > 0.3 * ac[0]  # periodic: voiced, with a pitch in the speech range
