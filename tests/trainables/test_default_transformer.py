"""The default transformer of search_spaces/transformer.yaml learns the synthetic corpus; a bad
configuration of it does not (the corpus separates good from bad settings)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainables import names
from trainables.config import DATA_DEFAULTS, TRAIN_DEFAULTS, with_defaults
from trainables.data import prepare_data
from trainables.train import LockstepTrainer

SPACE = Path(__file__).parents[2] / "search_spaces" / "transformer.yaml"


def _best_val_uar(lr: float, cache_dir: Path) -> float:
    sweep = yaml.safe_load(SPACE.read_text())
    data_cfg = with_defaults(sweep["data"], DATA_DEFAULTS) | {"cache_dir": str(cache_dir)}
    config = {
        "data": data_cfg,
        "model": dict(sweep["model"]),
        "train": with_defaults(sweep["train"], TRAIN_DEFAULTS) | {"lr": lr},
        "runtime": {"metric": names.VAL_UAR, "mode": "max"},
    }
    trainer = LockstepTrainer(config, prepare_data(data_cfg))
    while not trainer.finished:
        report = trainer.run_epoch()
    return float(report[names.OBJECTIVE])  # members' mean of their best validation UAR


@pytest.mark.slow
def test_default_transformer_beats_chance_and_a_frozen_one_does_not(tmp_path: Path) -> None:
    good = _best_val_uar(5.0e-4, tmp_path)  # the sweep file's lr
    frozen = _best_val_uar(1.0e-8, tmp_path)  # an lr that cannot move the weights
    print(f"default transformer: val UAR {good:.3f}; lr 1e-8: {frozen:.3f} (chance 0.25)")
    assert good > 0.45
    assert frozen < 0.35
