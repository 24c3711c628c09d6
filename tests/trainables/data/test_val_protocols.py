"""Issue 13: `data.val` validation protocols (trainables/data/folds.py): speaker-disjoint
train/val/test, and the validation speakers are the ones the protocol names."""

from __future__ import annotations

import numpy as np
import pytest

from tests.trainables.data.test_folds import _iemocap_like
from trainables.data.folds import make_folds
from trainables.errors import ConfigError


def _speaker_sets(fold, spk: np.ndarray) -> tuple[set, set, set]:
    train, val, test = (set(spk[p].tolist()) for p in (fold.train, fold.val, fold.test))
    assert train and val and test
    assert not (train & val) and not (train & test) and not (val & test), fold.name
    assert len(fold.train) + len(fold.val) + len(fold.test) == len(spk)  # every clip used
    return train, val, test


def test_next_session_is_the_default_and_today_s_rule() -> None:
    speakers, sessions = _iemocap_like()
    spk = np.asarray(speakers)
    default = make_folds("by_session", speakers, sessions, [None] * len(spk), 5, 0)
    named = make_folds("by_session", speakers, sessions, [None] * len(spk), 5, 0,
                       val="next_session")
    assert [f.name for f in default] == [f.name for f in named]
    for i, fold in enumerate(named):
        _, val, test = _speaker_sets(fold, spk)
        assert test == {f"Ses{i + 1:02d}_F", f"Ses{i + 1:02d}_M"}  # the whole test session
        next_session = f"Ses{(i + 1) % 5 + 1:02d}"
        assert len(val) == 1 and next(iter(val)).startswith(next_session)


def test_test_session_other_leaves_two_speakers_out() -> None:
    speakers, sessions = _iemocap_like()
    spk = np.asarray(speakers)
    folds = make_folds("by_session", speakers, sessions, [None] * len(spk), 5, 0,
                       val="test_session_other")
    assert len(folds) == 10  # one per speaker: each speaker tests once
    tested = []
    for fold in folds:
        train, val, test = _speaker_sets(fold, spk)
        (speaker,), (other,) = test, val
        assert speaker[:5] == other[:5] and speaker != other  # the same session's other one
        assert len(train) == 8
        tested.append(speaker)
    assert sorted(tested) == sorted(set(speakers))


@pytest.mark.parametrize("kind", ["by_session", "by_speaker"])
def test_train_fraction_validates_on_a_share_of_the_training_speakers(kind: str) -> None:
    speakers, sessions = _iemocap_like()
    spk = np.asarray(speakers)
    base = make_folds(kind, speakers, sessions, [None] * len(spk), 5, 0)
    folds = make_folds(kind, speakers, sessions, [None] * len(spk), 5, 0,
                       val="train_fraction", val_fraction=0.25)
    assert [f.name for f in folds] == [f.name for f in base]
    vals = []
    for fold, old in zip(folds, base, strict=True):
        train, val, test = _speaker_sets(fold, spk)
        assert test == set(spk[old.test].tolist())  # the test fold is unchanged
        assert len(val) == 2  # round(0.25 * 8 non-test speakers)
        vals.append(frozenset(val))
    assert len(set(vals)) > 1  # drawn per fold, not the same speakers every time
    again = make_folds(kind, speakers, sessions, [None] * len(spk), 5, 0,
                       val="train_fraction", val_fraction=0.25)
    assert all(np.array_equal(a.val, b.val) for a, b in zip(folds, again, strict=True))


@pytest.mark.parametrize(("kind", "val", "fraction", "key"), [
    ("by_session", "leave_one_out", 0.2, "data.val"),
    ("by_speaker", "test_session_other", 0.2, "data.val"),
    ("official", "train_fraction", 0.2, "data.val"),
    ("by_session", "train_fraction", 1.0, "data.val_fraction"),
])
def test_bad_protocols_name_the_key(kind: str, val: str, fraction: float, key: str) -> None:
    speakers, sessions = _iemocap_like()
    splits = ["train"] * 50 + ["dev"] * 10 + ["test"] * 10
    with pytest.raises(ConfigError) as err:
        make_folds(kind, speakers, sessions, splits, 5, 0, val=val, val_fraction=fraction)
    assert err.value.key == key
