"""One sersweep trial vs a bare PyTorch loop of the same work: total CPU-seconds side by side.

(a) `python sweep.py SPACE --trials 1` (the search space's default model, `--epochs` epochs,
    `--folds` folds x 1 seed = the members, no scheduler, no baseline), a fresh results folder,
    the data cache warm: everything the command costs, the driver, Ray's daemons and the trial's
    worker (every process below it, read from /proc every 0.2 s);
(b) a bare loop in a fresh `python` process: the same config (the trial's `config_json` from the
    store), the same prepared data (from the same cache), the same members in lock-step
    (trainables.train.LockstepTrainer, what the trial runs), one `run_epoch` per epoch, no Ray,
    no Tune, no store, no checkpoint; OMP_NUM_THREADS = the sweep's cpus_per_trial (1), as Ray
    sets it for the trial's worker (torch's default, one thread per core, spins on a shared
    machine and would make the loop the costlier arm).
Both measured the same way (CPU of the process tree), both including Python's start and imports.

    ratio = CPU (a) / CPU (b)          goal <= 1.15 (issue 25: 1.44-1.5 before)

    python bench/plain_loop.py [--space search_spaces/transformer.yaml] [--epochs 3] [--folds 2]
    python bench/plain_loop.py ... --address HOST:PORT   # (a) joins a running `ray start --head`

A warm-up sweep first fills the data cache (and the OS's file cache) for both arms
(`--no-warmup` when the cache is warm already).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")

PLAIN = """
import json, sys, time
t0 = time.perf_counter()
from trainables.data import prepare_data
from trainables.train import LockstepTrainer
from trainables.trial_config import TrialConfig
config = TrialConfig.from_dict(json.loads(sys.argv[1]))
data = prepare_data(config.data.as_dict())
trainer = LockstepTrainer(config, data)
while not trainer.finished:
    trainer.run_epoch()
print(json.dumps({"epochs": trainer.epoch, "members": len(trainer.members),
                  "wall": time.perf_counter() - t0}))
"""


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU-seconds user + system) of a live process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def _title(pid: int) -> str:
    """The process' command line as it names itself now (Ray workers retitle themselves:
    `ray::IDLE`, `ray::ImplicitFunc.train`)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


# Which part of a sersweep run a process is, from its command line (first match wins).
ROLES = (
    ("trial worker", ("ray::ImplicitFunc", "ray::_Inner", "ray::train_trial")),
    ("Ray worker, never ran a task", ("ray::IDLE", "default_worker.py")),
    ("Ray GCS server", ("gcs_server",)),
    ("Ray raylet", ("raylet/raylet",)),
    ("Ray API server (dashboard.py)", ("dashboard/dashboard.py",)),
    ("Ray dashboard agent", ("DashboardAgent", "dashboard/agent.py")),
    ("Ray runtime-env agent", ("RuntimeEnvAgent", "runtime_env/agent")),
    ("Ray log monitor", ("log_monitor.py",)),
    ("Ray autoscaler monitor", ("monitor.py",)),
)


def role(title: str) -> str:
    """The ROLES name of a process title; `other` when none matches."""
    for name, needles in ROLES:
        if any(needle in title for needle in needles):
            return name
    return "other"


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, float, str,
                                                                  dict[str, float]]:
    """(CPU-seconds of the whole process tree, wall seconds, stdout, CPU-seconds by role) of
    `command`; the root process is the role `driver`, the others by `role` of the last title
    that was not `ray::IDLE` (a trial worker goes back to IDLE when its actor ends). A process
    is counted at its last sample (<= 0.2 s before it exits); reparented daemons are followed
    by the pids seen below the root once."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
        tree, cpu, titles = {proc.pid}, {}, {}
        while proc.poll() is None:
            stats = {}
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and (found := _stat(int(entry.name))) is not None:
                    stats[int(entry.name)] = found
            grew = True
            while grew:  # descendants (and processes once seen below the root)
                new = {pid for pid, (parent, _) in stats.items() if parent in tree} - tree
                tree |= new
                grew = bool(new)
            for pid in tree:
                if pid in stats:
                    cpu[pid] = stats[pid][1]
                    title = _title(pid)
                    if title and (pid not in titles or "ray::IDLE" not in title):
                        titles[pid] = title
            time.sleep(0.2)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {proc.returncode}:\n{text[-3000:]}")
    roles: dict[str, float] = {}
    for pid, seconds in cpu.items():
        name = "driver" if pid == proc.pid else role(titles.get(pid, ""))
        roles[name] = roles.get(name, 0.0) + seconds
    return sum(cpu.values()), wall, text, roles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="search_spaces/transformer.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--address", default=None, help="run (a) on this running Ray head")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the warm-up sweep (the data cache is warm already)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        sweep = [sys.executable, "sweep.py", args.space, "--trials", "1",
                 "--epochs", str(args.epochs), "--set", f"data.use_folds={args.folds}",
                 "--set", "train.seeds=[0]", "--set", "search.baseline=false",
                 "--set", "search.scheduler=none", "--set", "name=plain_loop"]
        sweep += ["--address", args.address] if args.address else []
        if not args.no_warmup:
            run_measured([*sweep, "--results", f"{tmp}/warm"], env)  # warm caches
        cpu_a, wall_a, _, roles_a = run_measured([*sweep, "--results", f"{tmp}/a"], env)
        print(f"(a) {cpu_a:.1f} CPU-s, {wall_a:.1f} s", flush=True)
        import pandas as pd

        (config_text,) = pd.read_parquet(f"{tmp}/a/plain_loop/trials").config_json
        cpu_b, wall_b, text, _ = run_measured([sys.executable, "-c", PLAIN, config_text],
                                           {**env, "OMP_NUM_THREADS": "1"})
    plain = json.loads(text.strip().splitlines()[-1])
    config = json.loads(config_text)
    print(f"{args.space}: model {config['model']['name']}, {plain['epochs']} epochs, "
          f"{plain['members']} members (folds x seeds), batch {config['train']['batch_size']}; "
          f"{os.cpu_count()} CPUs" + (f"; Ray head {args.address}" if args.address else ""))
    print(f"{'arm':<40} {'CPU s':>7} {'wall s':>7}")
    print(f"{'(a) sersweep, one trial (whole command)':<40} {cpu_a:>7.1f} {wall_a:>7.1f}")
    print(f"{'(b) bare PyTorch loop (LockstepTrainer)':<40} {cpu_b:>7.1f} {wall_b:>7.1f}")
    for name, seconds in sorted(roles_a.items(), key=lambda item: -item[1]):
        print(f"    {name:<36} {seconds:>7.1f}")
    ratio = cpu_a / cpu_b
    print(f"CPU ratio a/b {ratio:.2f} (goal <= 1.15: {'met' if ratio <= 1.15 else 'missed'}); "
          f"wall ratio {wall_a / wall_b:.2f}")


if __name__ == "__main__":
    main()
