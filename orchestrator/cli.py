"""The command line: `sweep.py SPACE.yaml` (run), `sweep.py plan|results|report ...`.

Every subcommand is a module with `DESCRIPTION`, `add_arguments(parser)` and `run(args) -> int`:
run = orchestrator/runner.py, plan = orchestrator/planner.py, results = orchestrator/query/cli.py,
report = orchestrator/report/cli.py. Each is imported only when its command runs.
Exit codes: 0 done, 1 the sweep ran but trials failed, 2 bad input (nothing written).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from trainables.errors import SersweepError

SUBCOMMANDS = ("plan", "results", "report")
EXIT_OK, EXIT_TRIALS_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _command(name: str) -> ModuleType:
    """The module of subcommand `name` ("run" when the first argument is a sweep file)."""
    if name == "plan":
        from orchestrator import planner

        return planner
    if name == "results":
        from orchestrator.query import cli as results

        return results
    if name == "report":
        from orchestrator.report import cli as report

        return report
    from orchestrator import runner

    return runner


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    name = argv[0] if argv and argv[0] in SUBCOMMANDS else "run"
    rest = argv[1:] if name != "run" else argv
    try:
        module = _command(name)
        prog = "sweep.py" if name == "run" else f"sweep.py {name}"
        parser = argparse.ArgumentParser(prog=prog, description=module.DESCRIPTION)
        module.add_arguments(parser)
        return module.run(parser.parse_args(rest))
    except SersweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: finished trials are in the store; rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
