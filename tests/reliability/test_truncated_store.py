"""A store file truncated on disk (what a crash of an older, non-atomic writer leaves): readers
skip it with a warning naming it; the next run of the sweep moves it aside (with the other files
of that half-recorded trial) to <sweep>/corrupt/, and since the trial no longer counts as
recorded, the resumed run runs one more trial to reach the count, leaving a clean store.

"Rewrites" therefore means: the truncated trial is replaced by a new trial (a trial cannot be
re-run under its old id: its config and Tune state died with the crash), and the damaged bytes
are kept under corrupt/ rather than deleted."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from orchestrator import query
from orchestrator.store import CORRUPT_DIR, ResultStore
from tests.reliability.drivers import (
    Driver,
    assert_store_consistent,
    describe,
    skip_if_a_cluster_would_be_joined,
    table_files,
    tiny_args,
)

TABLES = ("trials", "epochs", "members")


def _truncate(path: Path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data[: len(data) // 2]


def _store_with(root: Path, ids: list[str]) -> ResultStore:
    """A store holding `ids`, written by the product's own writer (2 members x 2 epochs)."""
    store = ResultStore(str(root), "swp")
    for n, trial_id in enumerate(ids):
        store.write_trial(
            {"trial_id": trial_id, "status": "completed", "objective": 0.3 + n / 100,
             "epochs_run": 2, "members": 2, "metric": "val_uar", "mode": "max"},
            [{"member": m, "epoch": e, "val_uar": 0.25} for m in range(2) for e in (1, 2)],
            [{"member": m, "best_epoch": 2} for m in range(2)],
        )
    return store


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_query_load_skips_a_truncated_file_with_a_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _store_with(tmp_path, ["t1", "t2", "t3"])
    bad = tmp_path / "swp" / "trials" / "t2.parquet"
    _truncate(bad)
    with caplog.at_level(logging.WARNING):
        results = query.load(str(tmp_path))
        assert sorted(results.trials["trial_id"]) == ["t1", "t3"]
        assert len(results.epochs) == 12  # the epochs files are intact
        assert query.sql(str(tmp_path), "SELECT count(*) AS n FROM trials")["n"][0] == 2
    assert any(str(bad) in w for w in _warnings(caplog)), _warnings(caplog)


def test_repair_moves_aside_truncated_orphaned_and_temporary_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store_with(tmp_path, ["t1", "t2", "t3", "t4"])
    sweep = tmp_path / "swp"
    truncated = _truncate(sweep / "trials" / "t2.parquet")
    _truncate(sweep / "members" / "t3.parquet")  # t3 is partial: all of it goes, it re-runs
    (sweep / "trials" / "t4.parquet").unlink()  # a writer killed before t4's trials file
    (sweep / "epochs" / ".t5.parquet.tmp-0123abcd").write_bytes(b"PAR1 half")
    good = {p: p.read_bytes() for t in TABLES for p in table_files(sweep, t)
            if p.stem == "t1"}
    with caplog.at_level(logging.WARNING):
        moved = store.repair()
    corrupt = sweep / CORRUPT_DIR
    assert sorted(Path(to).relative_to(corrupt).as_posix() for _, to in moved) == [
        "epochs/.t5.parquet.tmp-0123abcd", "epochs/t2.parquet", "epochs/t3.parquet",
        "epochs/t4.parquet", "members/t2.parquet", "members/t3.parquet", "members/t4.parquet",
        "trials/t2.parquet", "trials/t3.parquet"]
    assert (corrupt / "trials" / "t2.parquet").read_bytes() == truncated  # kept, not deleted
    assert len(_warnings(caplog)) == len(moved)
    assert {p: p.read_bytes() for p in good} == good  # healthy files untouched
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        results = query.load(str(tmp_path))
        assert sorted(results.trials["trial_id"]) == ["t1"]
        assert set(results.epochs["trial_id"]) == {"t1"}
        assert store.repair() == []  # idempotent
    assert _warnings(caplog) == []


@pytest.mark.slow
def test_a_resumed_sweep_replaces_the_truncated_trial(tmp_path: Path, data_cache: Path) -> None:
    skip_if_a_cluster_would_be_joined()
    trials = 2
    results = tmp_path / "results"
    sweep = results / "tiny_rel"
    args = tiny_args(results, data_cache, "--trials", str(trials), "--epochs", "2")
    for run in ("first", "resumed"):
        driver = Driver(args, tmp_path / f"{run}.log")
        try:
            rc = driver.wait(timeout=300)
            out = driver.output()
            assert rc == 0, out[-3000:]
            leftover = driver.leftovers(30)
            assert leftover == [], describe(leftover)
        finally:
            driver.cleanup()
        if run == "first":
            files = table_files(sweep, "trials")
            assert len(files) == trials
            bad = files[0]
            kept = files[1].read_bytes()
            truncated = _truncate(bad)
            assert len(query.load(str(results)).trials) == trials - 1
    assert f"resuming {sweep}: {trials - 1} trials recorded, 1 to go" in out
    assert f"moved unreadable result file {bad}" in out
    res = assert_store_consistent(sweep, trials)
    assert bad.stem not in set(res.trials["trial_id"])  # replaced by a new trial
    assert (sweep / "trials" / files[1].name).read_bytes() == kept
    moved = sorted(p.relative_to(sweep / CORRUPT_DIR).as_posix()
                   for p in (sweep / CORRUPT_DIR).rglob("*.parquet"))
    assert moved == [f"{t}/{bad.name}" for t in ("epochs", "members", "trials")]
    assert (sweep / CORRUPT_DIR / "trials" / bad.name).read_bytes() == truncated
