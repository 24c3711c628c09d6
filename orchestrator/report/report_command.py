"""`sweep.py report DIR`: one HTML report per sweep under DIR (add_arguments + run)."""

from __future__ import annotations

import argparse

from orchestrator.query import QueryError, load
from orchestrator.query.results_command import resolve_target
from orchestrator.report.html import write_report

DESCRIPTION = "Write the HTML report of each sweep under a results directory."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a sweep dir, a results root, a URI, or a sweep name")
    parser.add_argument("--out", default=None, help="output folder (default: <sweep>/report)")


def run(args: argparse.Namespace) -> int:
    """The `report` command: one report per sweep found under the target."""
    target = resolve_target(args.target)
    results = load(target)
    if not results.sweeps:
        raise QueryError(f"no sweep results under {target}")
    for name in results.sweeps:
        sweep_dir = target if len(results.sweeps) == 1 else f"{target.rstrip('/')}/{name}"
        out = args.out if len(results.sweeps) == 1 or not args.out else f"{args.out}/{name}"
        print(f"report of {name}: {write_report(sweep_dir, out)}")
    return 0
