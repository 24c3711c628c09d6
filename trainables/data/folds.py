"""Cross-validation folds: leave-one-session-out, speaker-disjoint k-fold, official split.

In `by_session` and `by_speaker` no speaker ever appears in two of a fold's train/val/test.
`official` follows the corpus' own split (MELD train/dev/test), which is not speaker-disjoint.
"""

from __future__ import annotations

import numpy as np

from trainables.data.base import Fold
from trainables.errors import ConfigError

FOLD_KINDS = ("by_session", "by_speaker", "official")
MAX_SESSIONS = 30  # leave-one-session-out beyond this is almost surely a mistake (MELD dialogues)
VAL_SPLITS = ("dev", "val", "validation")


def make_folds(kind: str, speakers: list[str], sessions: list[str], splits: list[str | None],
               n_folds: int, seed: int) -> list[Fold]:
    """The folds of one corpus; arrays index into the utterance lists given."""
    if kind == "by_session":
        return _by_session(np.asarray(speakers), np.asarray(sessions))
    if kind == "by_speaker":
        return _by_speaker(np.asarray(speakers), n_folds, seed)
    if kind == "official":
        return [_official(splits)]
    raise ConfigError("data.folds", f"unknown folds {kind!r}; valid: {list(FOLD_KINDS)}")


def _idx(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask).astype(np.int64)


def _by_session(speakers: np.ndarray, sessions: np.ndarray) -> list[Fold]:
    names = sorted(set(sessions.tolist()))
    if len(names) < 2:
        raise ConfigError("data.folds", f"by_session needs >= 2 sessions, found {names}; "
                                        "use folds: by_speaker")
    if len(names) > MAX_SESSIONS:
        raise ConfigError("data.folds", f"by_session would make {len(names)} folds (one per "
                                        f"session, at most {MAX_SESSIONS}); use folds: "
                                        "by_speaker or official")
    folds = []
    for i, test_session in enumerate(names):
        test_spk = set(speakers[sessions == test_session].tolist())
        test = np.isin(speakers, list(test_spk))  # all of its speakers' utterances
        # Validation: one speaker of the next session, rotating through its speakers.
        val_session = names[(i + 1) % len(names)]
        candidates = sorted(set(speakers[sessions == val_session].tolist()) - test_spk)
        if not candidates:
            raise ConfigError("data.folds", f"by_session: session {val_session!r} shares all "
                                            f"its speakers with {test_session!r}")
        val = (speakers == candidates[i % len(candidates)]) & ~test
        train = ~test & ~val
        if not train.any():
            raise ConfigError("data.folds", f"by_session: no training speakers left when "
                                            f"testing on {test_session!r}")
        folds.append(Fold(f"session_{test_session}", _idx(train), _idx(val), _idx(test)))
    return folds


def _by_speaker(speakers: np.ndarray, n_folds: int, seed: int) -> list[Fold]:
    names = sorted(set(speakers.tolist()))
    if not isinstance(n_folds, int) or n_folds < 3 or n_folds > len(names):
        raise ConfigError("data.n_folds", f"by_speaker needs 3 <= n_folds <= number of speakers "
                                          f"({len(names)}), found {n_folds!r}")
    order = np.random.default_rng(seed).permutation(len(names))
    groups = [[names[j] for j in part] for part in np.array_split(order, n_folds)]
    folds = []
    for k in range(n_folds):
        test = np.isin(speakers, groups[k])
        val = np.isin(speakers, groups[(k + 1) % n_folds])
        folds.append(Fold(f"speakers{k}", _idx(~test & ~val), _idx(val), _idx(test)))
    return folds


def _official(splits: list[str | None]) -> Fold:
    arr = np.asarray([s if s is not None else "" for s in splits])
    found = sorted(set(arr.tolist()))
    if "" in found or "train" not in found or "test" not in found:
        raise ConfigError("data.folds", "folds: official needs every utterance to have a split "
                                        f"(train / dev / test); found splits {found}")
    val = np.isin(arr, VAL_SPLITS)
    if not val.any():
        raise ConfigError("data.folds", f"folds: official needs a dev split; found {found}")
    return Fold("official", _idx(arr == "train"), _idx(val), _idx(arr == "test"))
