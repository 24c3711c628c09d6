"""The reference baseline (eGeMAPS functionals + standardized logistic regression) on the
sweep's own members: pairing, metrics, caching, and that it learns (and can fail)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.trainables.data.fixtures import SMALL_SYNTHETIC
from trainables.data import prepare_data
from trainables.egemaps_baseline import (
    align,
    egemaps_functionals,
    functionals_key,
    run_baseline,
)
from trainables.errors import DataError
from trainables.metrics import metrics_from_confusion
from trainables.train import LockstepTrainer

TINY_MODEL = {"name": "transformer", "layers": 1, "d_model": 16, "heads": 2, "ff_dim": 16,
              "head_hidden": [8]}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """60 synthetic utterances (5 sessions): the prepared data and its baseline, built once."""
    cfg = {"corpus": "synthetic", "synthetic_utterances": SMALL_SYNTHETIC,
           "cache_dir": str(tmp_path_factory.mktemp("baseline_cache"))}
    data = prepare_data(cfg)
    frame = run_baseline(cfg, {"seeds": [0, 1]}, data=data)
    return {"cfg": cfg, "data": data, "frame": frame}


def test_rows_are_the_trainers_members(small: dict) -> None:
    """Row `member` i is member i of a trial (same fold, same seed), so they pair."""
    trainer = LockstepTrainer({"model": TINY_MODEL, "train": {"seeds": [0, 1], "epochs": 1,
                                                             "device": "cpu"}}, small["data"])
    members = [(m.index, m.fold.name, m.seed) for m in trainer.members]
    frame = small["frame"]
    assert list(zip(frame["member"], frame["fold"], frame["seed"], strict=True)) == members
    assert len(frame) == 5 * 2  # 5 sessions x 2 seeds


def test_metrics_come_from_the_stored_confusions(small: dict) -> None:
    data, frame = small["data"], small["frame"]
    folds = {f.name: f for f in data.folds}
    for row in frame.itertuples():
        for split in ("val", "test"):
            conf = np.asarray(getattr(row, f"{split}_confusion"))
            expected = metrics_from_confusion(conf)
            for m in ("acc", "uar", "f1_macro", "f1_weighted"):
                assert getattr(row, f"{split}_{m}") == pytest.approx(expected[m])
            # rows = true class: the row sums are the split's label counts
            idx = getattr(folds[row.fold], split)
            np.testing.assert_array_equal(conf.sum(1), np.bincount(
                data.labels[idx].numpy(), minlength=data.n_classes))
        assert row.classes == data.classes
        assert (row.n_train, row.n_val, row.n_test) == (
            len(folds[row.fold].train), len(folds[row.fold].val), len(folds[row.fold].test))
    # deterministic: both seeds of a fold score the same
    by_fold = frame.groupby("fold")["test_uar"].nunique()
    assert (by_fold == 1).all()


def test_learns_and_shuffled_labels_stay_near_chance(small: dict) -> None:
    """Well above chance (0.25) on the synthetic corpus; with the labels shuffled (a baseline
    that leaked test labels or fit the test split would still score high) near chance."""
    data, cfg = small["data"], small["cfg"]
    assert small["frame"]["test_uar"].mean() > 0.5
    shuffled = prepare_data(cfg)
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    shuffled.labels = data.labels[perm]
    frame = run_baseline(cfg, {"seeds": [0]}, data=shuffled)
    assert frame.attrs["cache"] == "miss"  # the labels are part of the result's key
    assert frame["test_uar"].mean() < 0.36


def test_cached_functionals_and_result(small: dict) -> None:
    cfg = small["cfg"]
    again = run_baseline(cfg, {"seeds": [0, 1]}, data=small["data"])
    assert again.attrs["cache"] == "hit"
    pd.testing.assert_frame_equal(again.drop(columns="fit_seconds"),
                                  small["frame"].drop(columns="fit_seconds"))
    # the functionals do not depend on the sweep's front-end, only on the corpus
    assert functionals_key({**cfg, "features": "mfcc", "normalize": "speaker",
                            "max_seconds": 2.0}) == functionals_key(cfg)
    assert functionals_key({**cfg, "seed": 1}) != functionals_key(cfg)
    ids, x, status = egemaps_functionals({**cfg, "features": "mfcc"})
    assert status == "hit" and x.shape == (SMALL_SYNTHETIC, 88) and ids == small["data"].ids
    # other folds -> another result (never a stale one), from the same cached functionals
    two = run_baseline({**cfg, "use_folds": 2}, {"seeds": [0]})
    assert two.attrs == {"cache": "miss", "functionals_cache": "hit"}
    assert list(two["fold"]) == list(small["frame"]["fold"].unique()[:2])


def test_align_reorders_by_id_and_refuses_missing_ids() -> None:
    x = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(align(["a", "b", "c"], x, ["c", "a"]), x[[2, 0]])
    with pytest.raises(DataError, match="missing e.g. \\['z'\\]"):
        align(["a", "b", "c"], x, ["a", "z"])


@pytest.mark.slow
def test_default_synthetic_corpus(tmp_path: Path) -> None:
    """The full default corpus (800 utterances, 5 folds; ~80 s idle): the eGeMAPS baseline is
    well above chance and below 1 (0.78), and shuffled labels stay at chance (0.27)."""
    cfg = {"cache_dir": str(tmp_path)}
    data = prepare_data(cfg)
    frame = run_baseline(cfg, {"seeds": [0]}, data=data)
    assert 0.6 < frame["test_uar"].mean() < 0.95, frame["test_uar"].tolist()
    assert frame["converged"].all()
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    data.labels = data.labels[perm]
    assert run_baseline(cfg, {"seeds": [0]}, data=data)["test_uar"].mean() < 0.32

