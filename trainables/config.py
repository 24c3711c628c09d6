"""Defaults of the `data` and `train` sections of a sweep file: the one place they are spelled.

Model defaults are the keyword defaults of each model's constructor (trainables/models/).
orchestrator/spec.py validates a sweep file against these keys and fills them in.
"""

from __future__ import annotations

import copy
from typing import Any

DATA_DEFAULTS: dict[str, Any] = {
    "corpus": "synthetic",  # synthetic | iemocap | meld | manifest | multi
    # corpus: multi -> a list of {corpus, root, name, folds, seed, ...} (trainables/data/multi.py)
    "corpora": None,
    "root": None,  # IEMOCAP/MELD release directory, or the manifest file
    "classes": 4,  # IEMOCAP: 4 (excited merged into happy) or 6
    "features": "logmel",  # raw | logmel | mfcc | compare
    "n_mels": 64,
    "n_mfcc": 40,
    "compare_deltas": False,
    "downsample": 1,  # integer factor along time (scipy.signal.resample_poly)
    "max_seconds": 4.0,  # crop/pad every utterance to this length
    "normalize": "train",  # none | utterance | train (mean/std of the training split only)
    "folds": "by_session",  # by_session | by_speaker | official
    "n_folds": 5,  # by_speaker: k speaker-disjoint folds
    "use_folds": None,  # train only the first N folds (None = all)
    "seed": 0,  # synthetic corpus generation seed
    "synthetic_utterances": 800,
    "cache_dir": ".cache/sersweep",
}

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 32,  # the LOGICAL batch the optimizer sees
    "micro_batch": None,  # None = batch_size; the planner may shrink it (gradient accumulation)
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
    "collapse_patience": 3,  # epochs of single-class validation predictions before `collapsed`
    "device": "auto",  # auto | cpu | cuda
}


DISTILL_DEFAULTS: dict[str, Any] = {
    "teacher": None,  # {results: <teacher sweep dir or name>, pick: best | <trial id>}
    "temperature": 2.0,  # T of the soft labels (the KD term is scaled by T^2)
    "kd_weight": 1.0,  # weight of KL(teacher/T || student/T); 0 = no soft-label loss
    "mse_weight": 1.0,  # weight of the hidden-state MSE (summed over the matched layers)
    "mse_layers": 2,  # 0-4 hidden layers matched from the end of both models
    "experiment": None,  # one of trainables.distill.EXPERIMENTS: overrides kd_weight/mse_layers
}
TEACHER_DEFAULTS: dict[str, Any] = {"results": None, "pick": "best"}


def with_defaults(section: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A copy of `defaults` updated with `section` (no validation; spec.py validates)."""
    merged = copy.deepcopy(defaults)
    merged.update(copy.deepcopy(section))
    return merged
