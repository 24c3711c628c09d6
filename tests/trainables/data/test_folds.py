"""Folds: every fold is index-disjoint, and speaker-disjoint for by_session / by_speaker."""

from __future__ import annotations

import numpy as np
import pytest

from trainables.data.base import Fold
from trainables.data.folds import make_folds
from trainables.errors import ConfigError


def _iemocap_like(per_speaker: int = 7) -> tuple[list[str], list[str]]:
    speakers, sessions = [], []
    for s in range(1, 6):
        for g in "FM":
            speakers += [f"Ses{s:02d}_{g}"] * per_speaker
            sessions += [f"Ses{s:02d}"] * per_speaker
    return speakers, sessions


def _random_corpus(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    n_sessions = int(rng.integers(2, 8))
    spk_session = {f"s{k}": f"sess{rng.integers(n_sessions)}" for k in range(12)}
    for j in range(n_sessions):  # every session has at least one speaker of its own
        spk_session[f"own{j}"] = f"sess{j}"
    names = sorted(spk_session)
    speakers = [names[i] for i in rng.integers(0, len(names), 200)] + names
    return speakers, [spk_session[s] for s in speakers]


def _check_disjoint(folds: list[Fold], speakers: list[str], n: int, by_speaker: bool) -> None:
    spk = np.asarray(speakers)
    for f in folds:
        parts = [f.train, f.val, f.test]
        assert all(p.dtype == np.int64 and len(p) > 0 for p in parts), f.name
        assert sum(len(p) for p in parts) == len(np.unique(np.concatenate(parts)))
        assert np.concatenate(parts).max() < n
        if by_speaker:
            sets = [set(spk[p].tolist()) for p in parts]
            assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]), f.name


def test_by_session_is_leave_one_session_out() -> None:
    speakers, sessions = _iemocap_like()
    folds = make_folds("by_session", speakers, sessions, [None] * len(speakers), 5, 0)
    _check_disjoint(folds, speakers, len(speakers), by_speaker=True)
    spk, sess = np.asarray(speakers), np.asarray(sessions)
    assert [f.name for f in folds] == [f"session_Ses0{i}" for i in range(1, 6)]
    val_speakers = []
    for i, f in enumerate(folds):
        assert set(sess[f.test]) == {f"Ses0{i + 1}"} and len(f.test) == 14
        assert len(set(spk[f.val])) == 1  # one held-out speaker of a training session
        val_speakers.append(spk[f.val][0])
        assert len(f.train) == len(speakers) - 14 - 7  # everything else trains
    assert len(set(val_speakers)) == 5
    assert {s[-1] for s in val_speakers} == {"F", "M"}  # rotates through the genders


@pytest.mark.parametrize("seed", range(6))
def test_by_session_and_by_speaker_on_random_corpora(seed: int) -> None:
    speakers, sessions = _random_corpus(np.random.default_rng(seed))
    n = len(speakers)
    folds = make_folds("by_session", speakers, sessions, [None] * n, 5, seed)
    _check_disjoint(folds, speakers, n, by_speaker=True)
    assert len(folds) == len(set(sessions))
    folds = make_folds("by_speaker", speakers, sessions, [None] * n, 4, seed)
    _check_disjoint(folds, speakers, n, by_speaker=True)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(n))  # every utterance is tested exactly once


def test_by_speaker_depends_on_seed_only() -> None:
    speakers, sessions = _iemocap_like(3)
    a = make_folds("by_speaker", speakers, sessions, [None] * 30, 5, 1)
    b = make_folds("by_speaker", speakers, sessions, [None] * 30, 5, 1)
    c = make_folds("by_speaker", speakers, sessions, [None] * 30, 5, 2)
    assert all(np.array_equal(x.test, y.test) for x, y in zip(a, b))
    assert not all(np.array_equal(x.test, y.test) for x, y in zip(a, c))


def test_official_uses_the_splits() -> None:
    splits = ["train", "dev", "test", "train"] * 5
    speakers = ["Joey", "Ross"] * 10  # MELD speakers cross splits: the official protocol allows it
    (fold,) = make_folds("official", speakers, ["d"] * 20, splits, 5, 0)
    _check_disjoint([fold], speakers, 20, by_speaker=False)
    assert fold.name == "official"
    assert fold.train.tolist() == [i for i, s in enumerate(splits) if s == "train"]
    assert fold.val.tolist() == [i for i, s in enumerate(splits) if s == "dev"]


@pytest.mark.parametrize("kind, n_folds, splits, key", [
    ("official", 5, [None] * 20, "data.folds"),  # a corpus without splits
    ("official", 5, ["train", "test"] * 10, "data.folds"),  # no dev split
    ("by_speaker", 2, [None] * 20, "data.n_folds"),
    ("by_speaker", 11, [None] * 20, "data.n_folds"),  # more folds than speakers
    ("leave_one_out", 5, [None] * 20, "data.folds"),
])
def test_bad_fold_settings(kind: str, n_folds: int, splits: list, key: str) -> None:
    speakers, sessions = _iemocap_like(2)
    with pytest.raises(ConfigError) as err:
        make_folds(kind, speakers, sessions, splits, n_folds, 0)
    assert err.value.key == key


def test_by_session_rejects_one_session_and_too_many() -> None:
    with pytest.raises(ConfigError, match="by_speaker"):
        make_folds("by_session", ["a", "b"], ["s", "s"], [None, None], 5, 0)
    many = [f"dia{i}" for i in range(40)]
    with pytest.raises(ConfigError, match="40 folds"):
        make_folds("by_session", many, many, [None] * 40, 5, 0)
