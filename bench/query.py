"""Query speed of the result store: per-trial files vs compacted, sersweep vs plain pandas.

Builds a synthetic store (default 10,000 trials x 5 members x 20 epochs = 1 M epoch rows) in the
real per-trial layout (one file per trial per table, written atomically as the store does), then
times, side by side in one run, before and after `compact`:
  leaderboard   top-10 trials by objective       vs pd.read_parquet(trials).sort_values().head()
  group-by      objective per model.layers       vs pd.read_parquet(trials).groupby().agg()
  curves        learning curves of 5 trials      vs pd.read_parquet(epochs) filtered + grouped
Each query starts from the files (a fresh `load`); the median of --repeat runs is reported
(--repeat-before runs on the slow per-trial layout).

    python bench/query.py                 # full size
    python bench/query.py --trials 500    # quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator import query  # noqa: E402
from orchestrator.store import resolve, schema, write_table  # noqa: E402

SWEEP = "bench"


def _trial_tables(i: int, members: int, epochs: int) -> dict[str, pa.Table]:
    rng = np.random.default_rng(i)
    tid = f"{i:05d}_{rng.integers(1 << 30):08x}"
    layers, lr = int(rng.integers(1, 7)), float(10 ** rng.uniform(-5, -3))
    best = rng.uniform(0.25, 0.7, members)
    row = {"trial_id": tid, "sweep": SWEEP, "status": "completed", "objective": best.mean(),
           "metric": "val_uar", "mode": "max", "epochs_run": epochs, "members": members,
           "members_collapsed": int((best < 0.27).sum()), "micro_batch": 16, "accumulation": 2,
           "wall_seconds": 100.0, "param.model.layers": layers, "param.train.lr": lr,
           "param.model.pooling": ["max", "mean", "last"][i % 3]}
    for m in schema.BEST_METRICS + schema.TEST_METRICS:
        values = best + rng.normal(0, 0.01, members)
        row[m + "_mean"], row[m + "_std"] = float(values.mean()), float(values.std())
    n = members * epochs
    member = np.repeat(np.arange(members), epochs)
    epoch = np.tile(np.arange(1, epochs + 1), members)
    curve = best[member] * (1 - np.exp(-epoch / 4)) + rng.normal(0, 0.01, n)
    cols = {"trial_id": [tid] * n, "sweep": [SWEEP] * n, "member": member,
            "fold": [f"s{m}" for m in member], "seed": np.zeros(n, dtype=np.int64),
            "epoch": epoch, "train_loss": 1.5 / epoch, "val_loss": 1.6 / epoch + 0.1,
            "val_acc": curve + 0.03, "val_uar": curve, "val_f1_macro": curve - 0.02,
            "val_f1_weighted": curve, "lr": np.full(n, lr), "seconds": np.full(n, 2.0),
            "collapsed": np.zeros(n, dtype=bool), "active": np.ones(n, dtype=bool)}
    member_rows = [{"trial_id": tid, "sweep": SWEEP, "member": m, "fold": f"s{m}", "seed": 0,
                    "best_epoch": epochs, "val_uar": float(best[m]), "test_uar": float(best[m]),
                    "test_confusion": "[[5,1],[1,5]]", "n_test": 12, "collapsed": False}
                   for m in range(members)]
    return {"trials": schema.to_table("trials", [row]),
            "epochs": pa.table(cols, schema=schema.EPOCHS_SCHEMA),
            "members": schema.to_table("members", member_rows)}


def _write_range(args: tuple[str, int, int, int, int]) -> None:
    sweep_dir, start, stop, members, epochs = args
    fs, path = resolve(sweep_dir)
    for i in range(start, stop):
        tables = _trial_tables(i, members, epochs)
        tid = tables["trials"]["trial_id"][0].as_py()
        for name, table in tables.items():
            write_table(fs, f"{path}/{name}/{tid}.parquet", table)


def generate(sweep_dir: str, trials: int, members: int, epochs: int, workers: int) -> float:
    started = time.perf_counter()
    for name in schema.TABLES:
        os.makedirs(os.path.join(sweep_dir, name), exist_ok=True)
    step = max(1, trials // (workers * 8))
    chunks = [(sweep_dir, s, min(s + step, trials), members, epochs)
              for s in range(0, trials, step)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_range, chunks))
    return time.perf_counter() - started


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def queries(sweep_dir: str, ids: list[str]) -> dict[str, tuple[Callable, Callable]]:
    trials_dir, epochs_dir = os.path.join(sweep_dir, "trials"), os.path.join(sweep_dir, "epochs")

    def pd_leader() -> pd.DataFrame:
        return pd.read_parquet(trials_dir).sort_values("objective", ascending=False).head(10)

    def pd_group() -> pd.DataFrame:
        frame = pd.read_parquet(trials_dir)
        return frame.groupby("param.model.layers")["objective"].agg(["count", "mean", "std",
                                                                    "max"])

    def pd_curves() -> pd.DataFrame:
        frame = pd.read_parquet(epochs_dir)
        frame = frame[frame["trial_id"].isin(ids)]
        return frame.groupby(["trial_id", "epoch"])[["val_uar", "val_loss"]].agg(["mean", "std"])

    return {
        "leaderboard top-10": (lambda: query.leaderboard(query.load(sweep_dir), top=10),
                               pd_leader),
        "group-by model.layers": (lambda: query.group_by(query.load(sweep_dir),
                                                         "model.layers"), pd_group),
        "curves of 5 trials": (lambda: query.curves(query.load(sweep_dir), ids), pd_curves),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3, help="runs per query (compacted)")
    parser.add_argument("--repeat-before", type=int, default=1,
                        help="runs per query on the per-trial layout (slow at full size)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--dir", default=None, help="where to build the store (default: tmp)")
    args = parser.parse_args(argv)
    base = args.dir or tempfile.mkdtemp(prefix="sersweep-bench-")
    sweep_dir = os.path.join(base, SWEEP)
    try:
        print(f"generating {args.trials} trials x {args.members} members x {args.epochs} epochs "
              f"({args.trials * args.members * args.epochs:,} epoch rows, {3 * args.trials:,} "
              f"files) in {sweep_dir} ...", flush=True)
        seconds = generate(sweep_dir, args.trials, args.members, args.epochs, args.workers)
        print(f"  wrote the per-trial layout in {seconds:.1f} s "
              f"({seconds / (3 * args.trials) * 1e3:.2f} ms per file)", flush=True)
        ids = sorted(query.load(sweep_dir).trials["trial_id"])[:: max(1, args.trials // 5)][:5]
        rows = {}
        for name, (ours, plain) in queries(sweep_dir, ids).items():
            rows[name] = [timed(ours, args.repeat_before)[0], timed(plain, args.repeat_before)[0]]
        started = time.perf_counter()
        merged = query.compact(sweep_dir)
        compact_s = time.perf_counter() - started
        print(f"  compacted {merged} in {compact_s:.1f} s", flush=True)
        for name, (ours, plain) in queries(sweep_dir, ids).items():
            rows[name] += [timed(ours, args.repeat)[0], timed(plain, args.repeat)[0]]
        print_table(rows)
        slow = [n for n, r in rows.items() if r[2] > 1.0]
        print("goal (<= 1 s after compaction): " + ("met" if not slow else f"MISSED: {slow}"))
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def print_table(rows: dict[str, list[float]]) -> None:
    head = (f"{'query':<24}{'per-trial':>11}{'pandas':>9}{'pd/ours':>9}"
            f"{'compacted':>11}{'pandas':>9}{'pd/ours':>9}{'speed-up':>10}")
    print(head)
    print("-" * len(head))
    for name, (ours0, pd0, ours1, pd1) in rows.items():
        print(f"{name:<24}{ours0:>10.3f}s{pd0:>8.3f}s{pd0 / ours0:>8.2f}x"
              f"{ours1:>10.3f}s{pd1:>8.3f}s{pd1 / ours1:>8.2f}x{ours0 / ours1:>9.1f}x")
    print("per-trial/compacted: seconds of sersweep's query; pandas: pd.read_parquet of the "
          "folder + the same query; pd/ours > 1: sersweep faster; speed-up: from compaction")


if __name__ == "__main__":
    sys.exit(main())
