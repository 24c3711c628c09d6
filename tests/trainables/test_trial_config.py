"""The trial's typed, frozen config (trainables/trial_config.py): its sections generated from the
key declarations, defaults filled and checked once, frozen, and built once per trial path."""

from __future__ import annotations

import ast
import math
import sys
from dataclasses import FrozenInstanceError, fields
from pathlib import Path
from typing import Any

import pytest
from ray import cloudpickle, tune

from tests.trainables.test_train import CPU, TinyNet, tiny_data
from tests.trainables.test_train import tiny_model as tiny_model  # autouse: registers "tiny"
from trainables import config as declarations
from trainables import names
from trainables.config import DATA, TRAIN, defaults
from trainables.errors import ConfigError
from trainables.frozen import freeze
from trainables.train import LockstepTrainer
from trainables.trainable import _plan, _prepare, train_trial
from trainables.trial_config import DataSection, Section, TrainSection, TrialConfig

ROOT = Path(__file__).resolve().parents[2]
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the Tune test's worker wrapper


def a_trial_dict(**train: Any) -> dict[str, Any]:
    """What Ray Tune hands a trial: plain dicts, here only partly filled in."""
    return {"data": {"use_folds": 2}, "model": {"name": "tiny", "hidden": 8},
            "train": {"epochs": 1, "batch_size": 16, "seeds": [0], "amp": "off", **train},
            "runtime": {"metric": "val_uar", "mode": "max"}}


def test_sections_are_generated_from_the_declarations_with_their_defaults() -> None:
    assert [f.name for f in fields(TrainSection)] == list(TRAIN)
    assert [f.name for f in fields(DataSection)] == list(DATA)
    built = TrialConfig.from_dict({})
    assert built.train.as_dict() == defaults(TRAIN)
    assert built.data.as_dict() == defaults(DATA)
    for section, keys in ((built.train, TRAIN), (built.data, DATA)):
        for name, key in keys.items():
            assert getattr(section, name) == freeze(key.default), name
            assert section[name] == getattr(section, name)  # it reads as a Mapping too
    # the field types come from the declarations: null only where the Key accepts it
    types = {f.name: f.type for f in fields(TrainSection)}
    assert types["micro_batch"] == int | None and types["batch_size"] is int
    assert types["lr"] is float and types["seeds"] == tuple[Any, ...]


def test_the_config_is_frozen() -> None:
    given = a_trial_dict(seeds=[0, 1])
    config = TrialConfig.from_dict(given)
    with pytest.raises(FrozenInstanceError):
        config.train.batch_size = 8  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        config.train.not_a_key = 1  # type: ignore[attr-defined]
    with pytest.raises(FrozenInstanceError):
        config.train = config.train  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.model["hidden"] = 16  # type: ignore[index]
    assert config.train.seeds == (0, 1)  # a tuple: no append either
    given["train"]["seeds"].append(2)  # the dict it was built from is not shared
    assert config.train.seeds == (0, 1) and config.as_dict()["train"]["seeds"] == [0, 1]
    # the memory plan gives a new config; the old one is unchanged
    planned = config.updated({"train": {"micro_batch": 4}, "runtime": {"memory_budget": 1}})
    assert (planned.train.micro_batch, config.train.micro_batch) == (4, None)
    assert planned.runtime["memory_budget"] == 1 and "memory_budget" not in config.runtime


