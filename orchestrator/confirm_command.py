"""The confirm subcommand: `sweep.py confirm RESULTS_DIR_OR_SPACE [--top K] [--seeds S]` retrains
the finalists of a recorded sweep with fresh seeds (orchestrator/confirm.py), through
runner.run_sweep (`confirm_only`), under the sweep's driver lock."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.confirm import summary_lines
from orchestrator.store import ResultStore
from trainables.config import CONFIRM, defaults

DESCRIPTION = ("Retrain the best configurations of a recorded sweep with fresh seeds (its "
               "search.confirm, or --top / --seeds) and print each one's confirmed value and "
               "selection optimism. Confirmations already recorded are not rerun.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", metavar="RESULTS_DIR_OR_SPACE",
                        help="a sweep's results folder (results/<name>) or its sweep file")
    parser.add_argument("--results", default=None,
                        help="results root, when a sweep file is given (path or URI)")
    parser.add_argument("--top", type=int, default=None,
                        help="finalists to confirm (default: search.confirm's, else 3)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="fresh seeds per finalist (default: search.confirm's, else 2)")
    parser.add_argument("--address", default=None, help="Ray cluster address (or RAY_ADDRESS)")
    parser.add_argument("--verbose", action="store_true", help="show Ray Tune's own logs")
    parser.add_argument("--break-lock", action="store_true",
                        help="take the sweep's driver lock even though its holder looks alive")


def run(args: argparse.Namespace) -> int:
    """`sweep.py confirm DIR`: confirm the finalists of a recorded sweep (its spec.yaml)."""
    from orchestrator.cluster import results_root_for
    from orchestrator.store import SweepLock
    from orchestrator.sweepfile import SpecError, load_spec
    from trainables.errors import SersweepError

    given = Path(args.sweep).expanduser()
    if given.is_dir():
        spec_file = given / "spec.yaml"
        if not spec_file.is_file():
            raise SpecError(str(given), None, "no spec.yaml here: expected a sweep's results "
                            "folder (results/<name>) or a sweep file")
        spec = load_spec(spec_file)
        results_root = results_root_for(args.results or str(given.resolve().parent))
    else:
        spec = load_spec(given)
        results_root = results_root_for(args.results or spec.results or "results")
    settings = dict(spec.search.confirm or defaults(CONFIRM))
    for key in ("top", "seeds"):
        value = getattr(args, key)
        if value is not None:
            if value < (0 if key == "top" else 1):
                raise SersweepError(f"--{key}: expected an integer >= "
                                    f"{0 if key == 'top' else 1}, but got {value}")
            settings[key] = value
    store = ResultStore(results_root, spec.name)
    if not store.completed_trial_ids():
        raise SersweepError(f"confirm: no recorded trials of sweep {spec.name!r} in "
                            f"{store.sweep_dir}")
    from orchestrator.runner import run_sweep

    lock = SweepLock(store.sweep_dir, break_lock=args.break_lock).acquire()
    try:
        outcome = run_sweep(spec, results_root=results_root, address=args.address,
                            verbose=args.verbose, lock=lock, confirm_only=settings)
    finally:
        lock.release()
    lock.check()
    lines = summary_lines(store.read_trials(), spec.search.mode, spec.search.metric)
    print("\n".join(lines) if lines else "confirm: nothing confirmed (no finalist that may rank)")
    return 1 if outcome.failed else 0
