"""Racing over folds vs none: what a sweep spends and whether its confirmed winner is as good.

The same sweep (default: the transformer search space on the synthetic corpus with every fold),
the same trial budget and sweep seed, run twice through orchestrator.runner.run_sweep:
(a) without racing, (b) with `search.racing` ({first: 2, alpha: 0.05} unless --alpha / --first).
Each arm then confirms its winner (search.confirm {top: 1, seeds: 1}: fresh seed, every fold).
Printed side by side, per sweep seed and summed:

    member-epochs of the search     (b) / (a)      (goal: <= 0.5, i.e. >= 2x fewer)
    wall seconds of the whole run   (b) / (a)
    the confirmed winners' test UAR, paired over test sets (orchestrator/racing.py:
    compare_members, b - a): mean, 95 % interval, n          (goal: not worse)

    python bench/racing.py [--space search_spaces/transformer.yaml] [--trials 24]
                           [--sweep-seeds 0 1 2] [--set KEY=VALUE ...]

A reduced run for a 2-core machine: --space tests/orchestrator/tiny_sweep.yaml --trials 12
--sweep-seeds 0 --set train.epochs=2 (see the closing note of the report for what was run).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from orchestrator.query.confirmed import CONFIRM_TRIAL, confirmations  # noqa: E402
from orchestrator.racing import compare_members  # noqa: E402
from orchestrator.runner import run_sweep  # noqa: E402
from orchestrator.store import ResultStore, schema  # noqa: E402
from orchestrator.sweepfile import load_spec  # noqa: E402


def run_arm(space: str, overrides: list[str], root: str, name: str) -> dict:
    spec = load_spec(space, overrides=[*overrides, f"name={name}"])
    started = time.monotonic()
    run_sweep(spec, results_root=root)
    wall = time.monotonic() - started
    store = ResultStore(root, name)
    trials = store.read_trials()
    search = schema.search_rows(trials)
    table = confirmations(trials, spec.search.mode)
    members = store.read_table("members")
    winner = None if table.empty else members[members[schema.TRIAL_ID]
                                              == table.iloc[0][CONFIRM_TRIAL]]
    return {"wall": wall, "member_epochs": int(search[schema.MEMBER_EPOCHS].sum()),
            "statuses": search[schema.STATUS].value_counts().to_dict(),
            "confirmed": None if table.empty else float(table.iloc[0]["confirmed"]),
            "winner_members": winner}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/transformer.yaml")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--sweep-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--first", type=int, default=2)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--results", default=None, help="keep the sweeps here (default: temp)")
    args = parser.parse_args()
    root = args.results or tempfile.mkdtemp(prefix="bench-racing-")
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # as cluster.ray_init: the console only
    # one Ray for both arms (run_sweep joins it): its start-up is outside both walls
    ray.init(include_dashboard=False, log_to_driver=False)
    common = ["data.use_folds=null", f"search.trials={args.trials}", "search.baseline=false",
              "search.confirm={top: 1, seeds: 1}", *args.overrides]
    arms = {"(a) no racing": ["search.racing=null"],
            "(b) racing": [f"search.racing={{first: {args.first}, alpha: {args.alpha}}}"]}
    rows, pairs = [], []
    for seed in args.sweep_seeds:
        got = {}
        for arm, extra in arms.items():
            tag = "race" if "racing=null" not in extra[0] else "plain"
            got[arm] = run_arm(args.space, [*common, f"search.seed={seed}", *extra], root,
                               f"bench-{tag}-{seed}")
            rows.append({"sweep seed": seed, "arm": arm, **{k: v for k, v in got[arm].items()
                                                           if k != "winner_members"}})
        a, b = (got[arm]["winner_members"] for arm in arms)
        if a is not None and b is not None:
            result = compare_members(b, a, "test_uar", "max")
            pairs.append({"sweep seed": seed, "test_uar b - a": result.mean,
                          "low": result.low, "high": result.high, "n": result.n})
    frame = pd.DataFrame(rows)
    print(f"\nbench/racing.py: {args.space}, {args.trials} trials per sweep, sweep seeds "
          f"{args.sweep_seeds}, overrides {args.overrides}; results in {root}")
    print(frame.to_string(index=False))
    total = frame.groupby("arm")[["member_epochs", "wall"]].sum()
    plain, race = total.iloc[0], total.iloc[1]
    print(f"\nmember-epochs of the search (b)/(a): {race.member_epochs / plain.member_epochs:.2f}"
          f"  ({int(race.member_epochs)} vs {int(plain.member_epochs)}; goal <= 0.5)")
    print(f"wall of the whole run (b)/(a):       {race.wall / plain.wall:.2f}"
          f"  ({race.wall:.0f} s vs {plain.wall:.0f} s)")
    if pairs:
        print("confirmed winners' test UAR, paired over test sets (b - a):")
        print(pd.DataFrame(pairs).to_string(index=False, float_format=lambda v: f"{v:+.4f}"))


if __name__ == "__main__":
    main()
