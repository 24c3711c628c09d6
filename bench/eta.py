"""The console's ETA against the time that really remained (#24: "within 1.5x of the real
remaining time after the first two trials end, measured on the demo").

Runs the demo sweep as a user does (`python sweep.py search_spaces/transformer.yaml` with a fresh
results folder under /tmp), its console read through a pipe (the plain-log mode: one line per
event, a status line after every trial end), each line stamped when it arrives. The search ends
at the end line of its last trial (`end [N/N]` or `FAIL [N/N]`; the confirmation that follows
has its own console and ETA). For every trial end k >= 2, the ETA of the status line printed
right after it is compared with the time from that line to the search's end:

    after end  ETA printed   remaining   ETA / remaining
    2/8        3m10s         2m48s       1.13

and the same for every epoch line after the 2nd end (summarised: median, min, max), then the
verdict: the ratios after the 2nd end within [1/1.5, 1.5] or not. The load average (os.getloadavg)
is printed at the start and the end: on a shared machine the epoch rate changes with it.

    python bench/eta.py [--space search_spaces/transformer.yaml] [--log out.txt] [-- ARGS...]
    python bench/eta.py --replay out.txt [-- ARGS...]

ARGS go to sweep.py as they are (e.g. `-- --trials 6 --set data.use_folds=2` for a shorter run);
--log keeps the whole console (what a newcomer sees: its first lines and the leaderboard) and,
beside it, every line with its time (`out.txt.stamped.tsv`). --replay runs nothing: it feeds
the recorded starts, epochs and ends, at their recorded times, to THIS checkout's console
(orchestrator.console.sweep_console, the one runner.run_sweep builds) and prints its ETA beside
the one the run printed, so two estimators are compared on the same run (on a shared machine
two runs never see the same load). An older checkout's console is replayed with PYTHONPATH
pointing at it (`git archive COMMIT orchestrator trainables | tar -x -C /tmp/old`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1.5  # the goal: ETA / remaining within [1 / TOLERANCE, TOLERANCE]
_ETA = re.compile(r"ETA ~(?P<eta>(?:\d+h)?(?:\d+m)?(?:\d+s)?)\s*$")
_END = re.compile(r"^(?:end|FAIL)\s+\[(?P<done>\d+)/(?P<total>\d+)\]")
_PART = re.compile(r"(\d+)([hms])")


def parse_duration(text: str) -> float:
    """`1h04m` / `13m32s` / `41s` (console._duration's output) -> seconds."""
    scale = {"h": 3600, "m": 60, "s": 1}
    return float(sum(int(n) * scale[unit] for n, unit in _PART.findall(text)))


@dataclass(frozen=True)
class Line:
    at: float  # seconds since the sweep started
    text: str


def stamped(log: Path) -> Path:
    """Where the stamped console of `log` is kept: `<log>.stamped.tsv` (seconds TAB line)."""
    return log.with_name(log.name + ".stamped.tsv")


def run_sweep(space: str, results: str, extra: list[str], log: Path | None) -> list[Line]:
    """The sweep's console, line by line, stamped on arrival (stderr folded in); with `log`,
    written there as it comes (plain, and stamped beside it for --replay)."""
    command = [sys.executable, "sweep.py", space, "--results", results, *extra]
    print("running:", " ".join(command), flush=True)
    began = time.monotonic()
    lines: list[Line] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with contextlib.ExitStack() as files, subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1, env=env) as proc:
        plain = files.enter_context(log.open("w")) if log is not None else None
        times = files.enter_context(stamped(log).open("w")) if log is not None else None
        assert proc.stdout is not None
        for text in proc.stdout:
            line = Line(time.monotonic() - began, text.rstrip("\n"))
            lines.append(line)
            print(f"{line.at:7.1f}s | {line.text}", flush=True)
            if plain is not None and times is not None:
                plain.write(line.text + "\n")
                times.write(f"{line.at:.3f}\t{line.text}\n")
                plain.flush()
                times.flush()
    if proc.returncode != 0:
        sys.exit(f"sweep.py exited {proc.returncode}")
    return lines


