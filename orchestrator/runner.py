"""Build and run the Ray Tune Tuner of one sweep: OptunaSearch, ASHA, resources, resume; and the
run subcommand (`sweep.py SPACE.yaml`: add_arguments + run).

Resume design (why no Tuner.restore): the Parquet store is the single source of truth. Each run
reads the trials already recorded, re-adds the finished ones to a fresh in-memory Optuna study
(so the sampler learns from them), and launches only the missing number of trials as a NEW Tune
experiment. A trial that was running when the driver died left no row (rows are written once, when
a trial ends) and is simply replaced. This sidesteps both known hazards of restoring: an RDB-backed
OptunaSearch re-reporting a finished trial (UpdateFinishedTrialError), and an in-memory one
re-running finished trials under new ids.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
import yaml

from orchestrator.cluster import cluster_cpus, gpu_total_bytes, ray_init, tune_storage_path
from orchestrator.console import ConsoleCallback
from orchestrator.dotted import get_dotted
from orchestrator.planner import TrialPlanner, resources_for_config, trial_budget_bytes
from orchestrator.search import TrialSpace, study_with_history
from orchestrator.spec import SpecError, SweepSpec
from orchestrator.store import ResultStore, resolve, write_spec
from orchestrator.store.callback import StoreCallback
from trainables import names
from trainables.data import PreparedData, prepare_data

DESCRIPTION = ("Run (or continue) a hyper-parameter sweep from one YAML file. Other commands: "
               "`sweep.py plan SPACE.yaml`, `sweep.py results DIR`, `sweep.py report DIR`.")


@dataclass
class SweepOutcome:
    sweep_dir: str
    trials_recorded: int
    trials_run: int
    failed: int
    wall_seconds: float


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
        before, now = get_dotted(recorded, dotted), get_dotted(current, dotted)
        if before != now:
            raise SpecError(
                str(spec.path),
                dotted,
                f"{store.sweep_dir} holds a sweep recorded with a different {dotted} "
                f"(recorded: {before!r}, now: {now!r}); to start a new sweep use --results DIR "
                "or another `name:`",
            )


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
    storage, sampler, recorded = study_with_history(spec, store)
    remaining = spec.search.trials - recorded
    if recorded:
        print(f"resuming {store.sweep_dir}: {recorded} trials recorded, {max(remaining, 0)} to go")
    if remaining <= 0:
        return SweepOutcome(store.sweep_dir, recorded, 0, 0, time.monotonic() - started)

    # Everything that can reject the input runs before the first write (exit 2, nothing written).
    if data is None:
        data = prepare_data(spec.base_config()["data"], progress=lambda msg: print(f"data: {msg}"))
    base: dict[str, Any] = {}
    teacher: dict[str, Any] = {}
    if spec.distill:
        from orchestrator.distill import resolve_teacher

        base["distill"] = resolve_teacher(spec, results_root)
        teacher = {key: base["distill"][key] for key in ("teacher_sweep", "teacher_trial")}
    store.repair()  # what a killed driver left: truncated, temporary, half-written trials
    write_spec(store.sweep_dir, spec.as_dict())
    ray_init(address, verbose)

    metric_key = names.mean_key(spec.search.metric)  # what ASHA prunes on, each epoch
    budget = trial_budget_bytes(dict(spec.resources), gpu_total_bytes())
    planner = TrialPlanner(tuple(data.features.shape[1:]), data.n_features, data.n_classes,
                           len(data.folds), budget)
    searcher = OptunaSearch(
        space=TrialSpace(spec, plan=planner),
        metric=names.OBJECTIVE,
        mode=spec.search.mode,
        sampler=sampler,
        storage=storage,
        study_name=spec.name,
    )
    max_concurrent = spec.search.max_concurrent or max(
        1, int(cluster_cpus() // spec.resources.cpus_per_trial)
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
        "memory_budget": budget,  # for a config that arrives without the driver's plan
    }
    trainable = tune.with_parameters(train_trial, data=data)
    trainable = tune.with_resources(trainable, _resources(spec))

    console = ConsoleCallback(total=spec.search.trials, already=recorded, mode=spec.search.mode)
    store_cb = StoreCallback(
        store,
        param_keys=spec.param_keys(),
        metric=spec.search.metric,
        mode=spec.search.mode,
        extra=teacher,
    )
    tuner = build_tuner(
        trainable,
        param_space=base,
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=remaining,
        storage_path=tune_storage_path(results_root, spec.name),
        max_failures=spec.resources.max_failures,
        callbacks=[store_cb, console],
        verbose=verbose,
    )
    with _stable_cwd():
        tuner.fit()
    console.close()
    return SweepOutcome(
        sweep_dir=store.sweep_dir,
        trials_recorded=recorded + console.finished,
        trials_run=console.finished,
        failed=console.failed,
        wall_seconds=time.monotonic() - started,
    )


def build_tuner(
    trainable: Any,
    *,
    param_space: dict[str, Any],
    search_alg: Any,
    scheduler: Any,
    num_samples: int,
    storage_path: str,
    max_failures: int,
    callbacks: list[Any],
    verbose: bool = False,
) -> Any:
    """The sweep's tune.Tuner: actor reuse, short trial dirs, one checkpoint kept per trial
    (also used by bench/overhead.py, so the benchmark measures this exact configuration)."""
    from ray import tune

    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=num_samples,
            reuse_actors=True,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
            storage_path=storage_path,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks,
            verbose=1 if verbose else 0,
        ),
    )


@contextlib.contextmanager
def _stable_cwd() -> Iterator[None]:
    """Run in a directory that outlives the trials, then return (when it still exists).

    Under `ray job submit` the driver's cwd is Ray's unpacked working_dir, which Ray deletes once
    the trials that shared it have ended; Tune then resolves relative paths against the missing
    cwd when fit() returns (FileNotFoundError in os.getcwd). Every path the sweep uses is absolute
    by then, so the temp dir is as good a cwd as any.
    """
    previous = None
    with contextlib.suppress(OSError):  # the cwd may be gone already
        previous = os.getcwd()
    os.chdir(tempfile.gettempdir())
    try:
        yield
    finally:
        if previous is not None:
            with contextlib.suppress(OSError):
                os.chdir(previous)


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id  # Tune's default packs the whole config into the folder name


def _resources(spec: SweepSpec) -> dict[str, float] | Any:
    """Per-trial resources: fixed numbers, or a callable that sizes the GPU share from the
    planned peak (gpus_per_trial: auto)."""
    gpus = spec.resources.gpus_per_trial
    if gpus == "auto":
        gpu_total = gpu_total_bytes()
        if gpu_total is None:  # no GPU anywhere: auto means CPU only
            return {"cpu": spec.resources.cpus_per_trial, "gpu": 0}
        return lambda config: resources_for_config(
            config,
            cpus_per_trial=spec.resources.cpus_per_trial,
            gpu_total_bytes=gpu_total,
            gpu_memory_fraction=spec.resources.gpu_memory_fraction,
        )
    return {"cpu": spec.resources.cpus_per_trial, "gpu": float(gpus)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from orchestrator.spec import add_spec_arguments

    add_spec_arguments(parser)
    parser.add_argument("--results", default=None, help="results root (path or URI)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the sweep recorded under --results"
    )
    parser.add_argument("--address", default=None, help="Ray cluster address (or RAY_ADDRESS)")
    parser.add_argument("--verbose", action="store_true", help="show Ray Tune's own logs")


def run(args: argparse.Namespace) -> int:
    """`sweep.py SPACE.yaml`: run the sweep, print the leaderboard; 1 when trials failed."""
    from orchestrator import query
    from orchestrator.spec import load_spec_from_args

    spec = load_spec_from_args(args)
    results_root = args.results or spec.results or "results"
    store = ResultStore(results_root, spec.name)
    if not args.resume and store.completed_trial_ids():
        print(
            f"{store.sweep_dir} already holds results of sweep {spec.name!r}: continuing it "
            "(as --resume would). Use --results or another `name:` for a fresh sweep."
        )
    outcome = run_sweep(
        spec, results_root=results_root, address=args.address, verbose=args.verbose
    )
    print(
        f"\nsweep {spec.name}: {outcome.trials_run} trials run, "
        f"{outcome.trials_recorded} recorded, {outcome.failed} failed, "
        f"{outcome.wall_seconds:.0f} s -> {outcome.sweep_dir}"
    )
    results = query.load(outcome.sweep_dir)
    if len(results.trials):
        print(query.format_frame(query.leaderboard(results, top=10), "table"))
    return 1 if outcome.failed else 0
