"""The command line: `sweep.py SPACE.yaml`, `sweep.py plan|results|report ...`.

Exit codes: 0 done, 1 the sweep ran but trials failed, 2 bad input (nothing written).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from trainables.errors import SersweepError

SUBCOMMANDS = ("plan", "results", "report")
EXIT_OK, EXIT_TRIALS_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweep.py",
        description="Run a hyper-parameter sweep from one YAML file. "
        "Other commands: `sweep.py plan SPACE.yaml`, `sweep.py results DIR`, "
        "`sweep.py report DIR`.",
    )
    parser.add_argument("space", help="sweep file, e.g. search_spaces/transformer.yaml")
    _add_spec_arguments(parser)
    parser.add_argument("--results", default=None, help="results root (path or URI)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the sweep recorded under --results"
    )
    parser.add_argument("--address", default=None, help="Ray cluster address (or RAY_ADDRESS)")
    parser.add_argument("--verbose", action="store_true", help="show Ray Tune's own logs")
    return parser


def _add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=None, help="override search.trials")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any value by dotted key, e.g. --set train.lr=1e-3 (repeatable)",
    )


def _load(args: argparse.Namespace):
    from orchestrator.spec import load_spec

    return load_spec(
        args.space, overrides=args.overrides, trials=args.trials, epochs=args.epochs
    )


def _cmd_run(argv: Sequence[str]) -> int:
    from orchestrator import query
    from orchestrator.runner import run_sweep
    from orchestrator.store import ResultStore

    args = _run_parser().parse_args(argv)
    spec = _load(args)
    results_root = args.results or spec.results or "results"
    store = ResultStore(results_root, spec.name)
    if not args.resume and store.completed_trial_ids():
        print(
            f"{store.sweep_dir} already holds results of sweep {spec.name!r}: continuing it "
            "(as --resume would). Use --results or another `name:` for a fresh sweep."
        )
    outcome = run_sweep(
        spec, results_root=results_root, address=args.address, verbose=args.verbose
    )
    print(
        f"\nsweep {spec.name}: {outcome.trials_run} trials run, "
        f"{outcome.trials_recorded} recorded, {outcome.failed} failed, "
        f"{outcome.wall_seconds:.0f} s -> {outcome.sweep_dir}"
    )
    results = query.load(outcome.sweep_dir)
    if len(results.trials):
        print(query.format_frame(query.leaderboard(results, top=10), "table"))
    return EXIT_TRIALS_FAILED if outcome.failed else EXIT_OK


def _cmd_plan(argv: Sequence[str]) -> int:
    from orchestrator.plan_cli import run_plan

    parser = argparse.ArgumentParser(
        prog="sweep.py plan", description="Show the memory plan of sampled configs, no training."
    )
    parser.add_argument("space")
    _add_spec_arguments(parser)
    parser.add_argument("--samples", type=int, default=8, help="configs to sample")
    parser.add_argument(
        "--gpu-memory",
        default=None,
        help="plan for a GPU of this size (e.g. 80GiB) instead of this machine's",
    )
    args = parser.parse_args(argv)
    return run_plan(_load(args), samples=args.samples, gpu_memory=args.gpu_memory)


def _cmd_results(argv: Sequence[str]) -> int:
    from orchestrator import query

    parser = argparse.ArgumentParser(prog="sweep.py results", description="Query a result store.")
    query.add_results_arguments(parser)
    return query.run_results(parser.parse_args(argv))


def _cmd_report(argv: Sequence[str]) -> int:
    from orchestrator import report

    parser = argparse.ArgumentParser(prog="sweep.py report", description="Write the HTML report.")
    report.add_report_arguments(parser)
    return report.run_report(parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    commands = {"plan": _cmd_plan, "results": _cmd_results, "report": _cmd_report}
    command = commands.get(argv[0]) if argv else None
    try:
        if command is not None:
            return command(argv[1:])
        return _cmd_run(argv)
    except SersweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: finished trials are in the store; rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
