"""A verdict a reviewer accepts (issue 21: 1, 2, 3, 7; issue 24: 1), on constructed member tables
in real Parquet stores: the test set is the unit (seeds averaged, shared test sets merged, the
test set's identity as the key), test is what is reported, words that say what the evidence is,
Holm against #1, exact Wilcoxon, unranked trials apart, the protocol marked, a 120-column table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from orchestrator import query
from orchestrator.query.paired import (
    NO_EVIDENCE,
    TOO_FEW,
    WORSE,
    compare,
    paired_difference,
    per_test_set,
    wilcoxon_exact,
)
from orchestrator.store import ResultStore
from trainables.data.folds import test_set_id

CLASSES = ["angry", "happy", "neutral", "sad"]


def _members(folds: list[str], seeds: list[int], val: dict[str, float],
             test: dict[str, float] | None = None, jitter: float = 0.0, seed: int = 0,
             ids: dict[str, str] | None = None) -> list[dict]:
    """Member rows: each fold's value (+ a small seed jitter); `ids`: fold -> test_set_id."""
    rng = np.random.default_rng(seed)
    test = test or {f: v - 0.02 for f, v in val.items()}
    rows = []
    for i, (fold, s) in enumerate((f, s) for f in folds for s in seeds):
        noise = float(rng.normal(0, jitter)) if jitter else 0.0
        row = {"member": i, "fold": fold, "seed": s, "best_epoch": 2,
               "val_uar": val[fold] + noise, "test_uar": test[fold] + noise, "n_test": 12,
               "collapsed": False, "classes": CLASSES,
               "test_confusion": [[3, 0, 0, 0], [0, 3, 0, 0], [0, 0, 3, 0], [0, 0, 0, 3]]}
        if ids is not None:
            row["test_set_id"] = ids[fold]
        rows.append(row)
    return rows


def _write(store: ResultStore, tid: str, members: list[dict], status: str = "completed",
           params: dict | None = None, config: dict | None = None) -> None:
    values = np.array([m["val_uar"] for m in members]) if members else np.array([np.nan])
    row = {"trial_id": tid, "status": status, "metric": "val_uar", "mode": "max",
           "objective": None if status in ("failed", "does_not_fit") else float(values.mean()),
           "objective_std": float(values.std(ddof=1)) if len(values) > 1 else None,
           "members": len(members) or None, "epochs_run": 2,
           "members_collapsed": len(members) if status == "collapsed" else 0,
           "config_json": json.dumps({"data": config or {}}),
           **{f"param.{k}": v for k, v in (params or {}).items()}}
    epochs = [{"member": m["member"], "fold": m["fold"], "seed": m["seed"], "epoch": 1,
               "val_uar": 0.3} for m in members]
    store.write_trial(row, epochs, members)


