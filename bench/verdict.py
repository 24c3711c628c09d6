"""(a) The winner's curse, simulated through the product's own comparison code.

K configurations of EQUAL true quality are trained on 5 folds x 1 or 3 seeds. Each member's
validation and test UAR share the configuration's fold-dependent effect (how the configuration
fits that fold's training speakers) and the member's seed effect, plus split-specific effects
(the validation and the test speakers are different people) and noise. #1 is picked as the
product picks it (the best objective: mean validation UAR over the members), then every other
configuration is compared with #1 the way the leaderboard does it (query/paired.py: `compare` on
the member rows, one value per test set, the TEST metric, Holm over the K-1 comparisons, THE
verdict). Since every configuration is equally good, every "worse than #1" is false.

Printed per (K, seeds): the false "worse than #1" rate on the reported verdict (share of the K-1
others, and the share of sweeps with at least one), each with its Monte-Carlo standard error,
next to what the old table reported (members paired as independent observations, on
validation, no correction); and #1's optimism: its objective (validation) minus its test UAR.
The reported rate must be at most 5 % + 2 MC standard errors (exit 1 otherwise).

    python bench/verdict.py                 # K = 8, 30, 100; 1 and 3 seeds
    python bench/verdict.py --reps 200 --k 8
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.query.paired import ALPHA, WORSE, compare, holm  # noqa: E402

FOLDS = 5
SD = {"fold_level": 0.05, "config_fold": 0.015, "split": 0.02, "seed": 0.01, "noise": 0.005}


def simulate_sweep(rng: np.random.Generator, k: int, seeds: int) -> list[pd.DataFrame]:
    """Member rows (fold, seed, test_set_id, val_uar, test_uar) of K equal configurations."""
    level_val = rng.normal(0, SD["fold_level"], FOLDS)
    level_test = rng.normal(0, SD["fold_level"], FOLDS)
    config_fold = rng.normal(0, SD["config_fold"], (k, FOLDS))  # shared by val and test
    val_only = rng.normal(0, SD["split"], (k, FOLDS))
    test_only = rng.normal(0, SD["split"], (k, FOLDS))
    seed = rng.normal(0, SD["seed"], (k, FOLDS, seeds))  # shared by val and test
    val = (0.5 + level_val[None, :, None] + (config_fold + val_only)[:, :, None] + seed
           + rng.normal(0, SD["noise"], (k, FOLDS, seeds)))
    test = (0.5 + level_test[None, :, None] + (config_fold + test_only)[:, :, None] + seed
            + rng.normal(0, SD["noise"], (k, FOLDS, seeds)))
    folds = np.repeat([f"f{i}" for i in range(FOLDS)], seeds)
    seed_ids = np.tile(np.arange(seeds), FOLDS)
    return [pd.DataFrame({"fold": folds, "seed": seed_ids, "test_set_id": folds,
                          "val_uar": val[c].reshape(-1), "test_uar": test[c].reshape(-1)})
            for c in range(k)]


def _old_worse(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """What the table said before: (fold, seed) members paired as independent observations, on
    validation, 95 % t-interval excluding 0, no correction."""
    diff = a["val_uar"].to_numpy() - b["val_uar"].to_numpy()
    n = diff.size
    half = stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / math.sqrt(n)
    return bool(diff.mean() + half < 0)


def run(k: int, seeds: int, reps: int, rng: np.random.Generator) -> dict[str, float]:
    reported, any_reported, old, optimism = [], [], [], []
    for _ in range(reps):
        members = simulate_sweep(rng, k, seeds)
        objectives = [m["val_uar"].mean() for m in members]
        best = int(np.argmax(objectives))
        others = [c for c in range(k) if c != best]
        family = holm([compare(members[c], members[best], "test_uar") for c in others])
        worse = [r.verdict == WORSE for r in family]
        reported.append(np.mean(worse))
        any_reported.append(float(any(worse)))
        old.append(np.mean([_old_worse(members[c], members[best]) for c in others]))
        optimism.append(objectives[best] - members[best]["test_uar"].mean())
    out = {}
    for name, values in (("reported", reported), ("any", any_reported), ("old", old),
                         ("optimism", optimism)):
        values = np.asarray(values, dtype=np.float64)
        out[name] = float(values.mean())
        out[f"{name}_se"] = float(values.std(ddof=1) / math.sqrt(len(values)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[8, 30, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--reps", type=int, default=0,
                        help="sweeps simulated per setting (default: 600 / K**0.5, >= 50)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print(f"K equal configurations, {FOLDS} folds; effects (sd): {SD}; alpha {ALPHA:.2f}")
    print(f"{'K':>4} {'seeds':>5} {'reps':>5} | {'false worse vs #1 (reported: test, Holm)':>42}"
          f" | {'any in sweep':>14} | {'old (members, val)':>18} | {'#1 optimism':>14} | ok")
    failed = False
    for k in args.k:
        for seeds in args.seeds:
            reps = args.reps or max(50, int(600 / math.sqrt(k)))
            started = time.monotonic()
            r = run(k, seeds, reps, rng)
            ok = r["reported"] <= ALPHA + 2 * r["reported_se"]
            failed |= not ok
            print(f"{k:>4} {seeds:>5} {reps:>5} | {r['reported']:>34.2%} ± {r['reported_se']:.2%}"
                  f" | {r['any']:>6.1%} ± {r['any_se']:.1%} | {r['old']:>10.1%} ± "
                  f"{r['old_se']:.1%} | {r['optimism']:+.4f} ± {r['optimism_se']:.4f} | "
                  f"{'yes' if ok else 'NO'}  ({time.monotonic() - started:.0f} s)", flush=True)
    print("optimism = #1's objective (mean validation UAR) minus its mean test UAR; "
          "rates are shares of the K-1 comparisons against #1 (MC standard errors)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
