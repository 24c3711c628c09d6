"""The command line: `sweep.py SPACE.yaml` (run), `sweep.py plan|results|report ...`.

Every subcommand is a module with `DESCRIPTION`, `add_arguments(parser)` and `run(args) -> int`:
run = orchestrator/runner.py, plan = orchestrator/planner.py, results =
orchestrator/query/results_command.py,
report = orchestrator/report/report_command.py. Each is imported only when its command runs, and
none
imports torch or Ray at module level: a bad sweep file is reported before either is imported
(tests/orchestrator/test_cli.py checks sys.modules).
Exit codes: 0 done; 1 the sweep ran but trials failed, or `plan`: some config does not fit even
at micro-batch 1; 2 bad input (nothing written); 130 / 143 interrupted (SIGINT / SIGTERM).
The program name is argv[0]'s basename: `sersweep` for the installed script, `sweep.py` for
`python sweep.py`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType

from orchestrator.cluster import usage_stats_off
from trainables.errors import SersweepError

SUBCOMMANDS = ("plan", "results", "report", "baseline", "confirm")
EXIT_OK, EXIT_TRIALS_FAILED, EXIT_BAD_INPUT = 0, 1, 2
PACKAGE = "sersweep"


def package_version() -> str:
    """The installed distribution's version (pyproject.toml via importlib.metadata)."""
    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # run from a checkout that was never `pip install -e .`-ed
        return "unknown (not installed: pip install -e .)"


def program_name(argv0: str | None = None) -> str:
    """`sersweep` or `sweep.py`: how the user started us (argv[0]'s basename)."""
    name = os.path.basename(argv0 if argv0 is not None else (sys.argv[0] or ""))
    return name if name and name not in ("-c", "__main__.py", "cli.py") else PACKAGE


def _command(name: str) -> ModuleType:
    """The module of subcommand `name` ("run" when the first argument is a sweep file)."""
    if name == "plan":
        from orchestrator import planner

        return planner
    if name == "results":
        from orchestrator.query import results_command as results

        return results
    if name == "report":
        from orchestrator.report import report_command as report

        return report
    if name == "baseline":  # orchestrator/baseline_run.py (issue 13: the reference baseline)
        from orchestrator import baseline_run as baseline

        return baseline
    if name == "confirm":  # orchestrator/confirm_command.py (issue 21: confirm the winner)
        from orchestrator import confirm_command

        return confirm_command
    from orchestrator import runner

    return runner


def build_parser(name: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The argparse parser of subcommand `name` ("run" for `sweep.py SPACE.yaml`)."""
    module = _command(name)
    base = prog or program_name()
    parser = argparse.ArgumentParser(
        prog=base if name == "run" else f"{base} {name}", description=module.DESCRIPTION
    )
    parser.add_argument("--version", action="version", version=f"{base} {package_version()}",
                        help="print the version and exit")
    module.add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    usage_stats_off()
    name = argv[0] if argv and argv[0] in SUBCOMMANDS else "run"
    rest = argv[1:] if name != "run" else argv
    try:
        parser = build_parser(name, prog)
        return _command(name).run(parser.parse_args(rest))
    except SersweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: finished trials are in the store; rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
