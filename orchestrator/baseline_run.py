"""The sweep's reference baseline (trainables/egemaps_baseline.py: eGeMAPS functionals +
standardized
logistic regression, on the sweep's own members) written to results/<sweep>/baseline.parquet, and
the `baseline` subcommand (`sweep.py baseline SPACE.yaml`: add_arguments + run).

A sweep also computes it beside its first trials when `search.baseline` is true (the default;
start_sweep_baseline, waited for before the leaderboard): the result
is cached per data config and fold protocol (under `<data.cache_dir>/baseline/`), so after the
first run of a corpus it costs a file read; the first run pays openSMILE once per utterance
(about 15 s for the 80-utterance test corpus on a loaded 2-core machine). The leaderboard
(query.leaderboard) shows it as a reference row and every trial's fold-paired difference to it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch, via trainables.egemaps_baseline: imported in the functions that need it
    import pandas as pd

    from orchestrator.sweepfile import SweepSpec
    from trainables.data import PreparedData

DESCRIPTION = ("Compute the sweep's reference baseline (eGeMAPS functionals + standardized "
               "logistic regression) on the sweep's own folds and seeds; writes "
               "results/<sweep>/baseline.parquet, which `sweep.py results` then shows.")


def write_sweep_baseline(
    spec: SweepSpec,
    sweep_dir: str,
    data: PreparedData | None = None,
    progress: Callable[[str], None] | None = print,
) -> tuple[str, pd.DataFrame]:
    """Run (or read from the cache) the baseline of `spec`'s data and members and write it to
    `sweep_dir`/baseline.parquet. Returns (path written, the per-member frame).

    One baseline per data variant: the sweep file's own data section (`data_variant` null) and,
    when the sweep searches data.* choices that change what the baseline sees (not only the
    network's front-end), each such combination (`data_variant` = query.baselines.variant_key of
    its choices), so a trial is compared with the baseline of its own data."""
    import pandas as pd

    from orchestrator.query.baselines import DATA_VARIANT, variant_key
    from orchestrator.store.baseline_table import write_baseline
    from trainables.egemaps_baseline import corpus_config, run_baseline

    base = spec.base_config()
    frames = [run_baseline(base["data"], base["train"], data=data, progress=progress)
              .assign(**{DATA_VARIANT: None})]  # null: the sweep file's own data
    seen = [corpus_config(base["data"])]
    for choices, variant in searched_data_choices(spec):
        if corpus_config(variant) in seen:  # the baseline sees the same data: the base rows
            continue
        seen.append(corpus_config(variant))
        frame = run_baseline(variant, base["train"], progress=progress)
        frames.append(frame.assign(**{DATA_VARIANT: variant_key(choices)}))
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frame[DATA_VARIANT] = frame[DATA_VARIANT].astype("str")  # as the store reads it back
    frame.attrs = dict(frames[0].attrs)
    path = write_baseline(frame, sweep_dir)
    if progress is not None:
        progress(f"baseline: {summary_line(frames[0], spec.search.metric)} -> {path}")
    return path, frame


def searched_data_choices(spec: SweepSpec) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(the searched data.* choices {key: value}, the data section they make) per combination
    of the searched data choices; [] when the sweep searches none (runner.data_variants)."""
    import copy
    import itertools

    searched = [p for p in spec.search.params if p.key.startswith("data.")]
    variants = []
    for values in itertools.product(*(p.real_choices() for p in searched)):
        variant = copy.deepcopy(spec.base_config())
        for p, value in zip(searched, values, strict=True):
            *parents, last = p.key.split(".")
            node = variant
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        choices = {p.key: value for p, value in zip(searched, values, strict=True)}
        variants.append((choices, variant["data"]))
    return variants if searched else []


