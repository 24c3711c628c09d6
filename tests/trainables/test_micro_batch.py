"""Issue 21.6: the same config and seed give the same numbers at every micro-batch the planner may
choose: per-sample dropout masks, BatchNorm over fixed ghost batches (train.norm_batch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainables import names
from trainables.batching import micro_chunks
from trainables.config import TRAIN_DEFAULTS, with_defaults
from trainables.data import PreparedData, prepare_data
from trainables.models.head import DNNHead
from trainables.models.sample_noise import SampleDropout, sample_noise
from trainables.train import LockstepTrainer

# dropout everywhere and BatchNorm where the family has it (cnn_lstm/resnet_lstm convs, the head)
NOISY = {"head_hidden": [16], "dropout": 0.3, "head_norm": "batch"}
FAMILIES = {
    "transformer": ("logmel", {"layers": 1, "d_model": 16, "heads": 2, "ff_dim": 32, **NOISY}),
    "cnn_lstm": ("raw", {"channels": [8, 8, 8], "lstm_hidden": 8, "lstm_layers": 2, **NOISY}),
    "resnet_lstm": ("logmel", {"channels": [4, 8], "lstm_hidden": 8, **NOISY}),
}
MICRO = (32, 8, 4)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PreparedData]:
    cache = Path(tmp_path_factory.mktemp("cache"))
    return {kind: prepare_data({"corpus": "synthetic", "synthetic_utterances": 72,
                                "max_seconds": 1.0, "features": kind, "use_folds": 1,
                                "normalize": "train", "cache_dir": str(cache)})
            for kind in ("logmel", "raw")}


def _numbers(family: str, data: PreparedData, micro: int) -> list[dict]:
    kind, kwargs = FAMILIES[family]
    train = with_defaults({"epochs": 2, "batch_size": 32, "micro_batch": micro, "norm_batch": 4,
                           "lr": 3e-3, "amp": "off", "device": "cpu", "seeds": [0]},
                          TRAIN_DEFAULTS)
    config = {"data": {}, "model": {"name": family, **kwargs}, "train": train,
              "runtime": {"metric": "val_uar", "mode": "max"}}
    trainer = LockstepTrainer(config, data, torch.device("cpu"))
    out = []
    while not trainer.finished:
        report = trainer.run_epoch()
        result = json.loads(report[names.MEMBER_RESULTS_JSON])[0]
        out.append({"train_loss": report[names.mean_key(names.TRAIN_LOSS)],
                    "val_loss": report[names.mean_key("val_loss")],
                    "val_uar": report[names.VAL_UAR_MEAN], "objective": report[names.OBJECTIVE],
                    "best_epoch": result["best_epoch"], "test_uar": result["test_uar"]})
    assert trainer.micro.size == micro
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_numbers_do_not_depend_on_the_micro_batch(
        family: str, corpus: dict[str, PreparedData]) -> None:
    data = corpus[FAMILIES[family][0]]
    runs = {micro: _numbers(family, data, micro) for micro in MICRO}
    reference = runs[MICRO[0]]
    for micro in MICRO[1:]:
        for epoch, (got, want) in enumerate(zip(runs[micro], reference, strict=True), 1):
            for key, value in want.items():
                assert got[key] == pytest.approx(value, rel=1e-3, abs=1e-6), (
                    f"{family} micro {micro} epoch {epoch} {key}: {got[key]} vs {value}")


def test_dropout_masks_are_per_sample_whatever_the_chunking() -> None:
    drop = SampleDropout(0.5).train()
    x = torch.ones(12, 5, 3)
    with sample_noise(seed=7, start=0, norm_batch=4):
        whole = drop(x)
    parts = []
    for start, chunk in zip((0, 4, 8), x.split(4), strict=True):
        with sample_noise(seed=7, start=start, norm_batch=4):
            parts.append(drop(chunk))
    assert torch.equal(torch.cat(parts), whole)
    assert 0.3 < (whole == 0).float().mean() < 0.7  # it does drop, at about p
    with sample_noise(seed=8, start=0, norm_batch=4):
        assert not torch.equal(drop(x), whole)  # another step, other masks


def test_micro_chunks_cut_on_ghost_batches() -> None:
    sizes = [len(c) for c in micro_chunks(torch.arange(30), 12, norm_batch=4)]
    assert sizes == [12, 12, 6]  # whole ghost batches of 4 (30 = 7 x 4 + 2)
    assert [len(c) for c in micro_chunks(torch.arange(17), 8, norm_batch=8)] == [8, 9]
    assert [len(c) for c in micro_chunks(torch.arange(30), 12)] == [10, 10, 10]


def test_a_head_checkpoint_with_a_bias_before_batchnorm_still_loads_exactly() -> None:
    """The head's Linear before BatchNorm has no bias now; an older state dict's bias is folded
    into the running mean, so the loaded head gives the old eval output."""
    torch.manual_seed(0)
    old = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.ReLU(),
                              torch.nn.Linear(5, 4))
    old[1].running_mean += torch.randn(5)
    old[0].bias.data += torch.randn(5)
    old.eval()
    state = {f"layers.0.{k}": v for k, v in old[:2].state_dict().items()}
    state.update({f"out.{k}": v for k, v in old[3].state_dict().items()})
    head = DNNHead(6, 4, [5], norm="batch")
    head.load_state_dict(state)
    x = torch.randn(3, 6)
    assert torch.allclose(head.eval()(x)[0], old(x), atol=1e-6)
