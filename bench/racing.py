"""Racing over folds vs none: what a sweep spends and whether its confirmed winner is as good.

The same sweep (default: the transformer search space on the synthetic corpus with every fold),
the same trial budget and sweep seed, run through orchestrator.runner.run_sweep: (a) without
racing, (b) with `search.racing` ({first: 2, alpha: 0.05} unless --first / --alpha; one racing
arm per --alpha value). Each arm then confirms its winner (search.confirm {top: 1, seeds: 1}:
fresh seed, every fold). Printed side by side, per sweep seed and summed:

    member-epochs of the search     (b) / (a)      (goal: <= 0.5, i.e. >= 2x fewer)
    wall seconds of the whole run   (b) / (a)
    the confirmed winners' test UAR, paired over test sets (orchestrator/racing.py:
    compare_members, b - a): mean, 95 % interval, n          (goal: not worse)

    python bench/racing.py [--space search_spaces/transformer.yaml] [--trials 24]
                           [--sweep-seeds 0 1 2] [--first 2] [--alpha 0.05 ...]
                           [--set KEY=VALUE ...]
    python bench/racing.py --simulate [--first 1] [--alpha 0.05 0.5]   # the rule alone
    python bench/racing.py --replay results/NAME ... [--first 1] [--alpha 0.05 0.5]

--simulate feeds constructed per-test-set values through the racing decision itself
(orchestrator/racing.py: pool, shown_worse) and prints, for a configuration better than the
incumbent by the training noise, equal to it and worse, how often it is raced out and how many
test sets it trains, under the rule (pooled spread, alpha split over the looks) at each alpha
and under the former rule (its own spread, alpha at every look); seconds, no training.

--replay takes recorded sweeps that raced nothing (every completed trial trained every test
set) and replays each one's search trials in the order they started through the rule at each
alpha, the former rule and the oracle: the incumbent is the best completed trial before it (the
sweep's concurrency ignored), a completed trial is judged after its first `first` test sets (in
member order), then each one more; a pruned trial trains its first `first` test sets (racing
runs ASHA on the first stage; the same ASHA decisions assumed). The oracle races out, after its
first test sets, every completed trial whose full objective does not beat the incumbent's: no
rule can spend less with that `first`. It prints the member-epochs each would have spent and
which trials it would have raced out, with their full objective beside the incumbent's.

A reduced run for a 2-core machine: --space tests/orchestrator/tiny_sweep.yaml --trials 12
--sweep-seeds 0 --set train.epochs=2 (see the closing note of the report for what was run).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from orchestrator import racing  # noqa: E402
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


def simulate(rng: np.random.Generator, sweeps: int, shift: float, *, pooled: bool = True,
             alpha: float = 0.05, first: int = 2, test_sets: int = 5, history: int = 6,
             noise: float = 0.02, spread: float = 0.08) -> dict[str, float]:
    """`sweeps` simulated sweeps of one configuration `shift` away from the incumbent's true
    value (0: equal; < 0: worse, mode max) judged by the racing decision at each look: test-set
    effects N(0, spread) that pairing removes, training noise N(0, noise) per configuration and
    test set, `history` other trials (worse by 0 to 0.15, every other one raced out after
    `first` test sets) whose differences to the incumbent make the pool. pooled=False is the
    former rule: the trial's own spread, `alpha` at every look. Returns the rates `raced_out`
    (at any look) and `at_first` (at the first) and `test_sets` (the mean trained)."""
    stopped, at_first, trained = 0, 0, 0
    for _ in range(sweeps):
        effect = rng.normal(0.0, spread, test_sets)
        incumbent = effect + rng.normal(0.0, noise, test_sets)
        others = []
        for k in range(history):
            size = test_sets if k % 2 else first
            value = effect - rng.uniform(0.0, 0.15) + rng.normal(0.0, noise, test_sets)
            others.append((value - incumbent)[:size])
        pool = racing.pool(others) if pooled else (0.0, 0)
        n_looks = racing.looks(first, test_sets) if pooled else 1
        diff = effect + shift + rng.normal(0.0, noise, test_sets) - incumbent
        done = test_sets
        for n in range(first, test_sets):
            if racing.shown_worse(diff[:n], "max", alpha, n_looks, pool):
                done = n
                break
        stopped += done < test_sets
        at_first += done == first
        trained += done
    return {"raced_out": stopped / sweeps, "at_first": at_first / sweeps,
            "test_sets": trained / sweeps}


def print_simulation(first: int = 2, alphas: tuple[float, ...] = (0.05,), sweeps: int = 4000,
                     noise: float = 0.02) -> None:
    rng = np.random.default_rng(25)
    rules = [(f"pooled, alpha {a} over the looks", True, a) for a in alphas]
    rules.append((f"former: own spread, alpha {alphas[0]} every look", False, alphas[0]))
    rows = []
    for shift in (1.0, 0.0, -1.0, -2.0, -4.0):
        for rule, pooled, alpha in rules:
            got = simulate(rng, sweeps, shift * noise, pooled=pooled, alpha=alpha, first=first,
                           noise=noise)
            rows.append({"vs incumbent (noise units)": f"{shift:+.0f}", "rule": rule, **got})
    print(f"racing decision on {sweeps} simulated sweeps per row (5 test sets, first {first}, "
          f"training noise {noise} per test set, test-set effects sd 0.08, 6 other trials in "
          "the pool; +1: better than the incumbent by the noise, -1: worse):")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def replay(sweep_dir: str, metric: str = "val_uar", mode: str = "max", first: int = 2,
           alphas: tuple[float, ...] = (0.05,)) -> dict[str, int]:
    """Replay a recorded sweep without racing through the pooled rule at each of `alphas`, the
    former rule (at the first alpha) and the oracle; print and return each one's member-epochs
    (key "recorded": what the sweep spent)."""
    trials = schema.search_rows(pd.read_parquet(Path(sweep_dir) / "trials"))
    members = pd.read_parquet(Path(sweep_dir) / "members")
    trials = trials.sort_values("started_at", kind="stable")
    rules = {f"pooled, alpha {a} over the looks": (True, a) for a in alphas}
    rules[f"former: own spread, alpha {alphas[0]} every look"] = (False, alphas[0])
    rules["oracle: only new bests train every test set"] = (None, 0.0)
    spent = {"recorded": int(trials[schema.MEMBER_EPOCHS].sum())}
    for rule, (pooled, alpha) in rules.items():
        spent[rule], raced = _replay_rule(trials, members, metric, mode, first, alpha, pooled)
        print(f"{rule}: member-epochs {spent[rule]} of {spent['recorded']} "
              f"({spent[rule] / max(1, spent['recorded']):.2f}x); raced out: "
              f"{', '.join(raced) or 'none'}")
    return spent


def _replay_rule(trials: pd.DataFrame, members: pd.DataFrame, metric: str, mode: str,
                 first: int, alpha: float, pooled: bool | None) -> tuple[int, list[str]]:
    """One rule over the recorded trials in start order (pooled None: the oracle, which races
    out every completed trial whose full objective does not beat the best before it). A pruned
    trial trains its first `first` test sets: racing runs ASHA on the first stage."""
    sign = 1.0 if mode == "max" else -1.0
    done: list[tuple[str, float, pd.DataFrame]] = []
    spent, raced = 0, []
    for row in trials.itertuples():
        mine = members[members[schema.TRIAL_ID] == row.trial_id].sort_values("member")
        folds = list(dict.fromkeys(mine["fold"]))
        epochs = int(row.member_epochs) // max(1, len(mine))
        head = min(first, len(folds))  # the first stage's test sets
        stop = len(folds) if row.status == schema.COMPLETED else head
        candidates = [d for d in done if math.isfinite(d[1])]
        if candidates and row.status == schema.COMPLETED:
            best_id, best, theirs = max(candidates, key=lambda d: sign * d[1])
            if pooled is None:
                stop = len(folds) if sign * row.objective > sign * best else head
            else:
                pool = racing.pool(racing.test_set_differences(rows, theirs, metric)
                                   for trial_id, _, rows in done if trial_id != best_id)
                n_looks = racing.looks(first, len(folds))
                for n in range(first, len(folds)):
                    diff = racing.test_set_differences(mine[mine["fold"].isin(folds[:n])],
                                                       theirs, metric)
                    if racing.shown_worse(diff, mode, alpha, n_looks if pooled else 1,
                                          pool if pooled else (0.0, 0)):
                        stop = n
                        break
            if stop < len(folds):
                raced.append(f"{row.trial_id} after {stop} ({row.objective:.3f} vs {best:.3f})")
        trained = mine[mine["fold"].isin(folds[:stop])]
        spent += len(trained) * epochs
        whole = row.status == schema.COMPLETED and stop == len(folds)
        # a trial stopped early still joins the pool; it never becomes the incumbent
        done.append((str(row.trial_id), float(row.objective) if whole else -sign * math.inf,
                     trained))
    return spent, raced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/transformer.yaml")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--sweep-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--first", type=int, default=2)
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.05],
                        help="racing's alpha: one racing arm each (--replay: one rule each)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--results", default=None, help="keep the sweeps here (default: temp)")
    parser.add_argument("--simulate", action="store_true",
                        help="only the racing rule on simulated test sets (no training)")
    parser.add_argument("--replay", default=None, nargs="+", metavar="SWEEP_DIR",
                        help="replay recorded sweeps without racing through the rules")
    args = parser.parse_args()
    if args.simulate:
        print_simulation(args.first, tuple(args.alpha))
        return
    if args.replay:
        total: dict[str, int] = {}
        for sweep_dir in args.replay:
            print(f"{sweep_dir} (first {args.first}):")
            for rule, spent in replay(sweep_dir, first=args.first, alphas=args.alpha).items():
                total[rule] = total.get(rule, 0) + spent
        if len(args.replay) > 1:
            print(f"all {len(args.replay)} sweeps: " + "; ".join(
                f"{rule} {spent / total['recorded']:.2f}x" for rule, spent in total.items()
                if rule != "recorded"))
        return
    root = args.results or tempfile.mkdtemp(prefix="bench-racing-")
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # as cluster.ray_init: the console only
    # one Ray for both arms (run_sweep joins it): its start-up is outside both walls
    ray.init(include_dashboard=False, log_to_driver=False)
    common = ["data.use_folds=null", f"search.trials={args.trials}", "search.baseline=false",
              "search.confirm={top: 1, seeds: 1}", *args.overrides]
    plain = "(a) no racing"
    arms = {plain: "search.racing=null"} | {
        f"(b) racing alpha {a}": f"search.racing={{first: {args.first}, alpha: {a}}}"
        for a in args.alpha}
    rows, pairs = [], []
    for seed in args.sweep_seeds:
        got = {}
        for index, (arm, racing_set) in enumerate(arms.items()):
            tag = "plain" if arm == plain else f"race{index}"
            got[arm] = run_arm(args.space, [*common, f"search.seed={seed}", racing_set], root,
                               f"bench-{tag}-{seed}")
            rows.append({"sweep seed": seed, "arm": arm, **{k: v for k, v in got[arm].items()
                                                           if k != "winner_members"}})
            a, b = got[plain]["winner_members"], got[arm]["winner_members"]
            if arm != plain and a is not None and b is not None:
                result = compare_members(b, a, "test_uar", "max")
                pairs.append({"sweep seed": seed, "arm": arm, "test_uar b - a": result.mean,
                              "low": result.low, "high": result.high, "n": result.n})
    frame = pd.DataFrame(rows)
    print(f"\nbench/racing.py: {args.space}, {args.trials} trials per sweep, sweep seeds "
          f"{args.sweep_seeds}, first {args.first}, overrides {args.overrides}; results in {root}")
    print(frame.to_string(index=False))
    total = frame.groupby("arm", sort=False)[["member_epochs", "wall"]].sum()
    for arm in list(arms)[1:]:
        race = total.loc[arm]
        print(f"\n{arm} / {plain}: member-epochs of the search "
              f"{race.member_epochs / total.loc[plain].member_epochs:.2f} "
              f"({int(race.member_epochs)} vs {int(total.loc[plain].member_epochs)}; goal <= 0.5)"
              f", wall of the whole run {race.wall / total.loc[plain].wall:.2f} "
              f"({race.wall:.0f} s vs {total.loc[plain].wall:.0f} s)")
    if pairs:
        print("confirmed winners' test UAR, paired over test sets (b - a):")
        print(pd.DataFrame(pairs).to_string(index=False, float_format=lambda v: f"{v:+.4f}"))


if __name__ == "__main__":
    main()
