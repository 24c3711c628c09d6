"""When a member counts as collapsed: the one decision, made on one epoch's validation predictions.

A member is flagged `collapsed` (and stops) after `train.collapse_patience` consecutive epochs
whose validation predictions are collapsed in one of these ways (checked in this order):

- `single_class`: at most one class predicted (the old, only rule);
- `degenerate`:   the most predicted class has at least `train.collapse_top_share` of the
                  predictions (e.g. 0.95: a model that answers "neutral" to 97 % of clips);
- `near_chance`:  validation UAR <= chance (1 / n_classes) + `train.collapse_margin`: a member
                  that predicts several classes but learned nothing (lr 1e-9: UAR 0.267 of 4).

Why both: a member stuck near chance is as useless to the ranking as one stuck on one class, and
ASHA / Optuna would otherwise keep its trial alive on the other members' numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from trainables.metrics import compute_metrics
from trainables.names import UAR

SINGLE_CLASS, DEGENERATE, NEAR_CHANCE = "single_class", "degenerate", "near_chance"
COLLAPSE_REASONS = (SINGLE_CLASS, DEGENERATE, NEAR_CHANCE)


def epoch_collapse(labels: np.ndarray, pred: np.ndarray, n_classes: int, *, margin: float,
                   top_share: float) -> str | None:
    """Why this epoch's validation predictions `pred` (of true `labels`) are collapsed, one of
    COLLAPSE_REASONS, or None when they are not. Empty predictions say nothing: None."""
    pred = np.asarray(pred, dtype=np.int64).ravel()
    if pred.size == 0:
        return None
    counts = np.bincount(pred, minlength=n_classes)
    if np.count_nonzero(counts) <= 1:
        return SINGLE_CLASS
    if counts.max() / pred.size >= top_share:
        return DEGENERATE
    uar = compute_metrics(np.asarray(labels), pred, n_classes)[UAR]
    if np.isfinite(uar) and uar <= 1.0 / n_classes + margin:
        return NEAR_CHANCE
    return None


def collapse_rule(train_cfg: Mapping[str, Any]) -> dict[str, float]:
    """The keyword arguments of `epoch_collapse` from a train section (config.TRAIN_DEFAULTS)."""
    return {"margin": float(train_cfg["collapse_margin"]),
            "top_share": float(train_cfg["collapse_top_share"])}
