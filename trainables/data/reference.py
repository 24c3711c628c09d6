"""The reference classifier: a standardized logistic regression on utterance-level vectors.

One definition, used twice:
* the calibration of a corpus (`reference_uar`): each utterance becomes the mean and std of its
  frame features over its valid frames; docs/data.md reports it for the synthetic corpus: far
  from chance (0.25) but far from 1.0, so sweeps have something to find;
* the reference baseline of every sweep (trainables/egemaps_baseline.py), on eGeMAPS functionals.

The classifier is scikit-learn's `SimpleImputer -> StandardScaler -> LogisticRegression`
(L2, L-BFGS, multinomial, `class_weight="balanced"`): fit on a fold's training split only (the
imputer's means and the scaler's statistics included), so nothing of validation or test leaks.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from trainables.data.base import Fold, PreparedData
from trainables.data.features import masked_moments
from trainables.metrics import compute_metrics
from trainables.names import UAR

MAX_ITER = 5000  # L-BFGS iterations (converges in far fewer on these problems)
C = 1.0  # inverse L2 strength (scikit-learn's default): a reference, never tuned on test


def utterance_stats(data: PreparedData) -> torch.Tensor:
    """(N, 2F) mean and std of each row's valid frames."""
    mean, std = masked_moments(data.features, data.lengths, per_row=True)
    return torch.cat([mean, std], dim=1).float()


def uar(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean recall over the classes present in y_true (trainables.metrics' UAR)."""
    return float(compute_metrics(y_true, y_pred, n_classes)[UAR])


def reference_classifier() -> Any:
    """A fresh, unfitted scikit-learn pipeline (deterministic: no random state is drawn)."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        SimpleImputer(strategy="mean", keep_empty_features=True),  # NaN -> training mean
        StandardScaler(),
        LogisticRegression(C=C, class_weight="balanced", max_iter=MAX_ITER, random_state=0))


def fit(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> tuple[Any, bool]:
    """The reference classifier fit on rows `train`; (model, converged before MAX_ITER)."""
    from sklearn.exceptions import ConvergenceWarning

    model = reference_classifier()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as `converged`
        model.fit(x[train], y[train])
    return model, int(np.max(model[-1].n_iter_)) < MAX_ITER


def fit_predict(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, fold: Fold,
                n_classes: int) -> np.ndarray:
    """Train on fold.train, return predicted classes for fold.test."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
    model, _ = fit(xs, ys, fold.train)
    return model.predict(xs[fold.test])


def reference_uar(data: PreparedData) -> list[float]:
    """Test UAR of the reference model on each fold of `data` (frame features only)."""
    x = utterance_stats(data)
    y = data.labels
    return [uar(y[f.test].numpy(), fit_predict(x, y, f, data.n_classes), data.n_classes)
            for f in data.folds]