@pytest.mark.parametrize(("given", "key"), [
    ({"train": {"batch": 8}}, "train.batch"),
    ({"data": {"fold": "by_session"}}, "data.fold"),
    ({"trian": {"epochs": 1}}, "trian"),
])
def test_an_unknown_key_raises_naming_it(given: dict, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        TrialConfig.from_dict(given)
    assert raised.value.key == key and repr(key.rpartition(".")[2]) in str(raised.value)


def test_the_searchers_captured_values_beside_the_sections_are_not_sections() -> None:
    """A Tune trial's config holds the sampled values flat beside the sections (`train.lr`, and
    `optuna:train.lr` for the store: orchestrator/search.py TrialSpace); the sections decide."""
    config = TrialConfig.from_dict({"train": {"lr": 0.002}, "train.lr": 0.002,
                                    "optuna:train.lr": 0.002})
    assert config.train.lr == 0.002 and set(config) == {"data", "model", "train", "runtime"}


def test_an_undeclared_attribute_raises_naming_it() -> None:
    with pytest.raises(AttributeError, match="train has no key 'batch'; valid: epochs, "):
        _ = TrialConfig.from_dict({}).train.batch


@pytest.mark.parametrize(("section", "name", "value", "expected"), [
    ("train", "amp", "bf16", "expected one of auto, on, off, but got 'bf16'"),
    ("train", "lr", math.nan, "lr must be a finite number"),
    ("train", "batch_size", 2**40, f"batch_size must be at most {declarations.MAX_INT}"),
    ("train", "epochs", 2.5, "expected an integer, but got 2.5"),
    ("train", "micro_batch", "8", "expected an integer, but got '8'"),
    ("train", "reweight", "yes", "expected bool, but got 'yes'"),
    ("train", "seeds", 0, "expected list, but got 0"),
    ("train", "device", None, "device must not be null"),
    ("data", "folds", "by_fold", "expected one of by_session, by_speaker, official"),
    ("data", "cache_dir", 3, "expected str, but got 3"),
])
def test_a_bad_value_raises_naming_the_key(section: str, name: str, value: Any,
                                           expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        TrialConfig.from_dict({section: {name: value}})
    assert raised.value.key == f"{section}.{name}" and expected in raised.value.message


def test_values_of_every_declared_type_are_accepted() -> None:
    config = TrialConfig.from_dict({
        "data": {"classes": ["neutral", "happy"], "ssl": {"model": "hubert_base"}},
        "train": {"seeds": (3, 4), "micro_batch": None, "warmup_epochs": 1, "lr": 1,
                  "collapse_margin": -1.0}})  # bounds: the sweep file's (tests switch off)
    assert config.data.classes == ("neutral", "happy") and config.train.seeds == (3, 4)
    assert config.data.ssl["model"] == "hubert_base" and config.train.lr == 1
    assert config.train.collapse_margin == -1.0


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count TrialConfig.from_dict and Section.of (the fills with defaults), calling the real
    ones."""
    counts = {"from_dict": 0, "sections": 0}
    from_dict, section_of = TrialConfig.from_dict.__func__, Section.of.__func__

    def counted_from_dict(cls: type, config: Any) -> TrialConfig:
        counts["from_dict"] += 1
        return from_dict(cls, config)

    def counted_section_of(cls: type, given: Any) -> Section:
        counts["sections"] += 1
        return section_of(cls, given)

    monkeypatch.setattr(TrialConfig, "from_dict", classmethod(counted_from_dict))
    monkeypatch.setattr(Section, "of", classmethod(counted_section_of))
    return counts


def test_a_trial_path_builds_the_config_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """train_trial's steps after its entry (trainable._epochs without Ray's checkpoint and
    node lookups): prepare, plan in the trial (a budget and no micro-batch), train an epoch."""
    counts = _count_builds(monkeypatch)
    given = a_trial_dict()
    given["runtime"]["memory_budget"] = 2**30  # no driver plan: the trial plans (trainable._plan)
    config = TrialConfig.from_dict(given)  # train_trial's entry
    data = _prepare(tiny_data(), config)
    planned = _plan(config, data)
    trainer = LockstepTrainer(planned, data, CPU)
    trainer.run_epoch()
    assert counts == {"from_dict": 1, "sections": 2}  # data and train, filled once
    assert planned.train.micro_batch is not None and planned.runtime["estimated_peak_bytes"] > 0
    assert trainer.config is planned and all(m.train_cfg is planned.train
                                             for m in trainer.members)


def test_train_section_refilling_is_gone() -> None:
    """No product code re-fills the train defaults into a config (`train_section`, or
    `with_defaults(..., TRAIN_DEFAULTS)`): TrialConfig.from_dict is where they are filled."""
    assert not hasattr(declarations, "train_section")
    refills = []
    for path in [p for d in ("trainables", "orchestrator", "bench")
                 for p in (ROOT / d).rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            named = isinstance(node, ast.Name | ast.alias) and "train_section" in (
                getattr(node, "id", None), getattr(node, "name", None))
            merged = (isinstance(node, ast.Call)
                      and getattr(node.func, "id", "") == "with_defaults"
                      and any(getattr(a, "id", "") == "TRAIN_DEFAULTS" for a in node.args))
            if named or merged:
                refills.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not refills, refills


def _counting_trial(config: dict, data: Any = None) -> None:
    """train_trial in a Tune worker (the test model registered there too), counting its
    TrialConfig and Section builds into the file runtime.count_file."""
    from trainables.models import MODELS as registry  # the worker's own registry

    registry["tiny"] = TinyNet
    with pytest.MonkeyPatch.context() as patch:
        counts = _count_builds(patch)
        train_trial(config, data=data)
    Path(config["runtime"]["count_file"]).write_text(f"{counts['from_dict']} {counts['sections']}")


@pytest.mark.slow  # a real Tuner: Ray's start and one trial actor
def test_train_trial_under_tune_builds_the_config_once(ray_local: None, tmp_path: Path) -> None:
    given = a_trial_dict(epochs=2)
    given["runtime"].update(memory_budget=2**30, count_file=str(tmp_path / "count"))
    tuner = tune.Tuner(
        tune.with_parameters(_counting_trial, data=tiny_data()), param_space=given,
        run_config=tune.RunConfig(name="t", storage_path=str(tmp_path / "ray"), verbose=0))
    result = tuner.fit()[0]
    assert result.error is None and result.metrics[names.EPOCH] == 2
    assert (tmp_path / "count").read_text() == "1 2"  # train_trial's entry: data and train once