def _frame(members: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(members)


# --- 1. the test set is the unit ---------------------------------------------------------------
FOLD_DIFFS = {"f1": 0.06, "f2": -0.01, "f3": 0.05, "f4": 0.00, "f5": 0.04}


def test_seeds_of_one_fold_are_one_test_set_not_three() -> None:
    """Fold-dependent gains repeated over 3 seeds: pairing (fold, seed) counted 15 observations
    and called the gain significant; the 5 test sets alone cannot tell."""
    folds, seeds = list(FOLD_DIFFS), [0, 1, 2]
    base = {f: 0.5 for f in folds}
    better = {f: 0.5 + d for f, d in FOLD_DIFFS.items()}
    a = _frame(_members(folds, seeds, better, jitter=0.002, seed=1))
    b = _frame(_members(folds, seeds, base, jitter=0.002, seed=2))
    result = compare(a, b, "val_uar")
    assert result.n == 5
    fold_means = (a.groupby("fold")["val_uar"].mean() - b.groupby("fold")["val_uar"].mean())
    half = stats.t.ppf(0.975, 4) * fold_means.std(ddof=1) / math.sqrt(5)
    assert result.mean == pytest.approx(fold_means.mean())
    assert result.low == pytest.approx(fold_means.mean() - half)
    assert result.t_p == pytest.approx(stats.ttest_rel(
        a.groupby("fold")["val_uar"].mean(), b.groupby("fold")["val_uar"].mean()).pvalue)
    assert result.verdict == NO_EVIDENCE and result.low < 0
    as_members = stats.ttest_1samp(a["val_uar"] - b["val_uar"], 0).pvalue
    assert as_members < 0.05  # what pairing members as independent would have claimed


def test_folds_that_share_a_test_set_are_merged_and_the_key_is_the_test_set() -> None:
    folds = ["official_a", "official_b", "s1", "s2"]  # two folds with one (MELD-like) test set
    ids = {"official_a": "meld", "official_b": "meld", "s1": "x1", "s2": "x2"}
    a = _frame(_members(folds, [0], {f: 0.6 for f in folds}, ids=ids))
    b = _frame(_members(folds, [0], {f: 0.5 for f in folds}, ids=ids))
    assert compare(a, b, "val_uar").n == 3
    assert list(per_test_set(a, "val_uar").index) == ["meld", "x1", "x2"]
    # same fold names, other test sets (another searched data choice): nothing pairs
    other = _frame(_members(folds, [0], {f: 0.5 for f in folds},
                            ids={f: f"other_{f}" for f in folds}))
    none = compare(a, other, "val_uar")
    assert none.n == 0 and none.verdict == TOO_FEW
    # a store without test_set_id pairs on the fold name
    old = b.drop(columns="test_set_id")
    assert compare(a, old, "val_uar").n == 4


def test_test_set_id_is_the_hash_of_the_sorted_test_utterances() -> None:
    ids = ["u3", "u1", "u2", "u0"]
    assert test_set_id(ids, np.array([0, 1])) == test_set_id(ids[::-1], np.array([2, 3]))
    assert test_set_id(ids, np.array([0, 1])) != test_set_id(ids, np.array([0, 2]))
    assert len(test_set_id(ids, np.array([0]))) == 12


# --- 3. words, n, exact Wilcoxon, Holm ----------------------------------------------------------
def test_no_verdict_below_three_test_sets_and_no_tied() -> None:
    a = pd.Series([0.61, 0.70], index=["t1", "t2"])
    b = pd.Series([0.50, 0.58], index=["t1", "t2"])
    two = paired_difference(a, b)
    assert two.verdict == TOO_FEW and "--set data.use_folds=null" in two.note
    assert "tied" not in json.dumps(two.columns("vs_best"))
    three = paired_difference(pd.Series([0.1, 0.11, 0.12]), pd.Series([0.0, 0.0, 0.0]))
    assert three.verdict == "better" and three.n == 3
    worse = paired_difference(pd.Series([0.0, 0.0, 0.0]), pd.Series([0.1, 0.11, 0.12]))
    assert worse.verdict == WORSE
    loss = paired_difference(pd.Series([0.0, 0.0, 0.0]), pd.Series([0.1, 0.11, 0.12]),
                             higher_is_better=False)
    assert loss.verdict == "better"  # a lower loss


def test_wilcoxon_is_exact_and_its_note_counts_non_zero_differences() -> None:
    diff = np.array([0.1, 0.2, 0.0, 0.3, 0.4, 0.5])  # n = 6, one zero: 5 non-zero
    p, nonzero = wilcoxon_exact(diff)
    assert nonzero == 5 and p == pytest.approx(2 / 2 ** 5)  # 0.0625 (scipy 1.11 said 0.043)
    result = paired_difference(pd.Series(diff), pd.Series(np.zeros(6)))
    assert result.p_value == pytest.approx(0.0625)
    assert "5 non-zero differences < 6" in result.note and "1 zero" in result.note
    rng = np.random.default_rng(5)
    for n in (7, 9, 12):
        d = np.round(rng.normal(0.2, 1, n), 1)  # rounded: tied |d| (mid-ranks)
        d = d[d != 0]
        brute = _brute_force_wilcoxon(d)
        assert wilcoxon_exact(d)[0] == pytest.approx(brute)


def _brute_force_wilcoxon(d: np.ndarray) -> float:
    ranks = stats.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    total = ranks.sum()
    signs = np.array(np.meshgrid(*[[0, 1]] * len(d))).reshape(len(d), -1).T
    sums = signs @ ranks
    extreme = min(observed, total - observed)
    return float(np.mean((sums <= extreme + 1e-9) | (sums >= total - extreme - 1e-9)))


def test_holm_corrects_the_comparisons_against_number_one(tmp_path: Path) -> None:
    """Three trials each nominally worse than #1 (t-test p just under 0.05): uncorrected all
    'worse'; Holm over the K-1 = 3 comparisons: no evidence for any."""
    folds = [f"f{i}" for i in range(6)]
    ids = {f: f"ts_{f}" for f in folds}
    store = ResultStore(str(tmp_path / "results"), "holm")
    best = {f: 0.6 for f in folds}
    _write(store, "top", _members(folds, [0], best, ids=ids))
    gaps = [0.03, 0.0, 0.03, 0.005, 0.025, 0.01]
    for k, tid in enumerate(("a", "b", "c")):
        vals = {f: 0.6 - g - 0.0003 * k for f, g in zip(folds, gaps, strict=True)}
        _write(store, tid, _members(folds, [0], vals, ids=ids))
    board = query.leaderboard(query.load(store.sweep_dir)).set_index("trial_id")
    others = board.loc[["a", "b", "c"]]
    assert (others["vs_best_t_p"] < 0.05).all()  # each alone: "worse"
    assert (others["vs_best_p_holm"] >= 0.05).all()
    assert set(others["vs_best_verdict"]) == {NO_EVIDENCE}
    assert board.loc["top", "vs_best_verdict"] == "#1"
    assert (others["vs_best_n"] == 6).all()


# --- 2. report on test, select on validation; baseline per data variant ------------------------
def test_vs_best_and_vs_baseline_are_on_test_and_validation_stays_labelled(
        tmp_path: Path) -> None:
    folds = [f"f{i}" for i in range(5)]
    ids = {f: f"ts_{f}" for f in folds}
    store = ResultStore(str(tmp_path / "results"), "side")
    _write(store, "top", _members(folds, [0], {f: 0.70 for f in folds},
                                  test={f: 0.50 + 0.01 * i for i, f in enumerate(folds)},
                                  ids=ids))
    # worse on validation (where #1 was chosen), better on test
    _write(store, "other", _members(folds, [0], {f: 0.60 + 0.002 * i for i, f in enumerate(folds)},
                                    test={f: 0.55 + 0.012 * i for i, f in enumerate(folds)},
                                    ids=ids))
    board = query.leaderboard(query.load(store.sweep_dir))
    assert board.attrs["reported_metric"] == "test_uar"
    other = board.set_index("trial_id").loc["other"]
    assert other["val_vs_best_verdict"] == WORSE
    assert other["vs_best_verdict"] == "better" and other["vs_best"] == pytest.approx(0.054)
    table = query.format_frame(board, "table")
    assert "+0.054 better" in table
    flat = " ".join(table.split())
    assert "#1 chosen on validation; its margin on validation is optimistic" in flat
    assert "selection metric" in flat


def test_the_baseline_of_a_trial_is_the_baseline_of_its_data_variant(tmp_path: Path) -> None:
    from orchestrator.store.baseline_table import write_baseline
    from orchestrator.store.schema import BASELINE_FIELDS

    folds = [f"f{i}" for i in range(4)]
    ids = {f: f"ts_{f}" for f in folds}
    store = ResultStore(str(tmp_path / "results"), "variant")
    _write(store, "short", _members(folds, [0], {f: 0.6 for f in folds}, ids=ids),
           params={"data.max_seconds": 2.0})
    _write(store, "long", _members(folds, [0], {f: 0.6 for f in folds}, ids=ids),
           params={"data.max_seconds": 4.0})
    rows = []
    for variant, value in (("", 0.40), ('{"data.max_seconds": 4.0}', 0.55)):
        for i, fold in enumerate(folds):
            row = {name: None for name, _, _ in BASELINE_FIELDS}
            row.update(member=i, fold=fold, seed=0, val_uar=value + 0.01 * i,
                       test_uar=value + 0.01 * i, classes=CLASSES, test_set_id=ids[fold],
                       data_variant=variant or None, baseline="egemaps88_logreg")
            rows.append(row)
    write_baseline(pd.DataFrame(rows, columns=[n for n, _, _ in BASELINE_FIELDS]),
                   store.sweep_dir)
    board = query.leaderboard(query.load(store.sweep_dir)).set_index("trial_id")
    assert board.loc["long", "vs_baseline"] == pytest.approx(0.58 - 0.565)
    assert board.loc["long", "baseline_variant"] == '{"data.max_seconds": 4.0}'
    # no baseline of its own variant (2.0 was not computed): the sweep file's own data section
    assert board.loc["short", "vs_baseline"] == pytest.approx(0.58 - 0.415)
    assert board.loc["short", "vs_baseline_n"] == 4


# --- 3. unranked trials apart; 7. protocol marked; ± named --------------------------------------
def test_failed_and_collapsed_trials_are_listed_apart_without_rank_or_verdict(
        tmp_path: Path) -> None:
    folds = [f"f{i}" for i in range(3)]
    store = ResultStore(str(tmp_path / "results"), "apart")
    _write(store, "ok", _members(folds, [0], {f: 0.6 for f in folds}))
    _write(store, "bad", [], status="failed")
    _write(store, "big", [], status="does_not_fit")
    stuck = _members(folds, [0], {f: 0.9 for f in folds})
    _write(store, "stuck", stuck, status="collapsed")
    board = query.leaderboard(query.load(store.sweep_dir)).set_index("trial_id")
    for tid in ("bad", "big", "stuck"):
        assert pd.isna(board.loc[tid, "rank"])
        assert pd.isna(board.loc[tid, "vs_best_verdict"])
    assert board.loc["ok", "rank"] == 1
    table = query.format_frame(board.reset_index(), "table")
    ranked, _, apart = table.partition("not ranked")
    assert "ok" in ranked and "stuck" not in ranked and "bad" not in ranked
    assert "stuck" in apart and "bad" in apart and "big" in apart
    record = json.loads(query.format_frame(board.reset_index(), "json"))
    assert not any("tied" in key for key in record[0])


def test_transductive_trials_are_marked_and_the_spread_is_over_test_sets(tmp_path: Path) -> None:
    folds = [f"f{i}" for i in range(3)]
    ids = {f: f"ts_{f}" for f in folds}
    store = ResultStore(str(tmp_path / "results"), "protocol")
    vals = {"f0": 0.5, "f1": 0.6, "f2": 0.7}
    _write(store, "spk", _members(folds, [0, 1, 2], vals, jitter=0.01, ids=ids),
           params={"data.normalize": "speaker"})
    _write(store, "trn", _members(folds, [0, 1, 2], vals, jitter=0.01, seed=3, ids=ids),
           config={"normalize": "train"})
    board = query.leaderboard(query.load(store.sweep_dir)).set_index("trial_id")
    assert bool(board.loc["spk", "transductive"]) and not bool(board.loc["trn", "transductive"])
    assert board.loc["spk", "objective"] == pytest.approx(0.6, abs=0.02)  # stored, kept
    members = query.load(store.sweep_dir).members
    seed_means = members[members["trial_id"] == "spk"].groupby("fold")["val_uar"].mean()
    assert board.loc["spk", "objective_std"] == pytest.approx(seed_means.std(ddof=1))
    assert board.loc["spk", "n_test_sets"] == 3
    assert 0 < board.loc["spk", "objective_seed_std"] < 0.03  # seeds apart from test sets
    table = query.format_frame(board.reset_index(), "table")
    assert "spk*" in table and "transductive" in table and "n=3" in table
    assert "± = sample std across test sets of the seed-means" in " ".join(table.split())


# --- #24.1: 120 columns, --columns, --wide, integers --------------------------------------------
def test_the_default_table_fits_120_columns_and_json_keeps_everything(tmp_path: Path) -> None:
    folds = [f"f{i}" for i in range(3)]
    store = ResultStore(str(tmp_path / "results"), "width")
    rng = np.random.default_rng(0)
    params = ("train.lr", "train.warmup_epochs", "model.layers", "model.d_model",
              "model.pooling", "model.init", "model.norm_first", "model.head_hidden")
    for k in range(6):
        chosen = {"train.lr": float(rng.uniform(1e-4, 3e-3)), "train.warmup_epochs": k % 3,
                  "model.layers": 1 + k % 4, "model.d_model": [32, 64, 128][k % 3],
                  "model.pooling": ["max", "mean"][k % 2], "model.init": "xavier_" + str(k),
                  "model.norm_first": bool(k % 2), "model.head_hidden": f"[128]x{k}"}
        _write(store, f"{k:03d}4abcd",
               _members(folds, [0], {f: 0.5 + 0.01 * k + 0.001 * i
                                     for i, f in enumerate(folds)}), params=chosen)
    board = query.leaderboard(query.load(store.sweep_dir))
    table = query.format_frame(board, "table")
    body = table.split("\n  ")[0]
    assert max(len(line) for line in table.splitlines()) <= 120
    assert "--wide or --columns" in table and "model.d_model" in body.splitlines()[0]
    wide = query.format_frame(board, "table", wide=True)
    assert max(len(line) for line in wide.splitlines()) > 120
    assert all(p in wide for p in params)
    picked = query.format_frame(board, "table", columns=["trial_id", "model.init", "test_uar"])
    header = picked.splitlines()[0].split()
    assert header == ["trial_id", "model.init", "test_uar"]
    with pytest.raises(query.QueryError, match="did you mean"):
        query.format_frame(board, "table", columns=["model.initt"])
    record = json.loads(query.format_frame(board, "json"))[0]
    assert isinstance(record["epochs_run"], int) and isinstance(record["members"], int)
    assert isinstance(record["param.model.layers"], int)
    assert isinstance(record["vs_best_n"], int) and isinstance(record["n_test_sets"], int)


# --- 1. a searched key that changes the splits is refused --------------------------------------
@pytest.mark.parametrize("key, choices", [("data.use_folds", "[2, 3]"),
                                          ("data.val", "[next_session, train_fraction]"),
                                          ("data.folds", "[by_session, by_speaker]")])
def test_a_searched_split_key_is_refused_in_one_line(tmp_path: Path, key: str,
                                                     choices: str) -> None:
    from orchestrator.sweepfile import SpecError, load_spec

    space = tmp_path / "split.yaml"
    space.write_text(Path("search_spaces/transformer.yaml").read_text().replace(
        "    model.layers:", f"    {key}: {{choice: {choices}}}\n    model.layers:"))
    with pytest.raises(SpecError) as info:
        load_spec(space)
    message = str(info.value)
    assert key in message and "one sweep per value" in message and "\n" not in message
    assert load_spec(Path("search_spaces/transformer.yaml")).search.params  # the file itself
