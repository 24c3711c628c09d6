"""Build and run the Ray Tune Tuner of one sweep: OptunaSearch, ASHA, resources, resume.

Resume design (why no Tuner.restore): the Parquet store is the single source of truth. Each run
reads the trials already recorded, re-adds the finished ones to a fresh in-memory Optuna study
(so the sampler learns from them), and launches only the missing number of trials as a NEW Tune
experiment. A trial that was running when the driver died left no row (rows are written once, when
a trial ends) and is simply replaced. This sidesteps both known hazards of restoring: an RDB-backed
OptunaSearch re-reporting a finished trial (UpdateFinishedTrialError), and an in-memory one
re-running finished trials under new ids.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs as pafs
import yaml

from orchestrator.console import ConsoleCallback
from orchestrator.planner import resources_for_config, trial_budget_bytes
from orchestrator.schema import OPTUNA_PARAMS_PREFIX
from orchestrator.spec import (
    SpecError,
    SweepSpec,
    grid_search_space,
    optuna_distributions,
    sample_params,
)
from orchestrator.store import ResultStore, StoreCallback, resolve, write_spec
from trainables import names
from trainables.data import prepare_data
from trainables.data.base import PreparedData
from trainables.errors import SersweepError


@dataclass
class SweepOutcome:
    sweep_dir: str
    trials_recorded: int
    trials_run: int
    failed: int
    wall_seconds: float


def make_sampler(spec: SweepSpec, recorded: int = 0) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named in `search.sampler`, seeded with `search.seed`.

    A resumed sweep (`recorded` trials already in the store) seeds with `seed + recorded`:
    re-seeding with the bare seed would replay the random start-up draws of the first run and
    propose the recorded configurations again.
    """
    seed = spec.search.seed + recorded
    kind = spec.search.sampler
    if kind == "tpe":
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


def _study_with_history(
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


# The parts of a sweep file that must not change between a sweep's runs (trials may grow).
_SAME_ON_RESUME = ("data", "model", "train", "search.params", "search.metric", "search.mode")


def check_same_sweep(store: ResultStore, spec: SweepSpec) -> None:
    """Refuse to continue a recorded sweep with a different sweep file: its trials would mix."""
    fs, path = resolve(store.sweep_dir)
    info = fs.get_file_info(f"{path}/spec.yaml")
    if info.type == pafs.FileType.NotFound:
        return
    with fs.open_input_stream(info.path) as stream:
        recorded = yaml.safe_load(stream.read()) or {}
    current = yaml.safe_load(yaml.safe_dump(spec.as_dict(), sort_keys=False))
    for dotted in _SAME_ON_RESUME:
        before, now = recorded, current
        for part in dotted.split("."):
            before, now = (before or {}).get(part), (now or {}).get(part)
        if before != now:
            raise SpecError(
                str(spec.path),
                dotted,
                f"{store.sweep_dir} holds a sweep recorded with a different {dotted} "
                f"(recorded: {before!r}, now: {now!r}); to start a new sweep use --results DIR "
                "or another `name:`",
            )


# Written by `ray start --head` on this machine (Ray's default temp dir): a cluster to join.
RAY_CLUSTER_FILE = Path("/tmp/ray/ray_current_cluster")


class ClusterError(SersweepError):
    """The Ray cluster named by --address / RAY_ADDRESS / `ray start` cannot be reached."""


def _ray_init(address: str | None, verbose: bool) -> None:
    """Join the cluster named by --address or RAY_ADDRESS, or the one `ray start` left on this
    machine (the head node under `ray submit`); else start a private local Ray."""
    import ray

    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    # One checkpoint kept per trial forces an experiment snapshot per epoch; it is cheap here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not verbose:  # our console view instead of Tune's status tables
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if not address and RAY_CLUSTER_FILE.is_file():
        address = "auto"
    if not address:
        # A private Ray for this sweep; no dashboard, so nothing listens beyond loopback.
        ray.init(include_dashboard=False, log_to_driver=verbose)
        return
    try:
        # Joining a cluster: its dashboard and resources are the cluster's business.
        ray.init(address=address, log_to_driver=verbose)
    except ConnectionError as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address!r} (--address, RAY_ADDRESS or "
            f"{RAY_CLUSTER_FILE} from `ray start`): {exc}; start it, or run `ray stop` to "
            "forget a stopped one"
        ) from exc
    print(f"joined the Ray cluster at {address}: {ray.cluster_resources()}")


