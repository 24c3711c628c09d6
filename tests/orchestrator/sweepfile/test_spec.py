"""load_spec: defaults, overrides, immutability, round trip, path lookup, line-accurate errors.

A small toy model family is registered for these tests so that they exercise the spec logic
independently of the real families (tests/test_search_spaces.py covers those)."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from orchestrator.sweepfile import SEARCH_SPACES, SpecError, load_spec, resolve_spec_path
from trainables.config import DATA_DEFAULTS, TRAIN_DEFAULTS
from trainables.errors import ConfigError
from trainables.models import MODELS


class Toy(nn.Module):
    INPUTS = ("logmel", "mfcc")

    def __init__(self, *, n_classes: int, n_features: int, layers: int = 2, width: int = 8,
                 heads: int = 2, pooling: str = "mean", hidden: list[int] = [16],  # noqa: B006
                 dropout: float = 0.1) -> None:
        super().__init__()
        if width % heads:
            raise ConfigError("model.width", f"width must be divisible by heads, but got "
                              f"width={width}, heads={heads}")
        self.layer = nn.Linear(n_features, n_classes)


@pytest.fixture(autouse=True)
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS, "toy", Toy)


SWEEP = """\
name: toy_sweep
data: {corpus: synthetic, features: logmel, n_mels: 16}
model: {name: toy, layers: 3}
train:
  epochs: 4
  lr: 1e-3
search:
  trials: 5
  params:
    train.lr: {loguniform: [1.0e-5, 1.0e-3]}
    model.layers: {int: [1, 4]}
    model.hidden: {choice: [[16], [16, 16]]}
