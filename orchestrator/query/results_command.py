"""`sweep.py results [DIR | SWEEP] [--where ..] [--top N] [--by COL] [--group-by P] [--sql Q]
[--curves ID,..] [--format table|csv|json|parquet] [--columns C,..] [--wide] [--output FILE]
[--compact]`: the subcommand's
`add_arguments` + `run` (orchestrator/cli.py wires every subcommand the same way)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from orchestrator.query.compaction import compact
from orchestrator.query.frames import FORMATS, curves, format_frame, group_by, leaderboard
from orchestrator.query.results import QueryError, load
from orchestrator.query.sql import sql

DESCRIPTION = "Query a result store: leaderboard, group-by, SQL, learning curves."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", nargs="?", default="results",
        help="a sweep dir, a results root, a URI, or a sweep name (= results/<name>)",
    )
    parser.add_argument("--where", default=None,
                        help='SQL boolean over trials columns, by the names the leaderboard '
                             'shows, e.g. "model.layers = 2 AND val_uar > 0.5"')
    parser.add_argument("--top", type=int, default=10, help="rows of the leaderboard")
    parser.add_argument("--by", default=None, help="rank by this column (default: objective)")
    parser.add_argument("--group-by", default=None, metavar="PARAM",
                        help="aggregate per value of a param, e.g. param.model.layers")
    parser.add_argument("--sql", default=None,
                        help="one read-only SELECT over views trials, epochs, members")
    parser.add_argument("--curves", default=None, metavar="ID[,ID...]",
                        help="learning curves (mean/std over members) of these trials")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="output format (default: table)")
    parser.add_argument("--columns", default=None, metavar="COL[,COL...]",
                        help="table: show these columns (names as the table or --wide shows "
                             "them, e.g. trial_id,objective,test_uar,vs_best,model.layers)")
    parser.add_argument("--wide", action="store_true",
                        help="table: every column (default: what fits 120 characters)")
    parser.add_argument("--output", default=None, help="write to FILE instead of stdout")
    parser.add_argument("--compact", action="store_true",
                        help="merge per-trial files into one file per table first")


def resolve_target(target: str) -> str:
    """A path or URI as given, else results/<target> when that sweep exists."""
    if "://" in target or os.path.isdir(target):
        return target
    named = Path("results") / target
    if named.is_dir():
        print(f"{named} (from name {target!r})", file=sys.stderr)  # which folder a name meant
        return str(named)
    raise QueryError(
        f"no results at {target!r}: not a directory, and no sweep {target!r} under results/"
    )


def run(args: argparse.Namespace) -> int:
    """The `results` command; errors raise QueryError (the CLI prints it and exits 2)."""
    target = resolve_target(args.target)
    results = load(target)
    if args.compact:
        merged = compact(target)
        print(f"compacted {', '.join(results.sweeps)}: {merged or 'nothing to merge'}",
              file=sys.stderr)
        results = load(target)
        if not (args.sql or args.group_by or args.curves or args.where or args.by):
            return 0
    if args.sql:
        frame = sql(target, args.sql)
    elif args.group_by:
        frame = group_by(results, args.group_by, by=args.by, where=args.where)
    elif args.curves:
        frame = curves(results, [t.strip() for t in args.curves.split(",") if t.strip()])
    else:
        frame = leaderboard(results, top=args.top, by=args.by, where=args.where)
        if args.format == "table" and not args.output and len(frame):
            print(frame.attrs.get("summary", ""), file=sys.stderr)
    if not len(frame):  # say so, instead of pandas' "Empty DataFrame / Columns: []"
        why = f"match --where {args.where!r}" if args.where and not args.sql else (
            "match" if args.sql else "are recorded")
        print(f"no {'rows' if args.sql else 'trials'} {why}", file=sys.stderr)
        if args.format == "table" and not args.output:
            return 0
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    out = format_frame(frame, args.format, columns=columns, wide=args.wide)
    if args.output:
        mode = "wb" if isinstance(out, bytes) else "w"
        with open(args.output, mode) as handle:
            handle.write(out)
    elif isinstance(out, bytes):
        sys.stdout.buffer.write(out)
    else:
        print(out)
    return 0