def summary_line(frame: pd.DataFrame, metric: str) -> str:
    """`val_uar 0.612±0.031, test_uar 0.598±0.040 over 10 members (cached)`."""
    from trainables.stats import mean_std

    parts = []
    for column in dict.fromkeys((metric, "test_uar")):
        if column not in frame:
            continue
        mean, std = mean_std(frame[column])
        parts.append(f"{column} {mean:.3f}" + ("" if std != std else f"±{std:.3f}"))
    cached = " (cached)" if frame.attrs.get("cache") == "hit" else ""
    return (f"{', '.join(parts)} over {len(frame)} member{'s' if len(frame) != 1 else ''}"
            f"{cached}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from orchestrator.sweepfile import add_spec_arguments

    add_spec_arguments(parser)
    parser.add_argument("--results", default=None,
                        help="results root (path or URI); default: the sweep file's `results:` "
                             "or results/")


def run(args: argparse.Namespace) -> int:
    """`sweep.py baseline SPACE.yaml`: compute and write the baseline; 0 when written."""
    from orchestrator.cluster import results_root_for
    from orchestrator.store import ResultStore
    from orchestrator.sweepfile import load_spec_from_args

    spec = load_spec_from_args(args)
    root = results_root_for(args.results or spec.results or "results")
    write_sweep_baseline(spec, ResultStore(root, spec.name).sweep_dir)
    return 0


class BaselineRun:
    """The sweep's baseline computed beside its first trials (start_sweep_baseline): a thread
    running write_sweep_baseline whose openSMILE workers are niced (egemaps_baseline.
    in_background), so on a cold cache the trials start without waiting for it. Silent while it
    runs (the console owns the terminal): one line says it started, `wait()` prints its
    result."""

    def __init__(self, spec: SweepSpec, sweep_dir: str, data: PreparedData | None) -> None:
        import threading

        self.metric = spec.search.metric
        self.frame: pd.DataFrame | None = None
        self.path = ""
        self.error: BaseException | None = None
        self._stop = threading.Event()  # set by wait(interrupted=True)
        self._thread = threading.Thread(target=self._run, args=(spec, sweep_dir, data),
                                        name="sersweep-baseline", daemon=True)
        self._thread.start()
        print("baseline: the eGeMAPS reference runs beside the trials; its result comes before "
              "the leaderboard")

    def _run(self, spec: SweepSpec, sweep_dir: str, data: PreparedData | None) -> None:
        from trainables.egemaps_baseline import in_background

        try:
            with in_background(self._stop):
                self.path, self.frame = write_sweep_baseline(spec, sweep_dir, data, None)
        except BaseException as exc:  # noqa: BLE001 - handed to wait(), in the driver's thread
            self.error = exc

    def wait(self, interrupted: bool = False) -> None:
        """Join the thread (at the sweep's end, before the leaderboard reads baseline.parquet);
        a SersweepError is one line (the reference never fails the sweep), anything else is
        raised here. `interrupted` (Ctrl-C / SIGTERM stopped the sweep): its extraction stops
        within a second or so, nothing is written (the workers run in a session of their own,
        out of the terminal's reach: trainables/data/parallel.py)."""
        from concurrent.futures import CancelledError

        from trainables.errors import SersweepError

        if interrupted:
            self._stop.set()
        elif self._thread.is_alive():
            print("baseline: finishing the eGeMAPS reference ...")
        self._thread.join()
        if isinstance(self.error, CancelledError):
            print("baseline: stopped with the sweep; `sweep.py baseline` computes it")
        elif isinstance(self.error, SersweepError):
            print(f"baseline: not computed ({self.error}); `sweep.py baseline` retries it")
        elif self.error is not None:
            raise self.error
        elif self.frame is not None:
            print(f"baseline: {summary_line(self.frame, self.metric)} -> {self.path}")


def start_sweep_baseline(spec: SweepSpec, sweep_dir: str,
                         data: PreparedData | None = None) -> BaselineRun:
    """Start the baseline of `spec` beside the trials; `.wait()` before the leaderboard."""
    return BaselineRun(spec, sweep_dir, data)
