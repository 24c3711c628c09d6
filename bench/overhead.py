"""Orchestration overhead per trial: sersweep's Tune machinery vs a bare sequential Optuna loop.

Both arms run the same N trials of the same work: 3 "epochs" of `--epoch-seconds` sleep each (a
stand-in for GPU-bound training that leaves the CPU to the orchestrator), the same search space and
the same seeded TPE sampler.
(a) sersweep: the Tuner that orchestrator.runner.build_tuner builds for every sweep (actor reuse,
    one checkpoint kept per trial, FIFO scheduler) with OptunaSearch + ConcurrencyLimiter(workers)
    and the StoreCallback writing each trial's Parquet files; each epoch reports and checkpoints
    like trainables/trainable.py does. Ray's start-up is outside the timing (once per sweep).
(b) a bare in-process `study.optimize` loop, one trial after another, nothing recorded.
Measured side by side in one run:

    overhead per trial  = (wall_a x workers - N x work per trial) / N     (goal <= 0.1 s)
        i.e. the worker-seconds each trial costs beyond its work; "steady" counts only the
        window from the first trial's start to the last trial's end, "fixed" is the rest of
        fit() (Tune's set-up, first actors, tear-down), paid once per sweep
    ratio               = wall_a / wall_b                                 (goal <= 0.6)

Then the driver's CPU per trial by sweep size (`--sizes`), now vs before issue 25.3 (Tune's
forced experiment snapshot after every trial checkpoint, `CheckpointConfig(num_to_keep=1)`, and
its CSV/JSON/TensorBoard loggers on): the driver process's CPU-seconds during fit() / N. Now it
should stay flat with N; before, it grew (every snapshot writes every trial's state).

    python bench/overhead.py [--trials 40] [--workers 2] [--epoch-seconds 0.2] [--sizes 10,40,160]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import optuna
import ray
import torch  # the sweep driver has it imported anyway (trainables); keep it out of the timing
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from orchestrator import trackers  # noqa: E402
from orchestrator.cluster import usage_stats_off  # noqa: E402
from orchestrator.runner import build_tuner  # noqa: E402
from orchestrator.store import ResultStore, StoreCallback  # noqa: E402
from trainables import names  # noqa: E402
from trainables.trainable import CHECKPOINT_FILE  # noqa: E402

EPOCHS = 3
ARMS = (("(a) sersweep", True), ("(a') sersweep, no checkpoints", False))


def space(trial: optuna.Trial) -> None:
    trial.suggest_float("lr", 1e-5, 1e-2, log=True)
    trial.suggest_int("layers", 1, 6)


def score(lr: float, layers: int) -> float:
    return 1.0 / (1.0 + abs(lr - 1e-3) * 100 + abs(layers - 3))


def trainable(config: dict) -> None:
    """Like trainables.trainable.train_trial: every epoch one report with the trainer's keys,
    the runtime JSON and a checkpoint directory holding trainer.pt."""
    checkpoint = config["checkpoint"]
    member = {"member": 0, "fold": "f0", "seed": 0, "collapsed": False, "active": True}
    for epoch in range(1, EPOCHS + 1):
        time.sleep(config["epoch_seconds"])  # the "training" of one epoch
        value = score(config["lr"], config["layers"]) * epoch / EPOCHS
        report = {
            names.EPOCH: epoch, names.OBJECTIVE: value, names.VAL_UAR_MEAN: value,
            names.MEMBERS_ACTIVE: 1, names.MEMBERS_COLLAPSED: 0, names.DONE: epoch == EPOCHS,
            names.MEMBER_ROWS_JSON: json.dumps([member | {"epoch": epoch, "val_uar": value}]),
            names.MEMBER_RESULTS_JSON: json.dumps([member | {"best_epoch": epoch,
                                                             "val_uar": value}]),
            names.RUNTIME_JSON: json.dumps({"micro_batch": 32, "accumulation": 1,
                                            "device": "cpu", "gpu_ids": []}),
        }  # fmt: skip
        if not checkpoint:
            tune.report(report)
            continue
        with tempfile.TemporaryDirectory() as directory:
            state = {"epoch": epoch, "weights": torch.zeros(256)}
            torch.save(state, Path(directory) / CHECKPOINT_FILE)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(directory))


class Window(Callback):
    """When the first trial started and the last one ended (driver clock)."""

    def __init__(self) -> None:
        self.first_start: float | None = None
        self.last_end = 0.0

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.first_start = self.first_start or time.perf_counter()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.last_end = time.perf_counter()


def run_sersweep(
    trials: int, workers: int, epoch_seconds: float, results: str, checkpoint: bool
) -> tuple[float, float]:
    """Seconds: fit() in all, fit() until the first trial started, first start -> last end."""
    searcher = OptunaSearch(
        space=space, metric=names.OBJECTIVE, mode="max",
        sampler=optuna.samplers.TPESampler(seed=0),
    )  # fmt: skip
    store = ResultStore(results, "overhead")
    window = Window()
    tuner = build_tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"epoch_seconds": epoch_seconds, "checkpoint": checkpoint},
        search_alg=ConcurrencyLimiter(searcher, max_concurrent=workers),
        scheduler=FIFOScheduler(),
        num_samples=trials,
        storage_path=str(Path(results) / "_tune"),
        max_failures=0,
        callbacks=[StoreCallback(store, param_keys=["lr", "layers"], metric="val_uar",
                                 mode="max"), window],
    )  # fmt: skip
    start, cpu = time.perf_counter(), time.process_time()
    tuner.fit()
    wall = time.perf_counter() - start
    run_sersweep.driver_cpu = time.process_time() - cpu  # type: ignore[attr-defined]
    recorded = store.read_trials()
    assert len(recorded) == trials, f"the store holds {len(recorded)} of {trials} trials"
    assert set(recorded.status) == {"completed"}, recorded.status.value_counts()
    first = window.first_start or start
    return wall, first - start, window.last_end - first


@contextlib.contextmanager
def before_issue_25() -> object:
    """The Tuner as it was: one checkpoint kept by Tune itself (a forced experiment snapshot
    after every trial checkpoint), Tune's CSV/JSON/TensorBoard loggers, its "auto" snapshot."""
    saved_env = {key: os.environ.get(key) for key in trackers.TUNE_FILES_ENV}
    saved = trackers.checkpointing
    os.environ.update(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="0", TUNE_GLOBAL_CHECKPOINT_S="auto")
    trackers.checkpointing = lambda: (tune.CheckpointConfig(num_to_keep=1), Callback())
    try:
        yield
    finally:
        trackers.checkpointing = saved
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def driver_cpu_by_size(sizes: list[int], workers: int, epoch_seconds: float) -> list[str]:
    """The driver's CPU-seconds per trial at each sweep size, now and before issue 25.3."""
    lines = [f"driver CPU per trial (s) by sweep size, {workers} workers, a checkpoint every "
             f"epoch", f"{'trials':>6} {'now':>7} {'before':>7} {'before/now':>10}"]
    for n in sizes:
        per_trial = []
        for before in (False, True):
            with tempfile.TemporaryDirectory() as results, (
                    before_issue_25() if before else contextlib.nullcontext()):
                run_sersweep(n, workers, epoch_seconds, results, True)
            per_trial.append(run_sersweep.driver_cpu / n)  # type: ignore[attr-defined]
        lines.append(f"{n:>6} {per_trial[0]:>7.3f} {per_trial[1]:>7.3f} "
                     f"{per_trial[1] / per_trial[0]:>10.2f}")
    return lines


