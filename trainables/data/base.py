"""The data contracts: what a corpus yields and what a trial trains on.

A corpus (synthetic, iemocap, meld, manifest, or a multi-corpus union) yields `Utterance`s.
`prepare_data` (data/prepare.py) turns a corpus + the sweep file's `data` section into one
`PreparedData`: every utterance featurized, cropped/padded to `data.max_seconds`, with its folds.
The driver builds it once per sweep (cached on disk, data/cache.py) and hands it to the trials
through Ray's object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

SAMPLE_RATE = 16_000  # every corpus is resampled to this


@dataclass
class Utterance:
    id: str
    waveform: np.ndarray  # (S,) float32, mono, SAMPLE_RATE
    label: str  # one of the corpus' class names
    speaker: str  # unique across the corpus (e.g. "Ses01_M")
    session: str  # session / group (IEMOCAP session, MELD dialogue, synthetic session)
    split: str | None = None  # official split when the corpus has one (MELD: train/dev/test)


@dataclass
class Fold:
    """One cross-validation fold: index arrays into PreparedData, pairwise disjoint."""

    name: str  # e.g. "session1" / "speakers0" / "official"
    train: np.ndarray  # (N_train,) int64
    val: np.ndarray  # (N_val,) int64
    test: np.ndarray  # (N_test,) int64


@dataclass
class PreparedData:
    """A featurized corpus, ready for training. Plain tensors so it pickles into the object store.

    features: (N, S) for `raw` (samples), (N, T, F) for frame features (logmel, mfcc, compare).
    lengths:  (N,) int64, valid samples or frames of each row before padding (the padding mask).
    """

    features: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor  # (N,) int64 index into `classes`
    classes: list[str]
    ids: list[str]
    speakers: list[str]
    sessions: list[str]
    folds: list[Fold]
    feature_kind: str  # "raw" | "logmel" | "mfcc" | "compare"
    frame_rate: float  # rows per second along the time axis (SAMPLE_RATE for raw)
    # "none" | "utterance" (already applied) | "train" (per fold: batching.fold_stats / Inputs)
    normalize: str = "none"
    info: dict = field(default_factory=dict)  # corpus name, skipped files, cache key, ...
    # multi-corpus data (corpus: multi): the corpus name of each row; empty for one corpus
    corpus_of: list[str] = field(default_factory=list)

    @property
    def n_features(self) -> int:
        """Feature dimension F of one time step (1 for raw audio)."""
        return 1 if self.features.dim() == 2 else int(self.features.shape[-1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])
