"""The Optuna side of a sweep: sampling the search space, the sampler, and the study rebuilt from
the store.

- `to_optuna` / `optuna_distributions`: a ParamSpec (orchestrator/sweepfile) -> its Optuna
distribution.
- `sample_params`: define-by-run sampling, conditional params (`when:`) in dependency order.
- `make_sampler`: search.sampler -> the Optuna sampler, seeded.
- `study_from_trials`: THE function that rebuilds a study from stored trial rows; resume
  (`study_with_history`) and the report's parameter importance both use it.
- `TrialSpace`: what OptunaSearch calls to get a trial's whole config (and its memory plan).
- `SweepSearch`: Ray's OptunaSearch telling each ended trial the state the store records
  (`live_trial_state`), so the running study and the one rebuilt on resume hold the same history
  (Ray's own tells an ASHA-stopped trial COMPLETE; the store, and so a rebuild, says PRUNED).

Resume design (why no Tuner.restore): the Parquet store is the single source of truth. Each run
reads the trials already recorded, re-adds them to a fresh in-memory Optuna study (so the sampler
learns from them) and the runner launches only the missing number of trials.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import optuna
import optuna.distributions as od
import pandas as pd

from orchestrator.dotted import get_dotted
from orchestrator.store import ResultStore, schema
from orchestrator.sweepfile import ParamSpec, SpecError, SweepSpec
from orchestrator.sweepfile.distributions import freeze_value

Params = tuple[dict[str, Any], dict[str, od.BaseDistribution]]


# --- distributions and sampling ----------------------------------------------------------------
def to_optuna(p: ParamSpec) -> od.BaseDistribution:
    """The Optuna distribution of one searched parameter."""
    if p.kind == "choice":
        return od.CategoricalDistribution(p.optuna_choices())
    if p.kind == "int":
        return od.IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
    return od.FloatDistribution(float(p.low), float(p.high), log=p.is_log,
                                step=None if p.step is None else float(p.step))


def optuna_distributions(spec: SweepSpec, flat: Mapping[str, Any]) -> dict[str, Any]:
    """The Optuna distribution of each param present in `flat` (for optuna.trial.create_trial)."""
    by_key = {p.key: p for p in spec.search.params}
    return {k: to_optuna(by_key[k]) for k in flat if k in by_key}


def grid_search_space(spec: SweepSpec) -> dict[str, list[Any]]:
    """{key: every Optuna-native value} for optuna.samplers.GridSampler; SpecError when a param
    is continuous. Conditional params are in the grid too (absent ones just repeat points)."""
    out = {}
    for p in spec.search.params:
        try:
            out[p.key] = p.grid_values()
        except SpecError as exc:
            raise SpecError(spec.path, f"search.params.{p.key}", exc.message) from None
    return out


def condition_met(p: ParamSpec, sampled: Mapping[str, Any], keys: set[str],
                  base: Mapping[str, Any]) -> bool:
    """Whether `p` exists given the values sampled so far (`keys`: every searched key) and the
    base config (for condition keys that are not searched)."""
    for cond_key, allowed in p.condition:
        if cond_key in keys:
            if cond_key not in sampled:
                return False
            value = sampled[cond_key]
        else:
            value = get_dotted(base, cond_key)
        if freeze_value(value) not in allowed:
            return False
    return True


def suggest(trial: optuna.Trial, p: ParamSpec) -> Any:
    if p.kind == "choice":
        return trial.suggest_categorical(p.key, p.optuna_choices())
    if p.kind == "int":
        return trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1),
                                 log=p.log)
    step = None if p.step is None else float(p.step)
    return trial.suggest_float(p.key, float(p.low), float(p.high), step=step, log=p.is_log)


def sample_params(spec: SweepSpec, trial: optuna.Trial) -> dict[str, Any]:
    """Define-by-run sampling: suggest each param (conditions respected, in dependency order).
    Returns {dotted_key: Optuna-native value} (what Optuna stores; see spec.decode_params)."""
    base = spec.base_config()
    keys = set(spec.param_keys())
    native: dict[str, Any] = {}
    real: dict[str, Any] = {}
    for p in spec.search.params:
        if condition_met(p, real, keys, base):
            native[p.key] = suggest(trial, p)
            real[p.key] = p.decode(native[p.key])
    return native


def sample_configs(spec: SweepSpec, samples: int) -> list[dict[str, Any]]:
    """`samples` trial configs drawn at random (seeded) from the sweep's search space."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.search.seed))
    return [spec.config_for(sample_params(spec, study.ask())) for _ in range(samples)]


# --- sampler and study ---------------------------------------------------------------------------
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


def trial_state(row: Mapping[str, Any]) -> optuna.trial.TrialState:
    """THE Optuna state of a trial (stored row, or `live_trial_state` while running): COMPLETE
    (scored status with an objective), PRUNED, or FAIL (raised, or ended without an objective)."""
    if row[schema.STATUS] == schema.PRUNED:
        return optuna.trial.TrialState.PRUNED
    objective = row.get(schema.OBJECTIVE)
    if row[schema.STATUS] in schema.SCORED_STATUSES and objective is not None and pd.notna(
            objective):
        return optuna.trial.TrialState.COMPLETE
    return optuna.trial.TrialState.FAIL


