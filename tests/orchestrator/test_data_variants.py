"""Searched data.* choices: each value is prepared once and each trial trains on its own data.

Before: a searched `data.normalize` was sampled and recorded, but every trial got the one
PreparedData the driver had made from the sweep file's data section.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from orchestrator.runner import data_variants
from orchestrator.sweepfile import SpecError, load_spec
from trainables.data import PreparedData, prepared_key
from trainables.trainable import _prepare
from trainables.trial_config import TrialConfig

TINY = Path(__file__).parent / "tiny_sweep.yaml"


def _spec(tmp_path: Path, params: str):
    text = TINY.read_text().replace("  params:\n", "  params:\n" + params, 1)
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return load_spec(path)


def test_each_data_choice_is_one_variant(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "    data.normalize: {choice: [train, speaker]}\n")
    variants = data_variants(spec)
    assert [v["normalize"] for v in variants] == ["train", "speaker"]
    base = spec.base_config()["data"]
    assert all({k: v for k, v in variant.items() if k != "normalize"}
               == {k: v for k, v in base.items() if k != "normalize"} for variant in variants)
    assert len({prepared_key(v) for v in variants}) == 2


def test_a_sweep_without_data_params_has_no_variants(tmp_path: Path) -> None:
    assert data_variants(_spec(tmp_path, "")) == []


def test_a_continuous_data_param_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"data.n_mels.*prepared once per value.*choice"):
        _spec(tmp_path, "    data.n_mels: {int: [16, 64]}\n")


def test_too_many_data_combinations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"ask for 9 prepared data sets; at most 8"):
        _spec(tmp_path, "    data.n_mels: {choice: [16, 24, 32]}\n"
                        "    data.downsample: {choice: [1, 2, 4]}\n")


def _data(marker: float) -> PreparedData:
    return PreparedData(features=torch.full((1, 2, 3), marker), lengths=torch.tensor([2]),
                        labels=torch.tensor([0]), classes=["a"], ids=["u"], speakers=["s"],
                        sessions=["1"], folds=[], feature_kind="logmel", frame_rate=100.0)


def test_a_trial_trains_on_the_data_of_its_own_choice(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "    data.normalize: {choice: [train, speaker]}\n")
    train, speaker = data_variants(spec)
    datasets = {prepared_key(train): _data(1.0), prepared_key(speaker): _data(2.0)}
    config = {**spec.base_config(), "data": speaker}
    trial = TrialConfig.from_dict(config)  # what the trial passes down
    assert float(_prepare(datasets, trial).features[0, 0, 0]) == 2.0
    trial = TrialConfig.from_dict({**config, "data": train})
    assert float(_prepare(datasets, trial).features[0, 0, 0]) == 1.0
