"""The Optuna side of a sweep: the sampler, the study rebuilt from the store, the trial space.

Resume design (why no Tuner.restore): the Parquet store is the single source of truth. Each run
reads the trials already recorded, re-adds them to a fresh in-memory Optuna study (so the sampler
learns from them) and the runner launches only the missing number of trials.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import optuna

from orchestrator.schema import OPTUNA_PARAMS_PREFIX
from orchestrator.spec import (
    SpecError,
    SweepSpec,
    grid_search_space,
    optuna_distributions,
    sample_params,
)
from orchestrator.store import ResultStore


def make_sampler(spec: SweepSpec, recorded: int = 0) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named in `search.sampler`, seeded with `search.seed`.

    A resumed sweep (`recorded` trials already in the store) seeds with `seed + recorded`:
    re-seeding with the bare seed would replay the random start-up draws of the first run and
    propose the recorded configurations again.
    """
    seed = spec.search.seed + recorded
    kind = spec.search.sampler
    if kind == "tpe":
        with warnings.catch_warnings():  # `group` is "experimental": noise on the user's stderr
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "cmaes":
        # CMA-ES handles only numeric params; Optuna falls back to random for the rest.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if kind == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if kind == "grid":
        return optuna.samplers.GridSampler(grid_search_space(spec), seed=seed)
    raise SpecError(str(spec.path), "search.sampler", f"unknown sampler {kind!r}")


def study_with_history(
    spec: SweepSpec, store: ResultStore
) -> tuple[optuna.storages.InMemoryStorage, optuna.samplers.BaseSampler, int]:
    """A fresh in-memory study holding every trial the store already recorded, its sampler,
    and the number of recorded trials."""
    trials = store.read_trials()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the console shows what matters
    sampler = make_sampler(spec, recorded=len(trials))
    storage = optuna.storages.InMemoryStorage()
    direction = "maximize" if spec.search.mode == "max" else "minimize"
    study = optuna.create_study(
        storage=storage, study_name=spec.name, sampler=sampler, direction=direction
    )
    for row in trials.to_dict("records"):
        native = json.loads(row.get("optuna_params_json") or "{}")
        if not native:
            continue
        completed = row["status"] in ("completed", "collapsed") and row["objective"] == row[
            "objective"
        ]  # NaN check
        state = optuna.trial.TrialState.COMPLETE if completed else optuna.trial.TrialState.FAIL
        if row["status"] == "pruned":
            state = optuna.trial.TrialState.PRUNED
        study.add_trial(
            optuna.trial.create_trial(
                params=native,
                distributions=optuna_distributions(spec, native),
                value=float(row["objective"]) if completed else None,
                state=state,
            )
        )
    return storage, sampler, len(trials)


class TrialSpace:
    """The OptunaSearch define-by-run space: sample, then hand Tune the whole trial config.

    OptunaSearch merges what this returns over the values it captured, and Tune un-flattens keys
    with "/" into the nested config: returning `{"train/lr": ..., ...}` for every value of
    data/model/train makes the trial's config exactly `spec.config_for(native)` (the param_space
    holds only `runtime`), also when `model.name` itself is searched. The captured Optuna-native
    values stay as flat top-level keys; a prefixed copy lets the store re-add the trial to a study
    on resume. A class, not a closure, because Tune pickles the searcher in its experiment state.
    """

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        native = sample_params(self.spec, trial)
        out = _flatten(self.spec.config_for(native))
        out.update({OPTUNA_PARAMS_PREFIX + key: value for key, value in native.items()})
        return out


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
