"""When a member counts as collapsed: stopped only on evidence that it is not learning.

An epoch is *judged* only after the learning-rate warmup (epochs 1..ceil(train.warmup_epochs) never
count: a slow starter sits near chance while its lr is still ramping up). A judged epoch's
validation predictions are *stuck* in one of these ways (checked in this order):

- `single_class`: at most one class predicted;
- `degenerate`:   the most predicted class has at least `train.collapse_top_share` of the
                  predictions (e.g. 0.95: a model that answers "neutral" to 97 % of clips);
- `near_chance`:  validation UAR <= chance + `train.collapse_margin`, chance = 1 / the number of
                  classes PRESENT in that validation set (UAR averages over those only);
- `unchanged`:    the predictions are those of the member's first judged epoch (at most
                  UNCHANGED_SHARE of the clips differ): the model has not moved (lr 1e-9 at
                  UAR 0.35), whatever its UAR.

A member is stopped and flagged `collapsed` when its last `train.collapse_patience` epochs were
all judged and stuck AND either its training loss did not improve over that window (no epoch of the
window below (1 - LOSS_MIN_DELTA) x the loss of the epoch before the window; `loss_improved`) or
its predictions, over several classes, were unchanged in every epoch of the window (a model whose
decision boundaries do not move is not learning, whatever dropout does to its training loss on a
small set; one predicted class is no such evidence: a slow starter answers its bias for a while).
Why: a member whose loss still falls is learning even while its validation predictions look
degenerate, and a member whose loss is flat but whose predictions move is not dead either.
`collapse_patience: 0` turns the rule off. The stopped member's reason is stored (members table,
column `collapse_reason`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from trainables.metrics import compute_metrics
from trainables.names import UAR

SINGLE_CLASS, DEGENERATE, NEAR_CHANCE, UNCHANGED = (
    "single_class", "degenerate", "near_chance", "unchanged")
COLLAPSE_REASONS = (SINGLE_CLASS, DEGENERATE, NEAR_CHANCE, UNCHANGED)
LOSS_MIN_DELTA = 0.01  # a relative fall of the training loss below this is no improvement
# (dropout and batch order move the loss of a model that does not learn by ~0.5 %)
UNCHANGED_SHARE = 0.01  # at most this share of changed predictions counts as unchanged


def epoch_collapse(labels: np.ndarray, pred: np.ndarray, n_classes: int, *, margin: float,
                   top_share: float, reference: np.ndarray | None = None) -> str | None:
    """Why this epoch's validation predictions `pred` (of true `labels`) are stuck, one of
    COLLAPSE_REASONS, or None when they are not. `reference`: the member's predictions at its
    first judged epoch (None: no `unchanged` check). Empty predictions say nothing: None."""
    pred = np.asarray(pred, dtype=np.int64).ravel()
    if pred.size == 0:
        return None
    counts = np.bincount(pred, minlength=n_classes)
    if np.count_nonzero(counts) <= 1:
        return SINGLE_CLASS
    if counts.max() / pred.size >= top_share:
        return DEGENERATE
    labels = np.asarray(labels, dtype=np.int64).ravel()
    present = np.unique(labels).size
    uar = compute_metrics(labels, pred, n_classes)[UAR]
    if present and np.isfinite(uar) and uar <= 1.0 / present + margin:
        return NEAR_CHANCE
    if predictions_unchanged(pred, reference):
        return UNCHANGED
    return None


def predictions_unchanged(pred: np.ndarray, reference: np.ndarray | None) -> bool:
    """Whether at most UNCHANGED_SHARE of `pred` differ from `reference` (None: no reference)."""
    pred = np.asarray(pred).ravel()
    if reference is None or reference.shape != pred.shape or pred.size == 0:
        return False
    return bool(np.count_nonzero(reference != pred) <= UNCHANGED_SHARE * pred.size)


def loss_improved(train_losses: Sequence[float], window: int) -> bool:
    """Whether the training loss improved over the last `window` epochs of `train_losses` (one per
    epoch, oldest first): some epoch of the window is below (1 - LOSS_MIN_DELTA) x the loss of the
    epoch before the window (when the window starts at epoch 1: its own first epoch)."""
    losses = [float(v) for v in train_losses]
    if window <= 0 or not losses:
        return False
    start = len(losses) - window
    reference = losses[start - 1] if start >= 1 else losses[0]
    later = losses[max(start, 1):]
    return any(v < reference * (1.0 - LOSS_MIN_DELTA) for v in later)


def first_judged_epoch(train_cfg: Mapping[str, Any]) -> int:
    """The first (1-based) epoch the rule judges: the one after the lr warmup."""
    return int(math.ceil(float(train_cfg.get("warmup_epochs") or 0))) + 1


def collapse_rule(train_cfg: Mapping[str, Any]) -> dict[str, float]:
    """The keyword arguments of `epoch_collapse` from a train section (config.TRAIN_DEFAULTS)."""
    return {"margin": float(train_cfg["collapse_margin"]),
            "top_share": float(train_cfg["collapse_top_share"])}


def collapse_warning(train_cfg: Mapping[str, Any]) -> str | None:
    """One line when the collapse rule is on but can never stop a member of this train section
    (too few epochs after the warmup for `collapse_patience`), else None."""
    patience = int(train_cfg.get("collapse_patience") or 0)
    if patience <= 0:
        return None
    epochs = int(train_cfg["epochs"])
    earliest = first_judged_epoch(train_cfg) + patience - 1
    if earliest <= epochs:
        return None
    return (f"collapse: train.epochs {epochs} is too few for the collapse rule (warmup "
            f"{train_cfg.get('warmup_epochs') or 0} epoch(s) never count, then "
            f"collapse_patience {patience}: the earliest stop is epoch {earliest}); no member "
            f"can be stopped as collapsed in this sweep")
