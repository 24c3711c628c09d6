"""Orchestration overhead per trial: sersweep's Tune machinery vs a bare sequential Optuna loop.

Both arms run the same N short trials: 3 "epochs" of `--epoch-seconds` sleep each (a stand-in for
GPU-bound training that leaves the CPU free), the same search space, the same TPE sampler.
(a) sersweep: Tuner + OptunaSearch + ConcurrencyLimiter(workers) + ASHA-free FIFO, actor reuse,
    the StoreCallback writing every trial's Parquet files, one tune.report per epoch;
(b) a bare in-process `study.optimize` loop, one trial after another, nothing recorded.
Ray's start-up is excluded from (a) (it happens once per sweep). Measured side by side:

    overhead per trial = (wall_a x workers - N x work per trial) / N
    ratio              = wall_a / wall_b        (goals: <= 0.1 s per trial, ratio <= 0.6)

    python bench/overhead.py [--trials 40] [--workers 2] [--epoch-seconds 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import optuna
import ray
from ray import tune
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from orchestrator.store import ResultStore  # noqa: E402
from orchestrator.store_callback import StoreCallback  # noqa: E402
from trainables import names  # noqa: E402

EPOCHS = 3


def space(trial: optuna.Trial) -> None:
    trial.suggest_float("lr", 1e-5, 1e-2, log=True)
    trial.suggest_int("layers", 1, 6)


def score(lr: float, layers: int) -> float:
    return 1.0 / (1.0 + abs(lr - 1e-3) * 100 + abs(layers - 3))


def trainable(config: dict) -> None:
    seconds = config["epoch_seconds"]
    member = {"member": 0, "fold": "f0", "seed": 0, "collapsed": False, "active": True}
    for epoch in range(1, EPOCHS + 1):
        time.sleep(seconds)  # the "training" of one epoch
        value = score(config["lr"], config["layers"]) * epoch / EPOCHS
        tune.report({
            names.EPOCH: epoch, names.OBJECTIVE: value, names.VAL_UAR_MEAN: value,
            names.MEMBERS_ACTIVE: 1, names.MEMBERS_COLLAPSED: 0, names.DONE: epoch == EPOCHS,
            names.MEMBER_ROWS_JSON: json.dumps([member | {"epoch": epoch, "val_uar": value}]),
            names.MEMBER_RESULTS_JSON: json.dumps([member | {"best_epoch": epoch,
                                                             "val_uar": value}]),
            names.RUNTIME_JSON: json.dumps({"micro_batch": 32, "accumulation": 1}),
        })  # fmt: skip


def run_sersweep(
    trials: int, workers: int, epoch_seconds: float, results: str, store_on: bool = True
) -> float:
    searcher = OptunaSearch(
        space=space, metric=names.OBJECTIVE, mode="max",
        sampler=optuna.samplers.TPESampler(seed=0),
    )  # fmt: skip
    store = ResultStore(results, "overhead")
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"epoch_seconds": epoch_seconds},
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=workers),
            num_samples=trials, reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            storage_path=str(Path(results) / "_tune"), verbose=0,
            callbacks=[StoreCallback(store, param_keys=["lr", "layers"], metric="val_uar",
                                     mode="max")] if store_on else [],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )  # fmt: skip
    start = time.perf_counter()
    tuner.fit()
    wall = time.perf_counter() - start
    recorded = len(store.read_trials()) if store_on else trials
    assert recorded == trials, f"the store holds {recorded} of {trials} trials"
    return wall


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
    parser.add_argument("--epoch-seconds", type=float, default=0.1)
    parser.add_argument("--no-store", action="store_true", help="(a) without the store: its cost")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    work = EPOCHS * args.epoch_seconds
    with tempfile.TemporaryDirectory() as results:
        wall_a = run_sersweep(
            args.trials, args.workers, args.epoch_seconds, results, not args.no_store
        )
    wall_b = run_bare_optuna(args.trials, args.epoch_seconds)
    ray.shutdown()
    overhead_a = (wall_a * args.workers - args.trials * work) / args.trials
    overhead_b = (wall_b - args.trials * work) / args.trials
    print(f"{args.trials} trials x {EPOCHS} epochs x {args.epoch_seconds:.2f} s of work "
          f"({work:.2f} s per trial), {args.workers} workers for sersweep")
    print(f"{'arm':<44} {'wall s':>8} {'overhead s/trial':>17}")
    arm_a = "(a) sersweep: Tune + Optuna" + ("" if args.no_store else " + Parquet store")
    print(f"{arm_a:<44} {wall_a:>8.2f} {overhead_a:>17.3f}")
    print(f"{'(b) bare sequential Optuna loop':<44} {wall_b:>8.2f} {overhead_b:>17.3f}")
    print(f"ratio a/b = {wall_a / wall_b:.2f}   (goals: overhead <= 0.1 s/trial, ratio <= 0.6)")


if __name__ == "__main__":
    main()
