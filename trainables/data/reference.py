"""The reference model that calibrates a corpus: logistic regression on utterance statistics.

Each utterance becomes the mean and std of its frame features over its valid frames; a
multinomial logistic regression (L2, full-batch L-BFGS, standardized with the training split's
statistics) is trained per fold and scored by test UAR. docs/data.md reports it for the
synthetic corpus: far from chance (0.25) but far from 1.0, so sweeps have something to find.
"""

from __future__ import annotations

import numpy as np
import torch

from trainables.data.base import Fold, PreparedData
from trainables.data.features import masked_moments


def utterance_stats(data: PreparedData) -> torch.Tensor:
    """(N, 2F) mean and std of each row's valid frames."""
    mean, std = masked_moments(data.features, data.lengths, per_row=True)
    return torch.cat([mean, std], dim=1).float()


def uar(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean recall over the classes present in y_true."""
    recalls = [np.mean(y_pred[y_true == c] == c) for c in range(n_classes) if (y_true == c).any()]
    return float(np.mean(recalls))


def fit_predict(x: torch.Tensor, y: torch.Tensor, fold: Fold, n_classes: int,
                l2: float = 1e-2) -> np.ndarray:
    """Train on fold.train, return predicted classes for fold.test."""
    tr = torch.as_tensor(fold.train)
    mu, sd = x[tr].mean(0), x[tr].std(0).clamp_min(1e-5)
    z = (x - mu) / sd
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(z[tr]), y[tr])
        loss = loss + l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return model(z[torch.as_tensor(fold.test)]).argmax(1).numpy()


def reference_uar(data: PreparedData) -> list[float]:
    """Test UAR of the reference model on each fold of `data` (frame features only)."""
    x = utterance_stats(data)
    y = data.labels
    return [uar(y[f.test].numpy(), fit_predict(x, y, f, data.n_classes), data.n_classes)
            for f in data.folds]
