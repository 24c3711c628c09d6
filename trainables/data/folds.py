"""Cross-validation folds: leave-one-session-out, speaker-disjoint k-fold, official split.

In `by_session` and `by_speaker` no speaker ever appears in two of a fold's train/val/test.
`official` follows the corpus' own split (MELD train/dev/test), which is not speaker-disjoint.

`data.val` chooses each fold's validation speakers (VAL_PROTOCOLS, in trainables/config.py):
- `next_session` (default): by_session: one speaker of the next session (rotating through its
  speakers), by_speaker: the next speaker group; the test fold is the whole test session/group.
- `test_session_other` (by_session): leave two speakers out: one fold per speaker, who tests,
  while the other speaker(s) of the same session validate (IEMOCAP: 10 folds, not 5).
- `train_fraction` (by_session, by_speaker): `data.val_fraction` of the speakers left after the
  test ones, drawn with `data.seed` + the fold's index (at least one, never all).
`official` uses the corpus' dev split and accepts only the default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from trainables.config import VAL_PROTOCOLS
from trainables.data.base import Fold
from trainables.errors import ConfigError

FOLD_KINDS = ("by_session", "by_speaker", "official")
MAX_SESSIONS = 30  # leave-one-session-out beyond this is almost surely a mistake (MELD dialogues)
VAL_SPLITS = ("dev", "val", "validation")


def test_set_id(ids: Sequence[str], test: np.ndarray) -> str:
    """THE identity of a test set: a short hash of its sorted utterance ids. Two folds (or two
    data choices) with the same test utterances get the same id, so paired comparisons
    (orchestrator/query/paired.py) pair and merge on it instead of on the fold's name."""
    text = "\n".join(sorted(str(ids[int(i)]) for i in np.asarray(test).reshape(-1)))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


test_set_id.__test__ = False  # a product function, not a pytest test


def make_folds(kind: str, speakers: list[str], sessions: list[str], splits: list[str | None],
               n_folds: int, seed: int, val: str = "next_session",
               val_fraction: float = 0.2) -> list[Fold]:
    """The folds of one corpus; arrays index into the utterance lists given. `val`,
    `val_fraction`: the validation protocol (see the module docstring)."""
    if val not in VAL_PROTOCOLS:
        raise ConfigError("data.val", f"unknown validation protocol {val!r}; valid: "
                                      f"{list(VAL_PROTOCOLS)}")
    if val == "train_fraction" and not (
            isinstance(val_fraction, int | float) and 0 < val_fraction < 1):
        raise ConfigError("data.val_fraction", f"val: train_fraction needs 0 < val_fraction "
                                               f"< 1, found {val_fraction!r}")
    spk = np.asarray(speakers)
    if kind == "by_session":
        if val == "test_session_other":
            return _by_session_speaker(spk, np.asarray(sessions))
        folds = _by_session(spk, np.asarray(sessions))
    elif kind == "by_speaker":
        if val == "test_session_other":
            raise ConfigError("data.val", "val: test_session_other needs folds: by_session "
                                          "(the test session's other speaker validates)")
        folds = _by_speaker(spk, n_folds, seed)
    elif kind == "official":
        if val != "next_session":
            raise ConfigError("data.val", f"folds: official validates on the corpus' dev split; "
                                          f"val: {val} is for by_session / by_speaker")
        return [_official(splits)]
    else:
        raise ConfigError("data.folds", f"unknown folds {kind!r}; valid: {list(FOLD_KINDS)}")
    if val == "train_fraction":
        folds = [_train_fraction(f, spk, val_fraction, seed + i) for i, f in enumerate(folds)]
    return folds


def _train_fraction(fold: Fold, speakers: np.ndarray, fraction: float, seed: int) -> Fold:
    """The fold with its validation speakers redrawn: `fraction` of the non-test speakers."""
    test_spk = set(speakers[fold.test].tolist())
    rest = sorted(set(speakers.tolist()) - test_spk)
    if len(rest) < 2:
        raise ConfigError("data.val", f"val: train_fraction needs >= 2 speakers outside the "
                                      f"test fold {fold.name!r}, found {rest}")
    k = min(len(rest) - 1, max(1, round(fraction * len(rest))))
    chosen = [rest[j] for j in np.random.default_rng(seed).permutation(len(rest))[:k]]
    val = np.isin(speakers, chosen)
    test = np.zeros(len(speakers), dtype=bool)
    test[fold.test] = True
    return Fold(fold.name, _idx(~test & ~val), _idx(val), fold.test)


def _by_session_speaker(speakers: np.ndarray, sessions: np.ndarray) -> list[Fold]:
    """val: test_session_other: one fold per speaker (sessions in order, then speakers): the
    speaker tests, the other speakers of its session validate, everyone else trains."""
    names = sorted(set(sessions.tolist()))
    if len(names) < 2:
        raise ConfigError("data.folds", f"by_session needs >= 2 sessions, found {names}; "
                                        "use folds: by_speaker")
    folds = []
    for session in names:
        members = sorted(set(speakers[sessions == session].tolist()))
        if len(members) < 2:
            raise ConfigError("data.val", f"val: test_session_other needs >= 2 speakers in "
                                          f"every session; session {session!r} has {members}")
        for speaker in members:
            test = speakers == speaker
            val = np.isin(speakers, [m for m in members if m != speaker])
            train = ~test & ~val
            if not train.any():
                raise ConfigError("data.folds", f"by_session: no training speakers left when "
                                                f"testing on {speaker!r}")
            folds.append(Fold(f"session_{session}_{speaker}", _idx(train), _idx(val),
                              _idx(test)))
    return folds


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
        # Validation (val: next_session): one speaker of the next session, rotating through
        # its speakers.
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
