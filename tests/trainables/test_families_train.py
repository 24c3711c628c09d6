"""Every registered model family trains 2 epochs on a tiny synthetic corpus and lowers its loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from trainables import names
from trainables.config import TRAIN_DEFAULTS, with_defaults
from trainables.data import PreparedData, prepare_data
from trainables.models import MODELS
from trainables.train import LockstepTrainer

HEAD = {"head_hidden": [16], "dropout": 0.0}
TINY = {  # family -> (features, tiny constructor arguments)
    "transformer": ("logmel", {"layers": 1, "d_model": 16, "heads": 2, "ff_dim": 32, **HEAD}),
    "cnn_lstm": ("raw", {"channels": [8, 8, 8], "lstm_hidden": 8, **HEAD}),
    "sincnet": ("raw", {"sinc_filters": 8, "sinc_taps": 51, "conv_channels": [8, 8],
                        "shift": 1600, "seq_hidden": 8, **HEAD}),
    "resnet_lstm": ("logmel", {"channels": [4, 8], "lstm_hidden": 8, **HEAD}),
    "vggish_lstm": ("logmel", {"width": 0.25, "embedding": 16, "lstm_hidden": 8, **HEAD}),
    "ssl_head": ("ssl", {"proj_dim": 16, **HEAD}),
}
# a random-initialised tiny encoder (no weights to download); ssl features take no train stats
SSL = {"normalize": "none", "ssl": {"model": "wavlm_base", "checkpoint": "random", "arch": "tiny"}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PreparedData]:
    cache = Path(tmp_path_factory.mktemp("cache"))
    return {kind: prepare_data({"corpus": "synthetic", "synthetic_utterances": 60,
                                "max_seconds": 1.0, "features": kind, "use_folds": 1,
                                "normalize": "train", "cache_dir": str(cache),
                                **(SSL if kind == "ssl" else {})})
            for kind in ("logmel", "raw", "ssl")}


def test_every_family_has_a_tiny_configuration() -> None:
    assert sorted(TINY) == sorted(MODELS)


@pytest.mark.parametrize("family", sorted(TINY))
def test_family_trains_two_epochs_and_lowers_its_loss(
    family: str, corpus: dict[str, PreparedData]
) -> None:
    kind, kwargs = TINY[family]
    train = with_defaults({"epochs": 2, "batch_size": 8, "lr": 3e-3, "schedule": "constant",
                           "amp": "off", "device": "cpu", "seeds": [0]}, TRAIN_DEFAULTS)
    config = {"data": {}, "model": {"name": family, **kwargs}, "train": train,
              "runtime": {"metric": "val_uar", "mode": "max"}}
    trainer = LockstepTrainer(config, corpus[kind], torch.device("cpu"))
    first, second = trainer.run_epoch(), trainer.run_epoch()
    assert second["train_loss_mean"] < first["train_loss_mean"]
    assert trainer.finished and math.isfinite(second[names.OBJECTIVE])
    result = json.loads(second[names.MEMBER_RESULTS_JSON])[0]
    assert result["n_test"] == sum(map(sum, result["test_confusion"])) > 0
