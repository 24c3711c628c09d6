"""Defaults of the `data` and `train` sections of a sweep file: the one place they are spelled.

Model defaults are the keyword defaults of each model's constructor (trainables/models/).
orchestrator/sweepfile/sections.py validates a sweep file against these keys and fills them in;
`train_section` is the one place a trial config's train section is merged with its defaults, and
`member_count` the one place the number of members (folds x seeds) is computed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

DATA_DEFAULTS: dict[str, Any] = {
    "corpus": "synthetic",  # synthetic | iemocap | meld | manifest | multi
    # corpus: multi -> a list of {corpus, root, name, folds, seed, ...} (trainables/data/multi.py)
    "corpora": None,
    "root": None,  # IEMOCAP/MELD release directory, or the manifest file
    "classes": 4,  # IEMOCAP: 4 (excited merged into happy) or 6
    "features": "logmel",  # raw | logmel | mfcc | compare | egemaps (features.FEATURES)
    "n_mels": 64,
    "n_mfcc": 40,
    "compare_deltas": False,
    "downsample": 1,  # integer factor along time (scipy.signal.resample_poly)
    "max_seconds": 4.0,  # crop/pad every utterance to this length, in (0, MAX_SECONDS]
    "normalize": "train",  # none | utterance | speaker | train (training split's mean/std)
    "folds": "by_session",  # by_session | by_speaker | official
    # which speakers validate (VAL_PROTOCOLS, trainables/data/folds.py): next_session (a speaker
    # of the next session) | test_session_other (the test session's other speaker: leave two
    # speakers out) | train_fraction (val_fraction of the training speakers)
    "val": "next_session",
    "val_fraction": 0.2,  # val: train_fraction -> this share of the training speakers (> 0, < 1)
    "n_folds": 5,  # by_speaker: k speaker-disjoint folds
    "use_folds": None,  # train only the first N folds (None = all)
    "seed": 0,  # synthetic corpus generation seed
    "synthetic_utterances": 800,
    "cache_dir": ".cache/sersweep",
    # features: ssl -> a frozen self-supervised encoder's hidden states (trainables/data/ssl)
    "ssl": {
        # wavlm_base_plus | wavlm_base | wavlm_large | hubert_base | hubert_large |
        # wav2vec2_base | wav2vec2_large | wav2vec2_large_lv60k
        "model": "wavlm_base_plus",
        "checkpoint": "torchaudio",  # torchaudio (download once) | random (tests) | a state dict
        "layers": "all",  # all | [i, ...] hidden states kept (0 = transformer input, i = layer i)
        "arch": None,  # tests/dev only: tiny | small | {torchaudio builder argument: value}
        "batch_seconds": None,  # padded audio per extraction batch; None = auto (CPU 16, GPU fit)
        "dtype": "float16",  # float16 | float32, of the cache
        "device": "auto",  # auto | cpu | cuda: where the encoder runs
    },
}

# data.val: how each fold's validation speakers are chosen (trainables/data/folds.py)
VAL_PROTOCOLS = ("next_session", "test_session_other", "train_fraction")

# data.normalize: none | utterance | speaker (each speaker its own stats) | train (training split)
NORMALIZE_KINDS = ("none", "utterance", "speaker", "train")
MAX_SECONDS = 600.0  # the longest data.max_seconds (the spec and prepare_data check it)

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 32,  # the LOGICAL batch the optimizer sees
    "micro_batch": None,  # None = batch_size; the planner may shrink it (gradient accumulation)
    # BatchNorm statistics per ghost batch of this many samples (models/sample_noise.py), so
    # that the numbers do not depend on the micro-batch (which must be a multiple of it)
    "norm_batch": 8,
    "optimizer": "adamw",  # adamw | sgd
    "lr": 5.0e-4,
    "weight_decay": 0.01,
    "momentum": 0.9,  # sgd only
    "warmup_epochs": 0,
    "schedule": "cosine",  # cosine | constant (after warmup)
    "grad_clip": 1.0,  # max grad norm; 0 = off
    "amp": "auto",  # auto (bf16/fp16 autocast on CUDA, off on CPU) | on | off
    "seeds": [0],  # members = folds x seeds
    "reweight": False,  # class-weighted cross-entropy
    "rebalance": False,  # class-balanced sampling
    # A member collapses after `collapse_patience` consecutive epochs whose validation
    # predictions are near chance or degenerate (trainables/collapse.py: epoch_collapse):
    "collapse_patience": 3,
    "collapse_margin": 0.05,  # val UAR <= 1/n_classes + margin counts (near chance)
    "collapse_top_share": 0.95,  # the most predicted class >= this share counts (degenerate)
    "device": "auto",  # auto | cpu | cuda
}


DISTILL_DEFAULTS: dict[str, Any] = {
    "teacher": None,  # {results: <teacher sweep dir or name>, pick: best | <trial id>}
    "temperature": 2.0,  # T of the soft labels (the KD term is scaled by T^2)
    "kd_weight": 1.0,  # weight of KL(teacher/T || student/T); 0 = no soft-label loss
    "mse_weight": 1.0,  # weight of the hidden-state MSE (summed over the matched layers)
    # hidden layers matched, counted from the INPUT side (0 = the first hidden of both models):
    # N = the first N ([0, ..., N-1]), or an explicit list of indices (-1 = the last, the head's)
    "mse_layers": 2,
    # one of trainables.distill_loss.EXPERIMENTS: overrides kd_weight/mse_layers
    "experiment": None,
}
TEACHER_DEFAULTS: dict[str, Any] = {"results": None, "pick": "best"}


def with_defaults(section: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A copy of `defaults` updated with `section` (no validation: orchestrator/sweepfile
    validates)."""
    merged = copy.deepcopy(defaults)
    merged.update(copy.deepcopy(section))
    return merged


def train_section(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config["train"]` (absent: {}) over TRAIN_DEFAULTS: what a trial trains with."""
    return with_defaults(dict(config.get("train") or {}), TRAIN_DEFAULTS)


def member_count(n_folds: int, train: Mapping[str, Any]) -> int:
    """Members of a trial: folds x seeds (each at least 1, as the trial needs one of each)."""
    return max(1, int(n_folds)) * max(1, len(train.get("seeds") or TRAIN_DEFAULTS["seeds"]))


FoldT = TypeVar("FoldT")


def member_pairs(folds: Sequence[FoldT], train: Mapping[str, Any]) -> list[tuple[FoldT, int]]:
    """The members of a trial in index order: member i is (fold, seed) = pairs[i], folds outer,
    seeds inner (itertools.product order). The trainer's members and the reference baseline's
    rows (trainables/egemaps_baseline.py) both come from here, so they pair member by member."""
    return [(fold, int(seed)) for fold in folds for seed in train["seeds"]]
