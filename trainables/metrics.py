"""SER classification metrics: accuracy (WA), UAR, macro/weighted F1, per-class recall, confusion.

All metrics come from integer labels / predictions in ``[0, n_classes)`` through one confusion
matrix ``C[true, pred]``.

Edge-case conventions (as scikit-learn with ``labels=`` the classes present in ``y_true``):
- a class that is never PREDICTED has precision 0, hence F1 0 (sklearn's ``zero_division=0``);
- a class ABSENT from ``y_true`` has no recall: its recall is reported as NaN and it is EXCLUDED
  from UAR and macro-F1 (averages over the classes present in the labels), and it has weight 0 in
  weighted-F1. Predictions of such a class still count as errors in accuracy (and lower the
  recall of the true classes they were taken from).
- empty input: every scalar metric is NaN and the confusion matrix is all zeros.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainables.names import ACC, F1_MACRO, F1_WEIGHTED, UAR

CONFUSION = "confusion"
RECALL = "recall"
UAR_BY_CORPUS = "uar_by_corpus"  # multi-corpus data: {corpus name: UAR on its utterances}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts, rows = true class, columns = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise ValueError(f"{name} has values outside [0, {n_classes})")
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def metrics_from_confusion(conf: np.ndarray) -> dict[str, Any]:
    """The metrics of `compute_metrics` from a confusion matrix (see the module conventions)."""
    conf = np.asarray(conf, dtype=np.int64)
    support = conf.sum(axis=1).astype(np.float64)  # true count per class
    predicted = conf.sum(axis=0).astype(np.float64)
    tp = np.diag(conf).astype(np.float64)
    total = support.sum()
    present = support > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(present, tp / np.where(present, support, 1.0), np.nan)
        precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1.0), 0.0)
        rec0 = np.nan_to_num(recall)  # absent classes: F1 0, and they are never averaged
        denom = precision + rec0
        f1 = np.where(denom > 0, 2 * precision * rec0 / np.where(denom > 0, denom, 1.0), 0.0)
    if total == 0:
        nan = float("nan")
        acc = uar = f1_macro = f1_weighted = nan
    else:
        acc = float(tp.sum() / total)
        uar = float(recall[present].mean())
        f1_macro = float(f1[present].mean())
        f1_weighted = float((f1 * support).sum() / total)
    return {
        ACC: acc,
        UAR: uar,
        F1_MACRO: f1_macro,
        F1_WEIGHTED: f1_weighted,
        RECALL: [float(r) for r in recall],
        CONFUSION: conf.tolist(),
    }


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    """acc, uar, f1_macro, f1_weighted (floats), "recall" (per class, NaN where absent from
    `y_true`) and "confusion" (list of lists, rows = true class)."""
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, n_classes))


def uar_by_group(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray,
                 n_classes: int) -> dict[str, float]:
    """{group: UAR over that group's samples} (e.g. per corpus of a multi-corpus test split)."""
    groups = np.asarray(groups)
    return {str(g): compute_metrics(np.asarray(y_true)[groups == g],
                                    np.asarray(y_pred)[groups == g], n_classes)[UAR]
            for g in sorted(set(groups.tolist()))}
