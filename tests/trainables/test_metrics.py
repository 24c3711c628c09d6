"""trainables.metrics against an independent per-sample implementation and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainables.metrics import compute_metrics, confusion_matrix
from trainables.names import ACC, F1_MACRO, F1_WEIGHTED, UAR


def reference(y_true: list[int], y_pred: list[int], n_classes: int) -> dict:
    """Straightforward loops: per-class TP/FP/FN counted sample by sample."""
    present = [c for c in range(n_classes) if c in y_true]
    recalls, f1s, supports = {}, {}, {}
    for c in range(n_classes):
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == c and p != c)
        supports[c] = tp + fn
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        recalls[c] = rec
        f1s[c] = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    n = len(y_true)
    return {
        ACC: sum(t == p for t, p in zip(y_true, y_pred)) / n,
        UAR: sum(recalls[c] for c in present) / len(present),
        F1_MACRO: sum(f1s[c] for c in present) / len(present),
        F1_WEIGHTED: sum(f1s[c] * supports[c] for c in range(n_classes)) / n,
        "recall": [recalls[c] if c in present else math.nan for c in range(n_classes)],
    }


def assert_matches(got: dict, want: dict) -> None:
    for key in (ACC, UAR, F1_MACRO, F1_WEIGHTED):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    np.testing.assert_allclose(got["recall"], want["recall"], atol=1e-12)


def test_hand_computed_case() -> None:
    y_true = [0, 0, 0, 0, 1, 1, 2, 2, 2, 3]
    y_pred = [0, 0, 1, 2, 1, 0, 2, 2, 2, 0]
    m = compute_metrics(np.array(y_true), np.array(y_pred), 4)
    assert m["confusion"] == [[2, 1, 1, 0], [1, 1, 0, 0], [0, 0, 3, 0], [1, 0, 0, 0]]
    assert m[ACC] == pytest.approx(6 / 10)
    assert m["recall"] == pytest.approx([0.5, 0.5, 1.0, 0.0])
    assert m[UAR] == pytest.approx((0.5 + 0.5 + 1.0 + 0.0) / 4)
    # precisions: 2/4, 1/2, 3/4, 0 -> F1: 0.5, 0.5, 6/7, 0
    f1 = [0.5, 0.5, 6 / 7, 0.0]
    assert m[F1_MACRO] == pytest.approx(sum(f1) / 4)
    assert m[F1_WEIGHTED] == pytest.approx((0.5 * 4 + 0.5 * 2 + 6 / 7 * 3 + 0) / 10)


@pytest.mark.parametrize("seed", range(20))
def test_random_cases_match_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 7))
    n = int(rng.integers(1, 60))
    y_true = rng.integers(0, n_classes, n)
    # mostly-correct predictions, with some classes missing from labels or predictions
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, n_classes, n))
    got = compute_metrics(y_true, y_pred, n_classes)
    assert_matches(got, reference(y_true.tolist(), y_pred.tolist(), n_classes))
    conf = np.array(got["confusion"])
    assert conf.sum() == n and np.trace(conf) == int((y_true == y_pred).sum())


def test_class_never_predicted_has_f1_zero() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 1])  # class 2 never predicted
    m = compute_metrics(y_true, y_pred, 3)
    assert m["recall"] == pytest.approx([1.0, 1.0, 0.0])
    # F1: 1, 2*0.5*1/1.5 = 2/3, 0
    assert m[F1_MACRO] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert_matches(m, reference(y_true.tolist(), y_pred.tolist(), 3))


def test_class_absent_from_labels_is_excluded_from_averages() -> None:
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 2, 1, 1])  # class 2 absent from labels, predicted once; class 3 unused
    m = compute_metrics(y_true, y_pred, 4)
    assert math.isnan(m["recall"][2]) and math.isnan(m["recall"][3])
    assert m[UAR] == pytest.approx((0.5 + 1.0) / 2)  # averaged over classes 0 and 1 only
    f1_0 = 2 * 1.0 * 0.5 / 1.5
    assert m[F1_MACRO] == pytest.approx((f1_0 + 1.0) / 2)
    assert m[ACC] == pytest.approx(3 / 4)  # the prediction of the absent class is an error


def test_single_class_collapse_scores_chance_uar() -> None:
    y_true = np.repeat(np.arange(4), 5)
    m = compute_metrics(y_true, np.zeros(20, dtype=int), 4)
    assert m[UAR] == pytest.approx(0.25)
    assert m[ACC] == pytest.approx(0.25)
    assert m[F1_MACRO] == pytest.approx(2 * 0.25 * 1.0 / 1.25 / 4)


def test_perfect_and_empty() -> None:
    y = np.array([2, 0, 1, 2])
    m = compute_metrics(y, y, 3)
    assert m[ACC] == m[UAR] == m[F1_MACRO] == m[F1_WEIGHTED] == 1.0
    empty = compute_metrics(np.array([], dtype=int), np.array([], dtype=int), 3)
    assert all(math.isnan(empty[k]) for k in (ACC, UAR, F1_MACRO, F1_WEIGHTED))
    assert empty["confusion"] == [[0] * 3] * 3


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="differ"):
        confusion_matrix(np.array([0, 1]), np.array([0]), 3)
