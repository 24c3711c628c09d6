"""Every shipped search space loads, addresses real constructor keys of its model family, and
every configuration it can sample builds on the meta device (SpeechBrain-recipe style)."""

from __future__ import annotations

import inspect
from pathlib import Path

import optuna
import pytest
import torch

from orchestrator.search import sample_params
from orchestrator.sweepfile import SEARCH_SPACES, load_spec
from trainables.config import DATA_DEFAULTS, DISTILL_DEFAULTS, TRAIN_DEFAULTS
from trainables.data.widths import feature_width
from trainables.models import MODELS, build_model

optuna.logging.set_verbosity(optuna.logging.WARNING)
FILES = sorted(SEARCH_SPACES.glob("*.yaml"))
REQUIRED = {"transformer", "cnn_lstm", "sincnet", "resnet_lstm"}


def test_the_research_families_have_search_spaces() -> None:
    assert REQUIRED <= {p.stem for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_search_space_loads_and_matches_its_model(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem and spec.data["corpus"] == "synthetic"
    ctor = inspect.signature(MODELS[spec.model["name"]]).parameters
    assert set(spec.model) - {"name"} <= set(ctor)
    for key in spec.param_keys():
        section, _, sub = key.partition(".")
        valid = {"data": DATA_DEFAULTS, "train": TRAIN_DEFAULTS, "model": ctor,
                 "distill": DISTILL_DEFAULTS}[section]
        assert sub in valid, f"{path.name}: {key}"
    assert spec.search.metric.startswith("val_") and spec.search.params
    # small by default: the laptop-sized demo; GPUs scale up from the command line
    assert spec.search.trials <= 10 and spec.train["epochs"] <= 8
    assert "--trials" in path.read_text().split("\nname:")[0]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_sampled_configurations_build(path: Path) -> None:
    spec = load_spec(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(4):
        trial = study.ask()
        config = spec.config_for(sample_params(spec, trial))
        with torch.device("meta"):
            build_model(config["model"], n_features=feature_width(config["data"]), n_classes=4)
        study.tell(trial, 0.0)


def test_scale_up_command_from_the_header_is_valid() -> None:
    spec = load_spec("space/transformer.yaml", trials=100, epochs=30,
                     overrides=["data.use_folds=null", "train.seeds=[0,1,2]"])
    assert spec.search.trials == 100 and spec.search.scheduler.max_t == 30
    assert spec.data["use_folds"] is None and list(spec.train["seeds"]) == [0, 1, 2]