def run_bare_optuna(trials: int, epoch_seconds: float) -> float:
    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-5, 1e-2, log=True)
        layers = trial.suggest_int("layers", 1, 6)
        for _ in range(EPOCHS):
            time.sleep(epoch_seconds)
        return score(lr, layers)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epoch-seconds", type=float, default=0.2)
    parser.add_argument("--sizes", default="10,40",
                        help="sweep sizes of the driver-CPU table (comma-separated; '' skips)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # as orchestrator.cluster.ray_init sets them for every sweep
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    usage_stats_off()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    n, work = args.trials, EPOCHS * args.epoch_seconds
    rows = []
    try:
        for label, checkpoint in ARMS:
            with tempfile.TemporaryDirectory() as results:
                wall, up, steady = run_sersweep(n, args.workers, args.epoch_seconds, results,
                                                checkpoint)  # fmt: skip
            rows.append((label, wall, (wall * args.workers - n * work) / n,
                         (steady * args.workers - n * work) / n, up, wall - up - steady))
        wall_b = run_bare_optuna(n, args.epoch_seconds)
        sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
        by_size = driver_cpu_by_size(sizes, args.workers, args.epoch_seconds) if sizes else []
    finally:
        ray.shutdown()
    nan = float("nan")
    rows.append(("(b) bare sequential Optuna loop", wall_b, (wall_b - n * work) / n, nan, nan,
                 nan))  # fmt: skip
    print(f"{n} trials x {EPOCHS} epochs x {args.epoch_seconds:.2f} s of work = {work:.2f} s per "
          f"trial; sersweep on {args.workers} workers, the bare loop on 1")
    print(f"{'arm':<32} {'wall s':>7} {'overhead s/trial':>16} {'steady s/trial':>14} "
          f"{'start s':>7} {'end s':>6} {'a/b':>5}")
    for label, wall, overhead, steady, up, down in rows:
        print(f"{label:<32} {wall:>7.2f} {overhead:>16.3f} {steady:>14.3f} {up:>7.2f} "
              f"{down:>6.2f} {wall / wall_b:>5.2f}")
    print("overhead = (wall x workers - N x work) / N, the worker-seconds a trial costs beyond "
          "its work;\nsteady = the same over first trial start -> last trial end only; "
          "start / end = fit() before\nthe first trial started / after the last one ended "
          "(once per sweep)")
    (label, wall, overhead, *_), = rows[:1]
    print(f"goals (a): overhead <= 0.1 s/trial: {'met' if overhead <= 0.1 else 'missed'} "
          f"({overhead:.3f}); ratio <= 0.6: {'met' if wall / wall_b <= 0.6 else 'missed'} "
          f"({wall / wall_b:.2f})")
    print("", *by_size, sep="\n")


if __name__ == "__main__":
    main()