def search_end(lines: list[Line]) -> tuple[float, int]:
    """(time of the search's last trial end, number of search trials)."""
    for line in lines:
        match = _END.match(line.text)
        if match and match["done"] == match["total"]:
            return line.at, int(match["total"])
    sys.exit("no `end [N/N]` line: the search did not finish")


def eta_points(lines: list[Line], end_at: float, total: int) -> tuple[list[tuple], list[float]]:
    """[(k, ETA, remaining)] for the status line after each trial end k >= 2 of the search, and
    the ratios ETA / remaining of every epoch line after the 2nd end."""
    ends, epochs, done = [], [], 0
    for i, line in enumerate(lines):
        if line.at >= end_at and done >= total:
            break
        match = _END.match(line.text)
        if match:
            done = int(match["done"])
            status = next((x for x in lines[i + 1:i + 3] if x.text.startswith("       running")),
                          None)
            eta = _ETA.search(status.text) if status is not None else None
            if done >= 2 and done < total and eta:
                ends.append((done, parse_duration(eta["eta"]), end_at - status.at))
            continue
        eta = _ETA.search(line.text)
        if done >= 2 and line.text.startswith("epoch") and eta and end_at > line.at:
            epochs.append(parse_duration(eta["eta"]) / (end_at - line.at))
    return ends, epochs


_START = re.compile(r"^start\s+#\d+/\d+ (?P<id>\S+)")
_EPOCH = re.compile(r"^epoch\s+(?P<id>\S+) (?P<epoch>\d+)/(?P<of>\d+)\s")
_ENDED = re.compile(r"^(?:end|FAIL)\s+\[\d+/\d+\] (?P<id>\S+) (?P<status>\S+)")
_CPUS = re.compile(r"^cluster: .*?(?P<cpus>\d+) CPUs")


