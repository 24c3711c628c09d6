"""A newcomer's first run: seconds from launching `make demo`'s sweep to its first `epoch` line,
on a cold data cache vs a warm one, side by side in one run (issue #25 item 4: goal cold <= 1.5x
warm).

Each round runs `sweep.py search_spaces/transformer.yaml` (the demo) twice, each with its own
fresh results folder, both on one fresh cache folder (`--set data.cache_dir=...`):
  cold: the empty cache (generates the synthetic corpus, featurizes each data variant, computes
        the eGeMAPS baseline: beside the trials since #25.4);
  warm: the same command again on the cache the cold run filled.
A run is stopped (SIGINT to the driver, the sweep's own clean stop) once its first `epoch` line
came and the baseline's cache entry is written, so the warm run finds everything cached. The
wall time of each is from launch to the first line starting with `epoch`. `--code DIR` adds the
same pair for another checkout (e.g. `git archive <commit> | tar -x -C DIR`), measured in the
same round, for a before/after comparison on the same load.

    python bench/cold_start.py [--rounds 1] [--code DIR] [--timeout 900] [--timeline]

Prints per round and arm: cold s, warm s, ratio, and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
DEMO = "search_spaces/transformer.yaml"


def first_epoch_seconds(code: Path, cache: Path, results: Path, timeout: float,
                        timeline: list[str] | None = None) -> float:
    """Launch the demo sweep from `code`; seconds to its first `epoch` line. Then wait for the
    baseline's cache entry (at most `timeout`) and stop the run with SIGINT. `timeline` gets
    each output line up to the first `epoch` line, stamped with its second."""
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "sweep.py", DEMO, "--results", str(results),
           "--set", f"data.cache_dir={cache}"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = threading.Event()
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if timeline is not None and not seen.is_set():
                timeline.append(f"{time.monotonic() - start:6.1f} s  {line.rstrip()[:100]}")
            if line.lstrip().startswith("epoch") and not seen.is_set():
                lines.append(f"[{time.monotonic() - start:.1f} s]\n")
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not seen.wait(timeout):
        proc.kill()
        raise SystemExit(f"{code}: no `epoch` line within {timeout:.0f} s; output:\n"
                         + "".join(lines[-30:]))
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + timeout
    while not list((cache / "baseline").glob("result_*.parquet")) and proc.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return elapsed


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--code", type=Path, action="append", default=[],
                        help="another checkout to measure in the same rounds (repeatable)")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--timeline", action="store_true",
                        help="print each run's output up to its first epoch line, timed")
    args = parser.parse_args()
    arms = {"this": HERE, **{str(c): c.resolve() for c in args.code}}
    ratios: dict[str, list[float]] = {name: [] for name in arms}
    print(f"cores {os.cpu_count()}, load average {load()} (1/5/15 min)")
    print(f"{'round':>5}  {'code':<40} {'cold s':>8} {'warm s':>8} {'cold/warm':>10}  load")
    for r in range(1, args.rounds + 1):
        for name, code in arms.items():
            scratch = Path(tempfile.mkdtemp(prefix="cold_start_"))
            lines: dict[str, list[str]] = {"cold": [], "warm": []}
            try:
                cold = first_epoch_seconds(code, scratch / "cache", scratch / "cold",
                                           args.timeout, lines["cold"])
                warm = first_epoch_seconds(code, scratch / "cache", scratch / "warm",
                                           args.timeout, lines["warm"])
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            if args.timeline:
                for run, stamped in lines.items():
                    print(f"--- round {r}, {name}, {run}:", *stamped, sep="\n", flush=True)
            ratios[name].append(cold / warm)
            print(f"{r:>5}  {name[-40:]:<40} {cold:8.1f} {warm:8.1f} {cold / warm:10.2f}  "
                  f"{load()}", flush=True)
    for name, values in ratios.items():
        print(f"{name}: median cold/warm {statistics.median(values):.2f} over {len(values)} "
              f"round(s) (goal <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