def live_trial_state(result: Mapping[str, Any] | None, error: bool) -> optuna.trial.TrialState:
    """The state of a trial that just ended, from its last report, decided as the store decides
    it (schema.trial_status -> trial_state), so a rebuild from the store matches."""
    last = dict(result or {})
    status = schema.trial_status(last, "trial raised" if error else None)
    return trial_state({schema.STATUS: status, schema.OBJECTIVE: last.get(schema.OBJECTIVE)})


PARTIAL = "partial"  # Optuna user attr of a raced_out trial (as with Optuna's WilcoxonPruner)


def partial_attrs(test_sets: Any) -> dict[str, Any]:
    """The user attrs that mark a raced_out trial's value as partial: computed on `test_sets`
    test sets only (racing.py)."""
    done = None if test_sets is None or pd.isna(test_sets) else int(test_sets)
    return {PARTIAL: True, "test_sets": done}


def study_from_trials(
    trials: pd.DataFrame,
    *,
    direction: str,
    params_of: Callable[[dict[str, Any]], Params],
    sampler: optuna.samplers.BaseSampler | None = None,
    storage: optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
) -> optuna.Study:
    """A study holding one Optuna trial per stored trial row (THE rebuild; see the module
    docstring), in start order (started_at), each carrying what the live study held: state from
    `trial_state`, value = the row's objective when COMPLETE or PRUNED, every epoch's reported
    objective as intermediate values (column objective_by_epoch; rows written before it: the
    objective at the last epoch), start and end times, and the store's trial_id as the user
    attribute `trial_id` (TRIAL_ID_ATTR). `direction`: max | min (the sweep's mode).
    `params_of(row)` -> (params, distributions); a row without params is skipped."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the console shows what matters
    study = optuna.create_study(
        storage=storage, study_name=study_name, sampler=sampler,
        direction="maximize" if direction == "max" else "minimize",
    )
    if schema.STARTED_AT in trials and len(trials):
        trials = trials.sort_values([schema.STARTED_AT, schema.TRIAL_ID], kind="stable")
    for row in trials.to_dict("records"):
        params, distributions = params_of(row)
        if not params:
            continue
        state = trial_state(row)
        objective = row.get(schema.OBJECTIVE)
        scored = objective is not None and pd.notna(objective) and (
            state != optuna.trial.TrialState.FAIL)
        trial = optuna.trial.create_trial(
            params=params, distributions=distributions, state=state,
            value=float(objective) if scored else None,
            intermediate_values=_intermediate_values(row, scored),
            user_attrs={TRIAL_ID_ATTR: str(row[schema.TRIAL_ID]), **(
                partial_attrs(row.get(schema.TEST_SETS))
                if row[schema.STATUS] == schema.RACED_OUT else {})},
        )
        start, end = _moment(row.get(schema.STARTED_AT)), _moment(row.get(schema.ENDED_AT))
        if start is not None:
            trial.datetime_start = start
            trial.datetime_complete = end if end is not None and end >= start else start
        study.add_trial(trial)
    return study


TRIAL_ID_ATTR = "trial_id"  # the user attribute naming a study trial's row in the store


def _moment(value: Any) -> Any:
    """A stored timestamp as an aware datetime, or None."""
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).to_pydatetime()


def _intermediate_values(row: Mapping[str, Any], scored: bool) -> dict[int, float] | None:
    text = row.get(schema.OBJECTIVE_BY_EPOCH)
    if isinstance(text, str) and text:
        return {int(epoch): float(value) for epoch, value in json.loads(text).items()}
    epoch, objective = row.get(schema.EPOCHS_RUN), row.get(schema.OBJECTIVE)
    last = int(epoch) if epoch is not None and pd.notna(epoch) and epoch > 0 else None
    return {last: float(objective)} if scored and last else None


def study_with_history(
    spec: SweepSpec, store: ResultStore
) -> tuple[optuna.storages.InMemoryStorage, optuna.samplers.BaseSampler, int]:
    """Resume: a fresh in-memory study holding every trial the store already recorded (their
    Optuna-native values, column optuna_params_json), its sampler, and the number recorded
    (the search trials that count: store.recorded_trials; confirmation rows are no search
    trials)."""
    trials = schema.search_rows(store.recorded_trials())
    sampler = make_sampler(spec, recorded=len(trials))
    storage = optuna.storages.InMemoryStorage()

    def params_of(row: dict[str, Any]) -> Params:
        text = row.get(schema.OPTUNA_PARAMS_JSON)  # a null reads as NaN (pandas string dtype)
        native = json.loads(text) if isinstance(text, str) and text else {}
        return native, optuna_distributions(spec, native)

    study_from_trials(trials, direction=spec.search.mode, params_of=params_of, sampler=sampler,
                      storage=storage, study_name=spec.name)
    return storage, sampler, len(trials)


# --- the trial space OptunaSearch calls ----------------------------------------------------------
class TrialSpace:
    """The OptunaSearch define-by-run space: sample, then hand Tune the whole trial config.

    OptunaSearch merges what this returns over the values it captured, and Tune un-flattens keys
    with "/" into the nested config (deep-merged over the param_space, which holds `runtime`):
    returning `{"train/lr": ..., ...}` for every value of data/model/train makes the trial's
    config exactly `spec.config_for(native)`, also when `model.name` itself is searched. The
    captured Optuna-native values stay as flat top-level keys; a prefixed copy lets the store
    re-add the trial to a study on resume. `plan(config)` (planner.TrialPlanner) adds the
    micro-batch the driver chose, so the trial does not plan again. A class, not a closure,
    because Tune pickles the searcher in its experiment state.
    """

    def __init__(self, spec: SweepSpec,
                 plan: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.spec = spec
        self.plan = plan

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        native = sample_params(self.spec, trial)
        config = self.spec.config_for(native)
        if self.plan is not None:
            for section, values in self.plan(config).items():
                config.setdefault(section, {}).update(values)
        out = _flatten(config)
        out.update({schema.OPTUNA_PARAMS_PREFIX + key: value for key, value in native.items()})
        return out


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --- the searcher Ray Tune drives ----------------------------------------------------------------
def _sweep_search_class() -> type:
    """Define SweepSearch on first use: it subclasses Ray's OptunaSearch, and importing Ray here
    would slow every reader of this module (the report, `plan`) by seconds."""
    from ray.tune.search.optuna import OptunaSearch

    from trainables import names
    from trainables.names import ERROR_REASON

    class SweepSearch(OptunaSearch):
        """OptunaSearch that tells Optuna `live_trial_state` of an ended trial: PRUNED for a
        trial the scheduler stopped (Ray's tells it COMPLETE, since its result has the metric),
        FAIL for one that raised or has no objective, COMPLETE otherwise (with the objective).
        `fence` (store.lock.Fence): once the driver's lease is lost, Optuna (and so the sweep's
        journal, which the new holder rebuilt) is told and asked nothing more."""

        def __init__(self, *args: Any, fence: Any = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.fence = fence
            self._steps: dict[str, set[int]] = {}  # the steps each trial reported to Optuna

        def _fenced_out(self) -> bool:
            return self.fence is not None and self.fence.lost_reason() is not None

        def suggest(self, trial_id: str) -> dict | None:
            if self._fenced_out():
                return None  # launch nothing: the runner's stopper ends the run
            config = super().suggest(trial_id)
            if trial_id in self._ot_trials:  # the store's key, for the journal's readers
                self._ot_trials[trial_id].set_user_attr(TRIAL_ID_ATTR, trial_id)
            return config

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            # a failure report's NaN is no intermediate value
            if not result.get(ERROR_REASON) and not self._fenced_out():
                super().on_trial_result(trial_id, result)
                self._steps.setdefault(trial_id, set()).add(int(result["training_iteration"]))

        def _report_last(self, trial_id: str, result: dict | None) -> None:
            """Tune hands a result the scheduler stops on (ASHA's pruning rung, or max_t) to
            on_trial_complete only: report it as that epoch's intermediate value first, so
            Optuna holds every epoch the store holds, and a pruned trial's value is its last."""
            if not result or result.get(ERROR_REASON) or trial_id not in self._ot_trials:
                return
            value, step = result.get(self.metric), result.get("training_iteration")
            if value is None or step is None or value != value:  # NaN: not reported
                return
            if int(step) not in self._steps.get(trial_id, set()):
                self._ot_trials[trial_id].report(float(value), int(step))

        def on_trial_complete(self, trial_id: str, result: dict | None = None,
                              error: bool = False) -> None:
            if self._fenced_out():
                return
            if trial_id not in self._completed_trials:
                self._report_last(trial_id, result)
            state = live_trial_state(result, error)
            if (result or {}).get(names.RACED_OUT) and trial_id in self._ot_trials:
                for key, value in partial_attrs(result.get(names.RACED_OUT)).items():
                    self._ot_trials[trial_id].set_user_attr(key, value)
            if (state == optuna.trial.TrialState.COMPLETE or trial_id in self._completed_trials
                    or trial_id not in self._ot_trials):
                super().on_trial_complete(trial_id, result=result, error=error)
                return
            # PRUNED: Optuna takes the last intermediate value (the last objective reported).
            self._ot_study.tell(self._ot_trials[trial_id], None, state=state)
            self._completed_trials.add(trial_id)

    SweepSearch.__module__, SweepSearch.__qualname__ = __name__, "SweepSearch"
    globals()["SweepSearch"] = SweepSearch  # pickled by reference, as a module-level class
    return SweepSearch


def __getattr__(name: str) -> Any:
    if name == "SweepSearch":
        return _sweep_search_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
