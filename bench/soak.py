"""Driver memory over a long sweep: N trivial trials through sersweep's own Tuner.

Ray Tune's driver is reported to grow with the number of trials (Ray issue 64231), and sersweep
keeps state per trial on the driver too (the StoreCallback buffers a trial's reports until it
ends; the console tracks running trials). This runs N trials (default 500) through the Tuner that
orchestrator.runner.build_tuner builds for every sweep, with the callbacks run_sweep installs:
StoreCallback writing every trial's Parquet files and ConsoleCallback (its output discarded), an
OptunaSearch (seeded TPE) behind a ConcurrencyLimiter, and ASHA. Each trial reports `--epochs`
epochs at once (no training), each report shaped like trainables/train.py's: one epoch row and one
result per member in MEMBER_ROWS_JSON / MEMBER_RESULTS_JSON, RUNTIME_JSON, and a checkpoint
directory holding trainer.pt, like trainables/trainable.py.

Printed every `--every` trials: driver RSS (VmRSS of this process), its change, the wall time and
the overhead per trial in that window (worker-seconds per trial: the trials do no work, so all of
it is orchestration), and the RSS of Ray's processes this driver started (gcs_server, raylet...).
At the end: RSS growth per trial as a linear fit of RSS against trials completed, excluding the
first `--warmup` trials (imports, first actors, Optuna's start-up), and its R^2.
`--tracemalloc` traces Python allocations from the end of the warm-up on and prints where the
memory still held at the end was allocated (run it separately: tracing slows the driver and
inflates its RSS).

`--segment K` runs the trials in consecutive Tuners of K trials (resuming from the store), to
measure how much of the growth is per-Tuner state released when its fit() ends;
`--no-store`, `--config bare` and `--members` take sersweep's parts out or resize them.
`--product` runs the trials through orchestrator.runner.run_sweep itself (a real sweep file on a
tiny synthetic corpus; only the trainable is replaced by `soak_trial`), so `--segment K` is the
product's own `search.tuner_trials: K` (0: all trials in one Tuner) with its study rebuild, journal
and callbacks; RSS is then sampled each time a trial's row lands in the store.

    python bench/soak.py [--trials 500] [--workers 2] [--members 5] [--epochs 3] [--tracemalloc]
                         [--segment 100] [--no-store] [--config bare] [--product]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parent.parent
# `python bench/soak.py` puts bench/ first on sys.path, where a bench script named like a stdlib
# module would shadow it for torch and Ray: import from the repository root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

from ray.tune import Callback  # noqa: E402

MIB = 1024 * 1024
# The last trial's tracemalloc snapshot: kept out of the probe, which Tune pickles with the
# experiment state.
SNAPSHOT: list[tracemalloc.Snapshot] = []


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process, from /proc/<pid>/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def children_rss(parent: int) -> dict[str, int]:
    """RSS by command name of the processes whose parent is `parent` (Ray's gcs_server,
    raylet, ... that ray.init started), summed per name."""
    out: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
            if int(text[text.rindex(")") + 2 :].split()[1]) != parent:
                continue
            name = text[text.index("(") + 1 : text.rindex(")")]
            out[name] = out.get(name, 0) + rss_bytes(entry)
        except (OSError, ValueError):
            continue  # exited meanwhile
    return out


def space(trial: Any) -> None:
    """The searched parameters (an optuna.Trial; module level: OptunaSearch pickles it)."""
    trial.suggest_float("lr", 1e-5, 1e-2, log=True)
    trial.suggest_int("layers", 1, 6)


def soak_trial(config: dict, data: Any = None) -> None:
    """A trial that reports `epochs` epochs at once, shaped like trainables/train.py's reports.
    `data`: what run_sweep passes its trainable (--product), unused."""
    import json

    import torch
    from ray import tune

    from trainables import names
    from trainables.trainable import CHECKPOINT_FILE

    if "soak" in config:
        soak, lr, layers = config["soak"], config["lr"], config["layers"]
    else:  # a real sweep config (--product): the searched values inside their sections
        soak = {"members": len(config["train"]["seeds"]), "epochs": config["train"]["epochs"]}
        lr, layers = config["train"]["lr"], config["model"]["layers"]
    score = 1.0 / (1.0 + abs(lr - 1e-3) * 100 + abs(layers - 3))
    best: list[dict[str, Any]] = []
    for epoch in range(1, soak["epochs"] + 1):
        value = score * epoch / soak["epochs"]
        rows, best = [], []
        for m in range(soak["members"]):
            ids = {"member": m, "fold": f"fold{m}", "seed": 0}
            rows.append(ids | {
                "epoch": epoch, "train_loss": 1.0 - value, "val_loss": 1.1 - value,
                "val_acc": value, "val_uar": value, "val_f1_macro": value,
                "val_f1_weighted": value, "lr": lr, "seconds": 0.01,
                "collapsed": False, "active": True,
            })  # fmt: skip
            best.append(ids | {
                "best_epoch": epoch, "val_acc": value, "val_uar": value, "val_f1_macro": value,
                "val_f1_weighted": value, "val_loss": 1.1 - value, "test_acc": value,
                "test_uar": value, "test_f1_macro": value, "test_f1_weighted": value,
                "test_confusion": [[25, 0, 0, 0], [0, 25, 0, 0], [0, 0, 25, 0], [0, 0, 0, 25]],
                "n_test": 100, "collapsed": False, "stopped_epoch": None,
            })  # fmt: skip
        report: dict[str, Any] = {names.EPOCH: epoch}
        for key in (*names.VAL_METRICS, names.TRAIN_LOSS):  # as LockstepTrainer._report
            report[names.mean_key(key)] = rows[0][key]
            report[names.std_key(key)] = 0.01
        report |= {
            names.OBJECTIVE: value, names.OBJECTIVE_STD: 0.01,
            names.MEMBERS_ACTIVE: soak["members"], names.MEMBERS_COLLAPSED: 0,
            names.DONE: epoch == soak["epochs"],
            names.MEMBER_ROWS_JSON: json.dumps(rows),
            names.MEMBER_RESULTS_JSON: json.dumps(best),
            names.RUNTIME_JSON: json.dumps({"micro_batch": 32, "accumulation": 1,
                                            "device": "cpu", "gpu_ids": []}),
        }  # fmt: skip
        with tempfile.TemporaryDirectory() as directory:
            torch.save({"epoch": epoch, "weights": torch.zeros(256)},
                       Path(directory) / CHECKPOINT_FILE)  # fmt: skip
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(directory))


def _import_product(retries: int, wait_s: float) -> dict[str, Any]:
    """build_tuner, ResultStore, StoreCallback, ConsoleCallback from wherever the product now
    keeps them; while orchestrator/ is being refactored an import may fail: wait and retry."""
    for attempt in range(retries):
        try:
            runner = importlib.import_module("orchestrator.runner")
            store = importlib.import_module("orchestrator.store")
            console = importlib.import_module("orchestrator.console")
            try:
                callback = store.StoreCallback
            except AttributeError:  # the layout before orchestrator/store/ became a package
                callback = importlib.import_module("orchestrator.store_callback").StoreCallback
            return {"build_tuner": runner.build_tuner, "ResultStore": store.ResultStore,
                    "StoreCallback": callback, "ConsoleCallback": console.ConsoleCallback}
        except ImportError as exc:
            if attempt == retries - 1:
                raise
            print(f"importing sersweep failed ({exc}); retrying in {wait_s:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
            for name in [n for n in sys.modules if n.split(".")[0] == "orchestrator"]:
                del sys.modules[name]
            time.sleep(wait_s)
    raise AssertionError("unreachable")


class Probe(Callback):
    """Counts ended trials: RSS after each, a line every `every` trials (to the real stdout:
    fit() runs with sys.stdout on /dev/null), and tracemalloc on at the end of the warm-up,
    read at the last trial."""

    def __init__(self, *, trials: int, every: int, warmup: int, workers: int,
                 trace: bool) -> None:  # fmt: skip
        self.trials, self.every, self.warmup, self.workers = trials, every, warmup, workers
        self.trace = trace
        self.samples: list[tuple[int, int, float]] = []  # (trials ended, RSS bytes, clock)
        self.started = time.perf_counter()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.sample()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.sample()

    def sample(self) -> None:
        """One trial ended: its RSS sample (and a line every `every`)."""
        done = len(self.samples) + 1
        now = time.perf_counter()
        self.samples.append((done, rss_bytes(), now))
        if self.trace and done == self.warmup:
            tracemalloc.start(12)
        if self.trace and done == self.trials:
            gc.collect()
            SNAPSHOT.append(tracemalloc.take_snapshot())
        if done % self.every == 0 or done == self.trials:
            self._line(done, now)

    def _line(self, done: int, now: float) -> None:
        previous = self.samples[-1 - self.every] if done > self.every else (0, self.samples[0][1],
                                                                             self.started)
        n = done - previous[0]
        rss = self.samples[-1][1]
        window = now - previous[2]
        ray = children_rss(os.getpid())
        print(f"{done:>6} {rss / MIB:>9.1f} {(rss - previous[1]) / MIB:>+8.1f} "
              f"{window / n:>8.3f} {window * self.workers / n:>13.3f} "
              f"{sum(ray.values()) / MIB:>9.1f}  "
              f"{' '.join(f'{k}={v / MIB:.0f}' for k, v in sorted(ray.items()) if v > 20 * MIB)}",
              file=sys.__stdout__, flush=True)  # fmt: skip


def _product_spec(args: argparse.Namespace, directory: Path) -> Any:
    """A real sweep file for --product: the soak trial's searched values (train.lr,
    model.layers), `--members` seeds on one fold, a fixed micro-batch (no memory planning)."""
    import yaml

    from orchestrator.sweepfile import load_spec

    sweep = {
        "name": "soak",
        "data": {"corpus": "synthetic", "synthetic_utterances": 40, "features": "logmel",
                 "n_mels": 16, "max_seconds": 1.0, "downsample": 4, "use_folds": 1,
                 "cache_dir": str(directory / "cache")},
        "model": {"name": "transformer", "layers": 1, "d_model": 16, "heads": 2, "ff_dim": 16},
        "train": {"epochs": args.epochs, "batch_size": 16, "micro_batch": 16,
                  "seeds": list(range(args.members))},
        "search": {"baseline": False, "sampler": "tpe", "seed": 0, "trials": args.trials,
                   "max_concurrent": args.workers, "tuner_trials": args.segment or args.trials,
                   "scheduler": {"type": "asha", "grace_period": 1},
                   "params": {"train.lr": {"loguniform": [1e-5, 1e-2]},
                              "model.layers": {"int": [1, 6]}}},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_failures": 0},
    }  # fmt: skip
    path = directory / "soak.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return load_spec(path)


def _run_product(args: argparse.Namespace, results: str, probe: Probe) -> None:
    """run_sweep with soak_trial as its trainable; a thread samples RSS per recorded trial."""
    import threading

    import trainables.trainable
    from orchestrator.runner import run_sweep
    from trainables.data import prepare_data

    spec = _product_spec(args, Path(results))
    data = prepare_data(spec.base_config()["data"])
    trainables.trainable.train_trial = soak_trial  # run_sweep imports it when called
    trials_dir = Path(results) / spec.name / "trials"
    finished = threading.Event()

    def watch() -> None:
        seen = 0
        while not finished.is_set() or seen < args.trials:
            now = len(list(trials_dir.glob("*.parquet"))) if trials_dir.is_dir() else 0
            for _ in range(seen, min(now, args.trials)):
                probe.sample()
            seen = max(seen, now)
            if finished.is_set() and seen < args.trials:
                break  # the run ended short: the assert after it says so
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run_sweep(spec, results_root=results, data=data)
    finally:
        finished.set()
        watcher.join(30)


def _fit(samples: list[tuple[int, int, float]], warmup: int) -> tuple[float, float, int, int]:
    """(bytes per trial, R^2, first, last trial) of a least-squares line RSS ~ trials ended."""
    import numpy as np

    kept = [(n, rss) for n, rss, _ in samples if n > warmup]
    x = np.array([n for n, _ in kept], dtype=float)
    y = np.array([rss for _, rss in kept], dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / total if total else 1.0
    return float(slope), r2, int(x[0]), int(x[-1])


def _print_trace(snapshot: tracemalloc.Snapshot, out: TextIO, top: int = 15) -> None:
    """Where the Python memory still held at the end was allocated (since the warm-up)."""
    snapshot = snapshot.filter_traces([
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
    ])  # fmt: skip
    stats = snapshot.statistics("traceback")
    total = sum(s.size for s in stats)
    print(f"\ntracemalloc: {total / MIB:.1f} MiB allocated after the warm-up and still held at "
          f"the last trial, in {sum(s.count for s in stats)} blocks; top {top} call sites "
          "(innermost frame first, then its callers in sersweep / Ray / Optuna):",
          file=out)  # fmt: skip
    for stat in stats[:top]:
        frames = [f for f in stat.traceback if "/importlib/" not in f.filename]
        print(f"  {stat.size / 1024:>9.1f} KiB {stat.count:>7} blocks", file=out)
        shown = frames[-1:] + [f for f in reversed(frames[:-1]) if _interesting(f.filename)][:4]
        for frame in shown:
            print(f"      {_short_path(frame.filename)}:{frame.lineno}", file=out)


def _interesting(filename: str) -> bool:
    return any(part in filename for part in ("/orchestrator/", "/ray/tune/", "/optuna/",
                                             "/ray/train/", "/bench/"))  # fmt: skip


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", str(REPO) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="trials at a time (CPUs)")
    parser.add_argument("--members", type=int, default=5, help="members (fold x seed) per trial")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--every", type=int, default=50, help="print a line every N trials")
    parser.add_argument("--warmup", type=int, default=50, help="trials left out of the fit")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace Python allocations after the warm-up (slower)")
    parser.add_argument("--config", choices=("sweep", "bare"), default="sweep",
                        help="sweep: each trial's config carries data/train sections like a "
                        "real sweep's; bare: only the searched parameters")
    parser.add_argument("--no-store", action="store_true",
                        help="leave the StoreCallback out (to attribute memory to it)")
    parser.add_argument("--segment", type=int, default=0,
                        help="run the trials in consecutive Tuners of this many (0: one Tuner),"
                        " as run_sweep would to bound the driver's per-trial state")
    parser.add_argument("--product", action="store_true",
                        help="run the trials through run_sweep itself; --segment is then "
                        "search.tuner_trials")
    parser.add_argument("--import-retries", type=int, default=10)
    args = parser.parse_args()
    if args.warmup >= args.trials - 2:
        parser.error("--warmup must leave at least 3 trials to fit")
    if args.product and (args.no_store or args.config != "sweep"):
        parser.error("--product runs the product's own callbacks and configs: no --no-store or "
                     "--config bare")

    # as orchestrator.cluster.ray_init sets them for every sweep
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from trainables import names
    from trainables.config import DATA_DEFAULTS, TRAIN_DEFAULTS

    product = _import_product(args.import_retries, wait_s=30.0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    out = sys.__stdout__
    rss_start = rss_bytes()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    probe = Probe(trials=args.trials, every=args.every, warmup=args.warmup, workers=args.workers,
                  trace=args.tracemalloc)  # fmt: skip
    param_space: dict[str, Any] = {"soak": {"members": args.members, "epochs": args.epochs}}
    if args.config == "sweep":  # a real sweep's config carries these sections
        param_space |= {"data": dict(DATA_DEFAULTS), "train": dict(TRAIN_DEFAULTS)}
    segment = args.segment or args.trials
    print(f"{args.trials} trials x {args.epochs} epochs x {args.members} members, "
          f"{args.workers} at a time, config {args.config}, store "
          f"{'off' if args.no_store else 'on'}, {segment} trials per Tuner"
          f"{' (run_sweep, search.tuner_trials)' if args.product else ''}; driver RSS before "
          f"ray.init {rss_start / MIB:.0f} MiB", file=out)  # fmt: skip
    print(f"{'trials':>6} {'RSS MiB':>9} {'change':>8} {'s/trial':>8} "
          f"{'overhead s/tr':>13} {'Ray MiB':>9}  Ray processes > 20 MiB", file=out)
    try:
        with tempfile.TemporaryDirectory() as results:
            store = product["ResultStore"](results, "soak")
            started = time.perf_counter()
            if args.product:
                with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                    _run_product(args, results, probe)
            else:  # the Tuners built here, as run_sweep builds them
                for done in range(0, args.trials, segment):
                    tuner = product["build_tuner"](
                        tune.with_resources(soak_trial, {"cpu": 1}),
                        param_space=param_space,
                        search_alg=ConcurrencyLimiter(
                            OptunaSearch(space=space, metric=names.OBJECTIVE, mode="max",
                                         sampler=optuna.samplers.TPESampler(seed=done)),
                            max_concurrent=args.workers),
                        scheduler=ASHAScheduler(metric=names.VAL_UAR_MEAN, mode="max",
                                                max_t=args.epochs, grace_period=1),
                        num_samples=min(segment, args.trials - done),
                        storage_path=str(Path(results) / "_tune"),
                        max_failures=0,
                        callbacks=[
                            *([] if args.no_store else [product["StoreCallback"](
                                store, param_keys=["lr", "layers"], metric="val_uar",
                                mode="max")]),
                            product["ConsoleCallback"](total=args.trials, already=done,
                                                       mode="max"),
                            probe,
                        ],
                    )  # fmt: skip
                    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                        tuner.fit()  # the console's lines go to /dev/null; the probe's to `out`
                    del tuner
            wall = time.perf_counter() - started
            recorded = store.read_trials()
            epochs = store.read_table("epochs")
    finally:
        ray.shutdown()

    if not args.no_store:
        assert len(recorded) == args.trials, f"the store holds {len(recorded)} of {args.trials}"
    statuses = recorded["status"].value_counts().to_dict()
    slope, r2, first, last = _fit(probe.samples, args.warmup)
    steady = probe.samples[-1][2] - next(t for n, _, t in probe.samples if n == args.warmup)
    print(f"\n{args.trials} trials in {wall:.0f} s; store: {len(recorded)} trial rows {statuses},"
          f" {len(epochs)} epoch rows", file=out)  # fmt: skip
    per_trial = steady / (last - args.warmup)
    print(f"overhead per trial after the warm-up: {per_trial * args.workers:.3f} worker-s "
          f"({per_trial:.3f} s wall)", file=out)  # fmt: skip
    rss_end = probe.samples[-1][1]
    rss_warm = next(rss for n, rss, _ in probe.samples if n == args.warmup)
    print(f"driver RSS: {rss_warm / MIB:.1f} MiB after trial {args.warmup}, {rss_end / MIB:.1f} "
          f"MiB after trial {last}; linear fit over trials {first}..{last}: "
          f"{slope / 1024:+.1f} KiB per trial (R^2 {r2:.2f}), i.e. "
          f"{slope * 10_000 / MIB:+.0f} MiB per 10,000 trials", file=out)  # fmt: skip
    if SNAPSHOT:
        _print_trace(SNAPSHOT[0], out)


if __name__ == "__main__":
    main()