"""


def write(tmp_path: Path, text: str = SWEEP, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_filled_from_config_and_the_constructor(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path))
    assert spec.name == "toy_sweep"
    assert set(spec.data) == set(DATA_DEFAULTS) and spec.data["n_mels"] == 16
    assert spec.data["folds"] == DATA_DEFAULTS["folds"]
    assert set(spec.train) == set(TRAIN_DEFAULTS)
    assert spec.train["lr"] == 1e-3 and isinstance(spec.train["lr"], float)  # YAML 1.2 float
    assert spec.model["layers"] == 3 and spec.model["width"] == 8 and spec.model["name"] == "toy"
    assert "n_classes" not in spec.model and "n_features" not in spec.model
    assert spec.search.metric == "val_uar" and spec.search.mode == "max"
    assert spec.search.sampler == "tpe" and spec.search.seed == 0
    assert spec.search.max_concurrent is None
    assert spec.search.scheduler.type == "asha" and spec.search.scheduler.max_t == 4
    assert spec.resources.gpus_per_trial == "auto" and spec.resources.cpus_per_trial == 1
    assert dict(spec.resources)["gpu_memory_fraction"] == 0.9
    assert spec.results == "results" and spec.distill is None
    assert spec.param_keys() == ["train.lr", "model.layers", "model.hidden"]


def test_spec_is_frozen_and_base_config_is_a_fresh_copy(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path))
    with pytest.raises(TypeError):
        spec.data["n_mels"] = 3  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    base = spec.base_config()
    assert base["model"]["hidden"] == [16] and isinstance(base["train"]["seeds"], list)
    base["model"]["hidden"].append(99)
    base["train"]["lr"] = 5.0
    assert spec.base_config()["model"]["hidden"] == [16] and spec.train["lr"] == 1e-3
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_as_dict_round_trips_through_yaml(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path), overrides=["resources.memory_budget=2GiB"])
    assert spec.resources.memory_budget == 2 * 2**30
    text = yaml.safe_dump(spec.as_dict(), sort_keys=False)
    again = load_spec(write(tmp_path, text, "spec.yaml"))
    assert again.as_dict() == spec.as_dict()
    assert again.search.params == spec.search.params


def test_overrides_and_shortcuts(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path), overrides=["train.batch_size=8", "model.width=12",
                                                 "train.seeds=[0, 1]", "data.use_folds=null",
                                                 "search.scheduler.grace_period=2"],
                     trials=3, epochs=7)
    assert spec.train["batch_size"] == 8 and spec.model["width"] == 12
    assert list(spec.train["seeds"]) == [0, 1] and spec.data["use_folds"] is None
    assert spec.search.trials == 3 and spec.train["epochs"] == 7
    assert spec.search.scheduler.max_t == 7 and spec.search.scheduler.grace_period == 2


def test_set_pins_a_searched_key_and_can_add_a_param(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path), overrides=[
        "model.layers=2", "search.params.model.dropout={uniform: [0.0, 0.4]}"])
    assert "model.layers" not in spec.param_keys() and spec.model["layers"] == 2
    assert spec.param_keys()[-1] == "model.dropout"


@pytest.mark.parametrize(("override", "fragment"), [
    ("train.lrr=1", "unknown key 'lrr' in the train section (did you mean 'lr'?)"),
    ("model.layerz=3", "unknown key 'layerz' in model 'toy'"),
    ("foo.bar=1", "unknown key 'foo' in the top level"),
    ("train.lr.x=1", "addresses nothing: train.lr is 0.001 (float), not a mapping"),
    ("train.epochs=0", "epochs >= 1 must hold, but got 0"),
    ("noequals", "--set takes key=value"),
    ("train.lr=[1, 2", "is not a YAML value"),
])
def test_a_bad_override_names_the_set(tmp_path: Path, override: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path), overrides=[override])
    assert f"--set {override}" in str(info.value) and fragment in str(info.value)


def test_trials_shortcut_errors_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"from --trials 0\): trials >= 1 must hold"):
        load_spec(write(tmp_path), trials=0)


def test_path_lookup_in_search_spaces() -> None:
    shipped = sorted(SEARCH_SPACES.glob("*.yaml"))
    assert shipped, "search_spaces/ holds the sweep files"
    name = shipped[0].name
    assert resolve_spec_path(f"space/{name}") == SEARCH_SPACES / name
    assert resolve_spec_path(shipped[0].stem) == SEARCH_SPACES / name
    with pytest.raises(SpecError) as info:
        resolve_spec_path("space/nope.yaml")
    assert "does not exist" in str(info.value) and name in str(info.value)


def test_errors_carry_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, SWEEP.replace("model.layers: {int: [1, 4]}",
                                         "model.layers: {int: [5, 4]}"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    assert (err.file, err.line, err.key) == (str(path), 11, "search.params.model.layers")
    assert str(err) == (f"{path}:11: search.params.model.layers: low <= high must hold, but got "
                        "low=5, high=4")


def test_the_model_constructor_rules_are_checked_on_meta(tmp_path: Path) -> None:
    path = write(tmp_path, SWEEP.replace("{name: toy, layers: 3}", "{name: toy, width: 9}"))
    with pytest.raises(SpecError, match=r":3: model.width: width must be divisible by heads"):
        load_spec(path)
    assert torch.empty(1).device.type == "cpu"  # the meta device did not leak


@pytest.mark.parametrize(("text", "expected"), [
    ("512MB", 512 * 10**6), ("2GiB", 2 * 2**30), ("1.5 GB", 1_500_000_000), ("4096B", 4096),
])
def test_memory_budget_sizes(tmp_path: Path, text: object, expected: int) -> None:
    spec = load_spec(write(tmp_path), overrides=[f"resources.memory_budget={text}"])
    assert spec.resources.memory_budget == expected


def test_name_defaults_to_the_file_stem_and_sections_may_be_omitted(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {name: toy}\n", "tiny-sweep.yaml")
    spec = load_spec(path)
    assert spec.name == "tiny-sweep" and spec.search.params == ()
    assert spec.search.trials >= 1 and spec.train == dict(TRAIN_DEFAULTS) | {
        "seeds": tuple(TRAIN_DEFAULTS["seeds"])}


def test_a_searched_model_family_gets_its_own_keys(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    class Other(Toy):
        INPUTS = ("logmel",)

        def __init__(self, *, n_classes: int, n_features: int, depth: int = 1) -> None:
            nn.Module.__init__(self)

    monkeypatch.setitem(MODELS, "other", Other)
    text = SWEEP.replace("    model.layers: {int: [1, 4]}\n", "").replace(
        "model.hidden: {choice: [[16], [16, 16]]}",
        "model.name: {choice: [toy, other]}\n"
        "    model.hidden: {choice: [[16], [16, 16]], when: {model.name: [toy]}}\n"
        "    model.depth: {int: [1, 3], when: {model.name: [other]}}")
    spec = load_spec(write(tmp_path, text))
    from orchestrator.sweepfile import apply_params
    cfg = apply_params(spec.base_config(), {"model.name": "other", "model.depth": 2})
    assert cfg["model"] == {"name": "other", "depth": 2}
    bad = text.replace("when: {model.name: [other]}", "when: {model.name: [toy]}")
    with pytest.raises(SpecError, match="model 'toy' has no parameter 'depth'.*add `when"):
        load_spec(write(tmp_path, bad))


def test_classes_is_a_count_or_a_list_of_class_names(tmp_path: Path) -> None:
    path = write(tmp_path)
    named = load_spec(path, overrides=["data.classes=[neutral, happy, sad]"])
    assert named.base_config()["data"]["classes"] == ["neutral", "happy", "sad"]
    assert load_spec(path, overrides=["data.classes=6"]).data["classes"] == 6
    with pytest.raises(SpecError, match=r"data\.classes.*classes >= 2 must hold, but got 1"):
        load_spec(path, overrides=["data.classes=1"])
    with pytest.raises(SpecError, match=r"data\.classes.*expected int or list"):
        load_spec(path, overrides=["data.classes=four"])


@pytest.mark.parametrize("text", ["80", "4096"])
def test_a_memory_budget_without_unit_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(SpecError, match=rf"a size needs a unit: {text} alone would be {text} "
                       rf"bytes; write e.g. {text}GiB"):
        load_spec(write(tmp_path), overrides=[f"resources.memory_budget={text}"])