def run_sweep(
    spec: SweepSpec,
    *,
    results_root: str,
    address: str | None = None,
    verbose: bool = False,
    data: PreparedData | None = None,
) -> SweepOutcome:
    """Run (or continue) the sweep `spec`; every finished trial lands in the store."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from trainables.trainable import train_trial

    started = time.monotonic()
    store = ResultStore(results_root, spec.name)
    check_same_sweep(store, spec)
    storage, sampler, recorded = _study_with_history(spec, store)
    remaining = spec.search.trials - recorded
    if recorded:
        print(f"resuming {store.sweep_dir}: {recorded} trials recorded, {max(remaining, 0)} to go")
    if remaining <= 0:
        return SweepOutcome(store.sweep_dir, recorded, 0, 0, time.monotonic() - started)

    # Everything that can reject the input runs before the first write (exit 2, nothing written).
    if data is None:
        data = prepare_data(dict(spec.data), progress=lambda msg: print(f"data: {msg}"))
    base: dict[str, Any] = {}
    teacher: dict[str, Any] = {}
    if spec.distill:
        from orchestrator.distill import resolve_teacher

        base["distill"] = resolve_teacher(spec, results_root)
        teacher = {key: base["distill"][key] for key in ("teacher_sweep", "teacher_trial")}
    store.repair()  # what a killed driver left: truncated, temporary, half-written trials
    write_spec(store.sweep_dir, spec.as_dict())
    _ray_init(address, verbose)

    metric_key = names.mean_key(spec.search.metric)  # what ASHA prunes on, each epoch
    searcher = OptunaSearch(
        space=TrialSpace(spec),
        metric=names.OBJECTIVE,
        mode=spec.search.mode,
        sampler=sampler,
        storage=storage,
        study_name=spec.name,
    )
    max_concurrent = spec.search.max_concurrent or max(
        1, int(_cluster_cpus() // spec.resources.cpus_per_trial)
    )
    search_alg = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    if spec.search.scheduler.type == "asha":
        scheduler = ASHAScheduler(
            metric=metric_key,
            mode=spec.search.mode,
            max_t=spec.search.scheduler.max_t or int(spec.train["epochs"]),
            grace_period=spec.search.scheduler.grace_period,
            reduction_factor=spec.search.scheduler.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()

    base["runtime"] = {
        "sweep": spec.name,
        "metric": spec.search.metric,
        "mode": spec.search.mode,
        "memory_budget": trial_budget_bytes(dict(spec.resources), _gpu_total_bytes()),
    }
    trainable = tune.with_parameters(train_trial, data=data)
    trainable = tune.with_resources(trainable, _resources(spec, data))

    console = ConsoleCallback(total=spec.search.trials, already=recorded, mode=spec.search.mode)
    store_cb = StoreCallback(
        store,
        param_keys=spec.param_keys(),
        metric=spec.search.metric,
        mode=spec.search.mode,
        extra=teacher,
    )
    storage_path = _tune_storage_path(results_root, spec.name)
    tuner = tune.Tuner(
        trainable,
        param_space=base,
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=remaining,
            reuse_actors=True,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
            storage_path=storage_path,
            failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[store_cb, console],
            verbose=1 if verbose else 0,
        ),
    )
    tuner.fit()
    console.close()
    return SweepOutcome(
        sweep_dir=store.sweep_dir,
        trials_recorded=recorded + console.finished,
        trials_run=console.finished,
        failed=console.failed,
        wall_seconds=time.monotonic() - started,
    )


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id  # Tune's default packs the whole config into the folder name


def _resources(spec: SweepSpec, data: PreparedData):
    """Per-trial resources: fixed numbers, or a callable that sizes the GPU share by memory."""
    gpus = spec.resources.gpus_per_trial
    if gpus == "auto":
        gpu_total = _gpu_total_bytes()
        if gpu_total is None:  # no GPU anywhere: auto means CPU only
            return {"cpu": spec.resources.cpus_per_trial, "gpu": 0}
        return lambda config: resources_for_config(
            config,
            data_shape=tuple(data.features.shape[1:]),
            n_features=data.n_features,
            n_classes=data.n_classes,
            n_members=len(data.folds) * len(config["train"]["seeds"]),
            cpus_per_trial=spec.resources.cpus_per_trial,
            gpu_total_bytes=gpu_total,
            gpu_memory_fraction=spec.resources.gpu_memory_fraction,
        )
    return {"cpu": spec.resources.cpus_per_trial, "gpu": float(gpus)}


def _cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


def _gpu_total_bytes() -> int | None:
    """Memory of one GPU of the cluster: from torch on this node, else None (CPU only)."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    return None


def _tune_storage_path(results_root: str, sweep: str) -> str:
    """Tune's checkpoints live beside the results, so they follow a shared path or URI."""
    if "://" in results_root:
        return f"{results_root.rstrip('/')}/{sweep}/_tune"
    return str((Path(results_root) / sweep / "_tune").resolve())
