"""Build and run the Ray Tune Tuner of one sweep: OptunaSearch, ASHA, resources, resume; and the
run subcommand (`sweep.py SPACE.yaml`: add_arguments + run).

Resume design (why no Tuner.restore): the Parquet store is the single source of truth. Each run
reads the trials already recorded, re-adds the finished ones to a fresh in-memory Optuna study
(so the sampler learns from them), and launches only the missing number of trials as a NEW Tune
experiment. A trial that was running when the driver died left no row (rows are written once, when
a trial ends) and is simply replaced. This sidesteps both known hazards of restoring: an RDB-backed
OptunaSearch re-reporting a finished trial (UpdateFinishedTrialError), and an in-memory one
re-running finished trials under new ids. The study is also written to
results/<sweep>/optuna.journal for optuna-dashboard, rebuilt from the store on every run
(journal.py), so it never holds a trial twice.

Failures: FailureConfig(max_failures) retries what raises in a trial, from its last checkpoint: a
worker or node lost, an unexpected exception. A deterministic failure (trainables.errors'
SersweepError: bad config, non-finite loss, does not fit) is not raised but reported as the
trial's last result (trainables/trainable.py: failure_report), so it is recorded once, unretried.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.cluster import (
    ClusterInfo,
    check_cache_on_nodes,
    check_request,
    discover_cluster,
    find_autoscaler,
    joins_a_cluster,
    local_gpu_info,
    ray_init,
    results_root_for,
    tune_storage_path,
)
from orchestrator.sweepfile import SpecError, SweepSpec, spec_diff
from trainables import names
from trainables.errors import SersweepError

if TYPE_CHECKING:
    from orchestrator.store import ResultStore, SweepLock
    from trainables.data import PreparedData

# Ray, Tune, torch, Optuna and pyarrow are imported where they are used (run_sweep, run): the
# CLI imports this module to build the parser, and a bad sweep file must be reported before any
# of them is imported (tests/orchestrator/test_cli.py).

DESCRIPTION = ("Run (or continue) a hyper-parameter sweep from one YAML file. Other commands: "
               "`sweep.py plan SPACE.yaml`, `sweep.py results DIR`, `sweep.py report DIR`.")


@dataclass
class SweepOutcome:
    sweep_dir: str
    trials_recorded: int
    trials_run: int
    failed: int
    wall_seconds: float
    interrupted: int | None = None  # the signal that stopped the run (interrupt.py), else None


def data_variants(spec: SweepSpec) -> list[dict[str, Any]]:
    """The sweep file's data section with each combination of the searched data.* choices (the
    spec allows only choices there, so each is prepared once, before the trials start)."""
    from orchestrator.baseline_run import searched_data_choices

    return [variant for _, variant in searched_data_choices(spec)]


def check_same_sweep(store: ResultStore, spec: SweepSpec) -> None:
    """Refuse to continue a recorded sweep with a different sweep file: its trials would mix."""
    import pyarrow.fs as pafs
    import yaml

    from orchestrator.store import resolve
    from orchestrator.sweepfile.yaml_loader import parse_recorded_spec

    fs, path = resolve(store.sweep_dir)
    info = fs.get_file_info(f"{path}/spec.yaml")
    if info.type == pafs.FileType.NotFound:
        return
    with fs.open_input_stream(info.path) as stream:
        text = stream.read().decode("utf-8", errors="replace")
    recorded = parse_recorded_spec(text, f"{store.sweep_dir}/spec.yaml")  # one line if hand-broken
    current = yaml.safe_load(yaml.safe_dump(spec.as_dict(), sort_keys=False))
    changed = spec_diff(recorded, current)
    if changed:
        raise SpecError(
            str(spec.path),
            changed[0].partition(":")[0],
            f"{store.sweep_dir} holds a sweep recorded with other values ({'; '.join(changed)}); "
            "to start a new sweep use --results DIR or another `name:`",
        )


def run_sweep(
    spec: SweepSpec,
    *,
    results_root: str,
    address: str | None = None,
    verbose: bool = False,
    data: PreparedData | None = None,
    lock: SweepLock | None = None,
    confirm_only: dict[str, Any] | None = None,
) -> SweepOutcome:
    """Run (or continue) the sweep `spec`; every finished trial lands in the store. SIGINT /
    SIGTERM during the trials stop them cleanly (outcome.interrupted; see interrupt.py). Then
    the finalists are confirmed (confirm.py: search.confirm); `confirm_only` ({top, seeds}):
    only that, on the trials recorded (`sweep.py confirm`). `lock`: the driver's held
    SweepLock; every write is fenced by it and a lost lease ends the run with
    SweepLockLostError (exit 2)."""
    from orchestrator.quiet import quiet_logs

    quiet_logs(verbose)  # before Ray is imported: it reads some of these at import
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.stopper import CombinedStopper

    from orchestrator import confirm, racing
    from orchestrator.console import ConsoleCallback, ProgressLines, ray_lines, sweep_console
    from orchestrator.interrupt import SignalStop, gcs_watch, stop_on_signals
    from orchestrator.planner import PlannerByData, TrialPlanner, gpu_targets, trial_budget_bytes
    from orchestrator.search import SweepSearch, TrialSpace, study_with_history
    from orchestrator.store import ResultStore, schema, write_spec
    from orchestrator.store.callback import StoreCallback, WriteFailureStop
    from orchestrator.store.journal import journal_storage
    from trainables.data import prepare_data, prepared_key
    from trainables.trainable import train_trial

    started = time.monotonic()
    fence = lock.fence() if lock is not None else None
    store = ResultStore(results_root, spec.name,
                        param_types=schema.param_types(spec.search.params, spec.base_config()),
                        fence=None if fence is None else fence.check)
    check_same_sweep(store, spec)
    store.claim_identity()  # refuses recorded trials without spec.yaml (nothing written yet)
    history, sampler, recorded = study_with_history(spec, store)
    remaining = 0 if confirm_only else spec.search.trials - recorded
    if recorded and not confirm_only:
        print(f"resuming {store.sweep_dir}: {recorded} trials recorded, {max(remaining, 0)} to go")
    confirm_settings = confirm_only or spec.search.confirm  # finalists retrained (confirm.py)
    confirm_args = {"micro_batch": spec.train.get("micro_batch"),
                    "min_test_sets": 1 if confirm_only else confirm.MIN_TEST_SETS}
    if remaining <= 0 and not confirm.pending(store, confirm_settings, spec.search.mode,
                                              **confirm_args):
        return SweepOutcome(store.sweep_dir, recorded, 0, 0, time.monotonic() - started)

    from trainables.collapse import collapse_warning  # too few epochs for the rule: say so
    if (line := collapse_warning(spec.train)) is not None:  # the spec's, defaults filled in
        print(line)
    # Everything that can reject the input runs before the first write (exit 2, nothing written).
    autoscaler = None  # a joined cluster's autoscaler file (a private Ray has none)
    if joins_a_cluster(address):
        autoscaler = find_autoscaler()
    else:  # a private Ray gets this machine: refused in seconds
        check_request(local_gpu_info(), spec.resources.cpus_per_trial,
                      spec.resources.gpus_per_trial)
    # one PreparedData per searched data.* choice (and the sweep file's own data section)
    base_data = spec.base_config()["data"]
    datasets: dict[str, PreparedData] = {prepared_key(base_data): data} if data is not None else {}
    progress = ProgressLines("data: ")  # counters end at N/N; each fact once
    for variant in [base_data, *data_variants(spec)]:
        if prepared_key(variant) not in datasets:
            datasets[prepared_key(variant)] = prepare_data(variant, progress=progress)
            progress.close()
    data = datasets[prepared_key(base_data)]
    base: dict[str, Any] = {}
    teacher: dict[str, Any] = {}
    if spec.distill:
        from orchestrator.teacher import resolve_teacher

        base["distill"] = resolve_teacher(spec, results_root)
        teacher = {key: base["distill"][key] for key in ("teacher_sweep", "teacher_trial")}
    # Nothing is written before the run can start: lease held (run), spec valid, Ray reached.
    with ray_lines(address):
        ray_init(address, verbose)
    quiet_logs(verbose)  # ray.init set the `ray` logger's level again
    # the GPUs of the nodes that have them (#22), and of those the autoscaler can add
    cluster = discover_cluster(autoscaler=autoscaler)
    print(cluster.line())
    scaling = check_request(cluster, spec.resources.cpus_per_trial,
                            spec.resources.gpus_per_trial)
    if scaling:
        print(scaling)
    check_cache_on_nodes(base_data.get("cache_dir"))  # several nodes: each reads the cache
    if fence is not None:
        fence.check()
    from orchestrator.trackers import tracker_callbacks  # search.loggers; Tune's files off

    trackers = tracker_callbacks(spec.search.loggers, spec.name, store.sweep_dir)
    store.repair()  # what a killed driver left: truncated, temporary, half-written, foreign
    write_spec(store.sweep_dir, spec.as_dict())
    store.write_identity()
    baseline = None
    if spec.search.baseline:  # beside the first trials; cached per data config
        from orchestrator.baseline_run import start_sweep_baseline

        baseline = start_sweep_baseline(spec, store.sweep_dir, data)

    metric_key = names.mean_key(spec.search.metric)  # what ASHA prunes on, each epoch
    targets = gpu_targets(cluster, spec.resources)  # one per GPU type, smallest first
    budget = trial_budget_bytes(dict(spec.resources), None)  # CPU: resources.memory_budget
    planners = {key: TrialPlanner(tuple(d.features.shape[1:]), d.n_features, d.n_classes,
                                  len(d.folds), budget, targets) for key, d in datasets.items()}
    planner = PlannerByData(planners) if len(planners) > 1 else planners[prepared_key(base_data)]
    max_concurrent = spec.search.max_concurrent or max(
        1, int(cluster.max_cpus // spec.resources.cpus_per_trial)  # nodes it may add too
    )

    base["runtime"] = {
        "sweep": spec.name,
        "metric": spec.search.metric,
        "mode": spec.search.mode,
        "memory_budget": budget,  # for a config that arrives without the driver's plan
    }
    # through Ray's object store once; a trial picks its own data (trainable._prepare)
    trainable = tune.with_parameters(train_trial, data=datasets if len(datasets) > 1 else data,
                                     **racing.trainable_args(spec))  # its judge when racing
    trainable = tune.with_resources(trainable, _resources(spec, cluster))

    # One console and one store callback for the whole sweep: numbering, ETA and the first
    # write error carry over from one Tuner to the next.
    console = sweep_console(spec, recorded=recorded, concurrency=max_concurrent, verbose=verbose)
    # a resume: "best" and the ETA count what is recorded (search rows that belong)
    console.seed(schema.search_rows(store.recorded_trials()))
    stop = SignalStop()
    store_cb = StoreCallback(
        store,
        param_keys=spec.param_keys(),
        metric=spec.search.metric,
        mode=spec.search.mode,
        extra=teacher,
        classes=list(data.classes),
    )

    def fit_tuner(history: Any, sampler: Any, num_samples: int, part: int) -> None:
        """One Tune experiment of `num_samples` trials, its study starting from `history`."""
        # the study so far, also as results/<sweep>/optuna.journal for optuna-dashboard
        storage = journal_storage(store.sweep_dir, spec.name, history)
        searcher = SweepSearch(  # OptunaSearch telling Optuna the state the store records
            space=TrialSpace(spec, plan=racing.plan_for(spec, planner, results_root)),
            metric=names.OBJECTIVE,
            mode=spec.search.mode,
            sampler=sampler,
            storage=storage,
            study_name=spec.name,
            fence=fence,
        )
        if spec.search.scheduler.type == "asha":
            scheduler = ASHAScheduler(
                metric=metric_key,
                mode=spec.search.mode,
                max_t=spec.search.scheduler.max_t or int(spec.train["epochs"]),
                grace_period=spec.search.scheduler.grace_period,
                reduction_factor=spec.search.scheduler.reduction_factor,
                **racing.asha_args(spec),  # racing: the first stage's epochs only
            )
        else:
            scheduler = FIFOScheduler()
        build_tuner(
            trainable,
            param_space=base,
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=max_concurrent),
            scheduler=scheduler,
            num_samples=num_samples,
            storage_path=tune_storage_path(results_root, spec.name),
            max_failures=spec.resources.max_failures,
            callbacks=[store_cb, console, *trackers],
            verbose=verbose,
            stop=CombinedStopper(stop, WriteFailureStop(store_cb, lock)),
            part=part,
        ).fit()

    # At most search.tuner_trials trials per Tuner: Tune's driver keeps state for every trial of
    # an experiment (bench/soak.py: RSS and time per trial grow with it), released when fit()
    # returns. Each next Tuner starts exactly like a resumed run: the study rebuilt from the
    # store, the sampler reseeded with seed + recorded, a fresh journal (study_with_history).
    # The signal handlers stay for the whole loop, so Ctrl-C / SIGTERM end the sweep, not a part.
    part, last_recorded = 1, recorded
    lost = gcs_watch(lambda: len(store.completed_trial_ids()), spec.search.trials, store.sweep_dir)
    with _stable_cwd(), stop_on_signals(stop), lost:
        while remaining > 0:
            trials = min(remaining, spec.search.tuner_trials)
            fit_tuner(history, sampler, trials, part)
            if (trials == remaining or stop.signum is not None or store_cb.write_error is not None
                    or (lock is not None and not lock.valid())):
                break
            history, sampler, now_recorded = study_with_history(spec, store)
            remaining = spec.search.trials - now_recorded
            # nothing recorded (every write failed otherwise): another Tuner would do the same
            if remaining <= 0 or now_recorded == last_recorded or stop.signum is not None:
                break
            part, last_recorded = part + 1, now_recorded
        todo = confirm.pending(store, confirm_settings, spec.search.mode, **confirm_args)
        if (todo and stop.signum is None and store_cb.write_error is None
                and (lock is None or lock.valid())):
            confirm_console = ConsoleCallback(total=len(todo), already=0, mode=spec.search.mode,
                                              metric=spec.search.metric, verbose=verbose,
                                              epochs=int(spec.train["epochs"]))
            print(f"confirm: retraining the {len(todo)} best configurations with fresh seeds")
            confirm.run_confirmation(todo, plan=planner, console=confirm_console, fit=lambda
                                     searcher, n, callbacks: build_tuner(
                trainable, param_space=base, search_alg=searcher, scheduler=FIFOScheduler(),
                num_samples=n, storage_path=tune_storage_path(results_root, spec.name),
                max_failures=spec.resources.max_failures, callbacks=[store_cb, *callbacks],
                verbose=verbose, stop=CombinedStopper(stop, WriteFailureStop(store_cb, lock)),
                part=part + 1).fit())
            confirm_console.close()
    console.close()
    if baseline is not None:  # written before the leaderboard reads it
        baseline.wait(interrupted=stop.signum is not None)
    if lock is not None and not lock.valid():  # fenced out: launched and wrote nothing since
        lock.check()
    if store_cb.write_error is not None:  # disk full / read-only: the run stopped (exit 2)
        raise store_cb.write_error
    return SweepOutcome(
        sweep_dir=store.sweep_dir,
        trials_recorded=recorded + console.finished,
        trials_run=console.finished,
        failed=console.failed,
        wall_seconds=time.monotonic() - started,
        interrupted=stop.signum,
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
    stop: Any = None,
    part: int = 1,
) -> Any:
    """The sweep's tune.Tuner: actor reuse, short trial dirs, one checkpoint kept per trial
    without Tune's forced experiment snapshots (orchestrator/trackers.py); also used by
    bench/overhead.py, so the benchmark measures this exact configuration.
    `part`: the number of this Tuner within one run (run_sweep's consecutive Tuners), so two
    started within a second get distinct experiment folders."""
    from ray import tune

    from orchestrator.trackers import checkpointing, quiet_tune_files, skip_unsent_usage_count

    quiet_tune_files()  # Tune's own loggers off unless asked, its state snapshot every 300 s
    skip_unsent_usage_count()  # usage statistics off: no mlflow import to count callbacks
    checkpoint_config, latest_only = checkpointing()  # each trial keeps its latest checkpoint
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
            name=f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
                 + (f"-{part}" if part > 1 else ""),
            storage_path=storage_path,
            # retries what raises (worker / node lost); deterministic failures are reported
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=checkpoint_config,
            callbacks=[*callbacks, latest_only],
            stop=stop,  # interrupt.SignalStop: Ctrl-C / SIGTERM end the run cleanly
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


def _resources(spec: SweepSpec, cluster: ClusterInfo) -> dict[str, float] | Any:
    """Per-trial resources: a callable that reads the driver's plan (the GPU type and share,
    planner.resources_for_config) when the trials use GPUs, else fixed CPU numbers."""
    from functools import partial

    from orchestrator.planner import resources_for_config

    gpus = spec.resources.gpus_per_trial
    if not gpus or not cluster.gpu_types:  # auto without a GPU anywhere: CPU only
        return {"cpu": spec.resources.cpus_per_trial, "gpu": 0}
    return partial(resources_for_config, cpus_per_trial=spec.resources.cpus_per_trial,
                   gpu_memory_fraction=spec.resources.gpu_memory_fraction, gpus_per_trial=gpus)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from orchestrator.sweepfile import add_spec_arguments

    add_spec_arguments(parser)
    parser.add_argument("--results", default=None, help="results root (path or URI)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the sweep recorded under --results"
    )
    parser.add_argument("--address", default=None, help="Ray cluster address (or RAY_ADDRESS)")
    parser.add_argument("--verbose", action="store_true", help="show Ray Tune's own logs")
    parser.add_argument(
        "--break-lock", action="store_true",  # = store.lock.BREAK_LOCK_FLAG (named in refusals)
        help="take the sweep's driver lock even though its holder looks alive (only when you "
             "are sure no other driver runs this sweep)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """`sweep.py SPACE.yaml`: run the sweep, print the leaderboard; 1 when trials failed,
    130 / 143 when SIGINT / SIGTERM stopped it (one line: the same command continues)."""
    from orchestrator.sweepfile import load_spec_from_args
    from orchestrator.sweepfile.load import (
        check_results_root,
        disk_full_error,
        results_root_error,
    )

    _refuse_early_if_locked(args)
    spec = load_spec_from_args(args)
    from orchestrator.quiet import quiet_logs

    quiet_logs(args.verbose)  # before anything imports Ray
    # absolute (or a URI): the console prints the real place; a relative path under a Ray job
    # is refused (see cluster.results_root_for)
    results_root = results_root_for(args.results or spec.results or "results")
    check_results_root(results_root)  # an unreachable s3:// root: one line, exit 2
    from orchestrator.store import ResultStore, SweepLock

    # One driver per sweep (store/lock.py): taken before anything is written (repair, spec.yaml)
    # and before Ray or Tune is imported, so a second driver is refused within about a second;
    # held until this run ends. SweepLockedError names the holder (exit 2). A root that cannot
    # hold a sweep (a file, driver.lock a file, an unreachable s3://) is one line, exit 2.
    try:
        store = ResultStore(results_root, spec.name)
        lock = SweepLock(store.sweep_dir, break_lock=args.break_lock).acquire()
    except (OSError, ValueError) as exc:  # pyarrow: ArrowInvalid (a bad URI) is a ValueError
        raise results_root_error(results_root, exc) from None
    try:
        code = _run_holding_lock(args, spec, store, results_root, lock)
    except SersweepError:  # refused input writes nothing: no lease left behind either
        lock.release(forget=True)
        raise
    except (OSError, EOFError) as exc:  # Tune's checkpoint folder filled: one line, exit 2
        full = disk_full_error(exc, tune_storage_path(results_root, spec.name))
        if full is None:
            raise
        raise full from None
    finally:
        lock.release()
    lock.check()  # taken over meanwhile (--break-lock elsewhere): say so (exit 2)
    return code


def _refuse_early_if_locked(args: argparse.Namespace) -> None:
    """Refuse a second driver within about a second: validating the sweep file imports torch
    (model constraints, feature widths: seconds), so the lease is looked at first, with the
    sweep folder read from the raw YAML (`name`, `results`, their --set / --results overrides).
    Anything unusual returns quietly: load_spec reports bad input, and `SweepLock.acquire` after
    it is the step that decides."""
    import yaml

    from orchestrator.sweepfile.load import resolve_spec_path, results_root_error
    from orchestrator.sweepfile.yaml_loader import load_yaml_file, parse_override_value

    try:
        path = resolve_spec_path(args.space)
        raw = load_yaml_file(path).data  # bounded: an alias bomb is refused, not expanded
        if not isinstance(raw, dict):
            return
        name, results = raw.get("name", path.stem), raw.get("results", "results")
        for text in args.overrides:
            key, _, value = text.partition("=")
            if key.strip() in ("name", "results"):
                parsed = parse_override_value(value, str(path), text)
                name, results = (parsed, results) if key.strip() == "name" else (name, parsed)
        if not isinstance(name, str) or not isinstance(args.results or results, str):
            return
        root = results_root_for(args.results or results)
    except (OSError, ValueError, yaml.YAMLError, SersweepError):  # ValueError: not UTF-8
        return
    from orchestrator.store import ResultStore, SweepLock

    try:
        SweepLock(ResultStore(root, name).sweep_dir, break_lock=args.break_lock).refuse_if_held()
    except (OSError, ValueError) as exc:  # an unreachable s3:// root: now, not after validation
        raise results_root_error(root, exc) from None


def _run_holding_lock(
    args: argparse.Namespace, spec: SweepSpec, store: ResultStore, results_root: str,
    lock: SweepLock | None = None,
) -> int:
    from orchestrator import query
    from orchestrator.console import pinned_lines
    from orchestrator.interrupt import EXIT_CODES, Interrupted, interrupted_line, sigterm_raises

    for line in pinned_lines(args.space, args.overrides):  # --set on a searched key
        print(line)

    if args.resume and not store.completed_trial_ids():
        raise SersweepError(
            f"--resume: nothing to resume: no recorded trials of sweep {spec.name!r} in "
            f"{store.sweep_dir}; run without --resume to start it, or pass the --results root "
            "it was recorded under"
        )
    if not args.resume and store.completed_trial_ids():
        print(
            f"{store.sweep_dir} already holds results of sweep {spec.name!r}: continuing it "
            "(as --resume would). Use --results or another `name:` for a fresh sweep."
        )
    try:
        with sigterm_raises():
            outcome = run_sweep(spec, results_root=results_root, address=args.address,
                                verbose=args.verbose, lock=lock)
    except (KeyboardInterrupt, Interrupted) as exc:  # before or after Tune's loop
        signum = getattr(exc, "signum", signal.SIGINT)
        recorded = len(store.completed_trial_ids())
        print(interrupted_line(signum, recorded, spec.search.trials, store.sweep_dir),
              file=sys.stderr)
        return EXIT_CODES[signum]
    if outcome.interrupted is not None:
        print(interrupted_line(outcome.interrupted, outcome.trials_recorded, spec.search.trials,
                               outcome.sweep_dir), file=sys.stderr)
        return EXIT_CODES[outcome.interrupted]
    print(
        f"\nsweep {spec.name}: {outcome.trials_run} trials run, "
        f"{outcome.trials_recorded} recorded, {outcome.failed} failed, "
        f"{outcome.wall_seconds:.0f} s -> {outcome.sweep_dir}"
    )
    results = query.load(outcome.sweep_dir)
    if len(results.trials):
        print(query.format_frame(query.leaderboard(results, top=10), "table"))
        from orchestrator.confirm import summary_lines
        from orchestrator.racing import member_epochs_line

        print("\n".join([member_epochs_line(results.trials), *summary_lines(
            results.trials, spec.search.mode, spec.search.metric)]))
    return 1 if outcome.failed else 0
