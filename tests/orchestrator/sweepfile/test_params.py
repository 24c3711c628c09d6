"""ParamSpec -> Optuna distributions, and the sampling helpers run against real Optuna studies."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from torch import nn

from orchestrator.search import grid_search_space, optuna_distributions, sample_params, to_optuna
from orchestrator.sweepfile import (
    ParamSpec,
    SpecError,
    apply_params,
    decode_params,
    load_spec,
    parse_param,
)
from trainables.models import MODELS

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Toy(nn.Module):
    INPUTS = ("logmel",)

    def __init__(self, *, n_classes: int, n_features: int, layers: int = 2,
                 pooling: str = "mean", heads: int = 2, hidden: list[int] = [8],  # noqa: B006
                 dropout: float = 0.1) -> None:
        super().__init__()


@pytest.fixture(autouse=True)
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS, "toy", Toy)


def spec_with(tmp_path: Path, params: str, sampler: str = "tpe"):
    path = tmp_path / "s.yaml"
    path.write_text(f"model: {{name: toy}}\ntrain: {{epochs: 3}}\nsearch:\n  sampler: {sampler}\n"
                    f"  trials: 4\n  params:\n{params}")
    return load_spec(path)


def test_each_kind_maps_to_its_optuna_distribution() -> None:
    D = optuna.distributions
    assert to_optuna(parse_param("train.lr", {"loguniform": [1e-5, 1e-3]})) == \
        D.FloatDistribution(1e-5, 1e-3, log=True)
    assert to_optuna(parse_param("model.dropout", {"uniform": [0.0, 0.5], "step": 0.1})) == \
        D.FloatDistribution(0.0, 0.5, step=0.1)
    assert to_optuna(parse_param("model.layers", {"int": [16, 128], "step": 16})) == \
        D.IntDistribution(16, 128, step=16)
    assert to_optuna(parse_param("model.layers", {"int": [8, 256], "log": True})) == \
        D.IntDistribution(8, 256, log=True)
    lists = parse_param("model.hidden", {"choice": [[128], [128, 128]]})
    assert to_optuna(lists) == D.CategoricalDistribution(["[128]", "[128, 128]"])
    assert lists.decode("[128, 128]") == [128, 128]
    mapping = parse_param("model.hidden", {"choice": [{"a": 1}, None, "x"]})
    assert mapping.optuna_choices() == ['{"a": 1}', None, "x"]
    assert mapping.decode('{"a": 1}') == {"a": 1}


@pytest.mark.parametrize(("raw", "fragment"), [
    ({"uniform": [0.1, 0.01]}, "low <= high must hold, but got low=0.1, high=0.01"),
    ({"choice": []}, "needs at least one value"),
    ({"choice": [1, 1]}, "choices must be distinct"),
    ({"choice": [1, True]}, "equal in Optuna"),
    ({"loguniform": [-1.0, 1.0]}, "low > 0 must hold for loguniform"),
    ({"int": [1, 8], "log": True, "step": 2}, "step cannot be combined with a log scale"),
    ({"int": [1.5, 8]}, "needs integers"),
    ({"uniform": [0, "x"]}, "needs two numbers"),
    ({"uniform": [0, 1], "log": True}, "use loguniform"),
    ({"int": [1, 10], "step": 4}, "high - low must be a multiple of step"),
    ({"uniform": [0.0, 1.0], "when": "model.name"}, "`when` is a mapping"),
    ([1, 2], "a search parameter is a mapping"),
])
def test_malformed_params_state_the_rule(raw: object, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_param("model.x", raw)
    assert fragment in str(info.value) and info.value.key == "model.x"


def test_paramspec_checks_itself() -> None:
    with pytest.raises(SpecError, match="low <= high"):
        ParamSpec("train.lr", "uniform", low=2.0, high=1.0)
    with pytest.raises(SpecError, match="unknown distribution"):
        ParamSpec("train.lr", "gaussian", low=0.0, high=1.0)


def test_conditional_params_exist_only_when_their_condition_holds(tmp_path: Path) -> None:
    # the condition names a param declared AFTER it: sampling follows dependency order
    spec = spec_with(tmp_path, "    model.heads: {choice: [2, 4], when: {model.pooling: [max]}}\n"
                     "    model.pooling: {choice: [max, mean]}\n"
                     "    model.dropout: {uniform: [0.0, 0.5], when: {model.layers: [2]}}\n")
    assert spec.param_keys() == ["model.pooling", "model.heads", "model.dropout"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        flat = sample_params(spec, trial)
        assert ("model.heads" in flat) == (flat["model.pooling"] == "max")
        assert "model.dropout" in flat  # base model.layers == 2 satisfies the condition
        assert trial.params == flat
        seen.add(flat["model.pooling"])
        study.tell(trial, 0.5)
    assert seen == {"max", "mean"}


def test_list_choices_reach_the_trainable_as_lists_and_resume_works(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, "    model.hidden: {choice: [[8], [8, 8], [8, 8, 8]]}\n"
                     "    train.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
                     "    model.layers: {int: [1, 4]}\n")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        flat = sample_params(spec, trial)
        real = decode_params(spec, flat)
        assert isinstance(real["model.hidden"], list) and isinstance(flat["model.hidden"], str)
        config = apply_params(spec.base_config(), real)
        assert config["model"]["hidden"] == real["model.hidden"]
        assert config["train"]["lr"] == flat["train.lr"] and 1e-4 <= flat["train.lr"] <= 1e-2
        assert config == spec.config_for(flat)
        study.tell(trial, float(len(real["model.hidden"])))
    # resume: re-add the finished trials to a fresh study from their stored Optuna-native values
    fresh = optuna.create_study(direction="maximize")
    for old in study.trials:
        fresh.add_trial(optuna.trial.create_trial(
            params=old.params, distributions=optuna_distributions(spec, old.params),
            value=old.value))
    assert [t.params for t in fresh.trials] == [t.params for t in study.trials]
    assert fresh.best_value == study.best_value


def test_apply_params_returns_a_new_nested_config() -> None:
    base = {"model": {"name": "toy", "layers": 2}, "train": {"lr": 1e-3}}
    out = apply_params(base, {"model.layers": 4, "train.lr": 0.1})
    assert out == {"model": {"name": "toy", "layers": 4}, "train": {"lr": 0.1}}
    assert base["model"]["layers"] == 2


def test_grid_sampler_enumerates_the_finite_space(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, "    model.layers: {int: [1, 3]}\n"
                     "    model.pooling: {choice: [max, mean]}\n"
                     "    model.dropout: {uniform: [0.0, 0.2], step: 0.1}\n", sampler="grid")
    space = grid_search_space(spec)
    assert space == {"model.layers": [1, 2, 3], "model.pooling": ["max", "mean"],
                     "model.dropout": [0.0, 0.1, 0.2]}
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(space, seed=0))
    combos: set[tuple] = set()

    def objective(trial: optuna.Trial) -> float:
        combos.add(tuple(sorted(sample_params(spec, trial).items())))
        return 0.0

    study.optimize(objective, n_trials=30)  # GridSampler stops the study once the grid is done
    assert len(combos) == len(study.trials) == 18


def test_grid_refuses_a_continuous_param(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        spec_with(tmp_path, "    train.lr: {loguniform: [1.0e-4, 1.0e-2]}\n", sampler="grid")
    assert "grid needs a finite search space" in str(info.value)
    assert info.value.key == "search.params.train.lr" and info.value.line == 7