def replay(lines: list[Line], space: str, extra: list[str]) -> list[Line]:
    """The search's console lines of a recorded run replayed through THIS checkout's console
    (orchestrator.console.sweep_console, as runner.run_sweep builds it), on the recorded clock:
    the same events at the same times, the ETA of the code under test after each trial end.
    Returns the status lines the replayed console would have printed after each end."""
    from types import SimpleNamespace

    import orchestrator.console as console
    from orchestrator.sweepfile import add_spec_arguments, load_spec_from_args
    from trainables import names

    spec_args = argparse.ArgumentParser()  # sweep.py's own: --trials, --epochs, --set
    add_spec_arguments(spec_args)
    spec_args.add_argument("--results")
    spec = load_spec_from_args(spec_args.parse_known_args([str(ROOT / space), *extra])[0])
    cpus = next((int(m["cpus"]) for x in lines if (m := _CPUS.match(x.text))), 1)
    clock = [0.0]
    console.time = SimpleNamespace(monotonic=lambda: clock[0])  # the recorded clock
    out = io.StringIO()
    if hasattr(console, "sweep_console"):
        view = console.sweep_console(spec, recorded=0, stream=out,
                                     concurrency=spec.search.max_concurrent or max(
                                         1, int(cpus // spec.resources.cpus_per_trial)))
    else:  # a checkout from before sweep_console: its console as runner.run_sweep built it
        view = console.ConsoleCallback(total=spec.search.trials, already=0,
                                       mode=spec.search.mode, metric=spec.search.metric,
                                       epochs=int(spec.train["epochs"]), stream=out)
    ends = {m["id"]: m["status"] for x in lines if (m := _ENDED.match(x.text))}
    last_epoch: dict[str, int] = {}
    for x in lines:
        if (m := _EPOCH.match(x.text)) is not None:
            last_epoch[m["id"]] = int(m["epoch"])
    trials: dict[str, SimpleNamespace] = {}
    replayed, done = [], 0
    for x in lines:
        clock[0] = x.at
        if (m := _START.match(x.text)) is not None:
            trials[m["id"]] = SimpleNamespace(trial_id=m["id"], config={})
            view.on_trial_start(0, [], trials[m["id"]])
        elif (m := _EPOCH.match(x.text)) is not None and m["id"] in trials:
            epoch = int(m["epoch"])
            completed = ends.get(m["id"]) == "completed" and epoch == last_epoch[m["id"]]
            view.on_trial_result(0, [], trials[m["id"]], {
                names.EPOCH: epoch, names.DONE: completed, "done": " pruned" in x.text})
        elif (m := _ENDED.match(x.text)) is not None and m["id"] in trials:
            if m["status"] not in ("completed", "pruned", "collapsed"):
                view.on_trial_result(0, [], trials[m["id"]], {names.ERROR_REASON: m["status"]})
            view.on_trial_complete(0, [], trials[m["id"]])
            done += 1
            replayed.append(Line(x.at, f"end    [{done}/{spec.search.trials}] {m['id']}"))
            replayed.append(Line(x.at, f"       {view._status_text()}"))
            if done >= spec.search.trials:
                break
    return replayed


def read_stamped(path: Path) -> list[Line]:
    """A console written by run_sweep's `log` (stamped beside it)."""
    out = []
    for row in stamped(path).read_text().splitlines():
        at, _, text = row.partition("\t")
        out.append(Line(float(at), text))
    return out


def report(lines: list[Line], end_at: float, total: int, title: str) -> bool:
    """Print the table and two verdicts: the goal's (the ETA printed right after the 2nd trial
    end) and every later trial end's (near the end the ratios are of a minute or two, and a
    last trial larger than the ones before moves them most). True when the goal's is inside."""
    ends, epochs = eta_points(lines, end_at, total)
    print(f"\n{title}")
    print(f"{'after end':>10}  {'ETA printed':>11}  {'remaining':>9}  ETA / remaining")
    for done, eta, remaining in ends:
        print(f"{f'{done}/{total}':>10}  {eta:>10.0f}s  {remaining:>8.0f}s  {eta / remaining:.2f}")
    ratios = [eta / remaining for _, eta, remaining in ends]
    if epochs:
        print(f"epoch lines after the 2nd end: {len(epochs)}, ETA / remaining median "
              f"{statistics.median(epochs):.2f}, min {min(epochs):.2f}, max {max(epochs):.2f}")
    if not ratios:
        print("no ETA after the 2nd trial end")
        return False
    def verdict(values: list[float]) -> str:
        inside = all(1 / TOLERANCE <= r <= TOLERANCE for r in values)
        return ("inside" if inside else "OUTSIDE") + f" [1/{TOLERANCE:g}, {TOLERANCE:g}]"

    print(f"after the 2nd end (the goal): ETA / remaining {ratios[0]:.2f}: {verdict(ratios[:1])};"
          f" at all {len(ratios)} trial ends from it in [{min(ratios):.2f}, {max(ratios):.2f}]: "
          f"{verdict(ratios)}")
    return 1 / TOLERANCE <= ratios[0] <= TOLERANCE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="search_spaces/transformer.yaml")
    parser.add_argument("--results", default=None, help="results root (default: a new /tmp dir)")
    parser.add_argument("--log", type=Path, default=None, help="write the whole console here")
    parser.add_argument("--replay", type=Path, default=None, metavar="LOG",
                        help="no run: replay the --log of an earlier run through this "
                             "checkout's console and compare its ETA with the one printed")
    parser.add_argument("extra", nargs="*", help="after --: arguments for sweep.py")
    args = parser.parse_args(argv)
    if args.replay is not None:
        lines = read_stamped(args.replay)
        end_at, total = search_end(lines)
        live = report(lines, end_at, total, f"recorded run ({args.replay}): the ETA it printed")
        here = report(replay(lines, args.space, args.extra), end_at, total,
                      "the same events replayed through this checkout's console")
        print(f"\nrecorded: {'inside' if live else 'OUTSIDE'}; this checkout: "
              f"{'inside' if here else 'OUTSIDE'}")
        return 0
    results = args.results or tempfile.mkdtemp(prefix="eta_bench_")
    load_before = os.getloadavg()
    lines = run_sweep(args.space, results, args.extra, args.log)
    load_after = os.getloadavg()
    end_at, total = search_end(lines)
    print(f"\nsearch: {total} trials, ended at {end_at:.0f}s; load average (1/5/15 min) "
          f"before {'/'.join(f'{x:.1f}' for x in load_before)}, after "
          f"{'/'.join(f'{x:.1f}' for x in load_after)} on {os.cpu_count()} CPUs")
    report(lines, end_at, total, "the ETA the console printed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
