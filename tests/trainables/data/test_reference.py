"""The reference model and the calibration of the default synthetic corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.config import DATA_DEFAULTS, with_defaults
from trainables.data import prepare_data
from trainables.data.reference import reference_uar, uar


def test_uar_is_mean_recall() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 2, 2])
    assert uar(y, pred, 3) == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    assert uar(y, np.zeros_like(y), 3) == pytest.approx(1 / 3)  # one-class collapse = chance


@pytest.mark.slow
def test_default_synthetic_corpus_is_learnable_but_not_trivial(tmp_path) -> None:
    """The calibration docs/data.md reports: chance 0.25 < reference UAR < 1.0 (~20 s)."""
    data = prepare_data(with_defaults({"cache_dir": str(tmp_path)}, DATA_DEFAULTS))
    scores = reference_uar(data)
    assert len(scores) == 5
    assert 0.45 < np.mean(scores) < 0.85, scores
    # A useless configuration (labels unrelated to the audio) stays at chance.
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    data.labels = data.labels[perm]
    assert np.mean(reference_uar(data)) < 0.35
