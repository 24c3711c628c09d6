"""Rows that belong (issue 23.3) and nothing written until the run can start (23.4).

Each row carries the sweep's identity (<sweep>/sweep_id, column sweep_id); a trial counts only
when its rows belong to this sweep and its three files are whole: a trials file copied in from
another sweep, or a trial whose epochs/members file is missing or unreadable, is not counted, is
moved aside by repair, and so is run again. A store whose spec.yaml is gone is not continued
under a different sweep file; a run that cannot reach Ray writes nothing."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from orchestrator import cli
from orchestrator.search import study_with_history
from orchestrator.store import CORRUPT_DIR, ResultStore, write_spec
from orchestrator.store.rows import TrialBuffer, trial_rows
from orchestrator.sweepfile import load_spec
from trainables.errors import SersweepError

TINY = Path(__file__).resolve().parents[1] / "tiny_sweep.yaml"


def _row(trial_id: str) -> tuple:
    return trial_rows(trial_id=trial_id, config={}, buffer=TrialBuffer(time.time()),
                      param_keys=[], metric="val_uar", mode="max", status="failed",
                      error="RuntimeError: x", trial_gpus=0.0)


def _store(root: Path, trials: list[str]) -> ResultStore:
    """A sweep named `tiny` under `root`, as a run leaves it: spec.yaml, sweep_id, trials."""
    store = ResultStore(str(root), "tiny")
    store.claim_identity()
    write_spec(store.sweep_dir, load_spec(TINY).as_dict())
    store.write_identity()
    for trial_id in trials:
        store.write_trial(*_row(trial_id))
    return store


def _copy_trial(src: Path, dst: Path, trial_id: str) -> None:
    for table in ("trials", "epochs", "members"):
        shutil.copy(src / "tiny" / table / f"{trial_id}.parquet", dst / "tiny" / table)


def test_each_row_carries_the_sweep_id(tmp_path: Path) -> None:
    store = _store(tmp_path, ["a"])
    sweep_id = (tmp_path / "tiny" / "sweep_id").read_text().strip()
    assert len(sweep_id) == 32 and store.sweep_id == sweep_id
    for table in ("trials", "epochs", "members"):
        frame = pd.read_parquet(tmp_path / "tiny" / table)
        assert "sweep_id" in frame.columns
        assert set(frame["sweep_id"]) <= {sweep_id}


def test_a_trial_copied_from_another_sweep_is_not_counted_and_is_moved_aside(
    tmp_path: Path,
) -> None:
    mine = _store(tmp_path / "mine", ["a", "b"])
    _store(tmp_path / "other", ["x"])  # same sweep name, another results root: another sweep
    _copy_trial(tmp_path / "other", tmp_path / "mine", "x")
    fresh = ResultStore(str(tmp_path / "mine"), "tiny")
    assert fresh.completed_trial_ids() == {"a", "b"}  # by content, not by file name
    assert study_with_history(load_spec(TINY), fresh)[2] == 2  # the sweep runs its 3rd trial
    moved = fresh.repair()
    assert {Path(src).name for src, _ in moved} == {"x.parquet"} and len(moved) == 3
    assert all(f"/{CORRUPT_DIR}/" in dst for _, dst in moved)
    assert mine.completed_trial_ids() == {"a", "b"}

    # a trials file renamed to another trial's name: its content says which trial it is
    shutil.copy(tmp_path / "mine" / "tiny" / "trials" / "a.parquet",
                tmp_path / "mine" / "tiny" / "trials" / "c.parquet")
    moved = ResultStore(str(tmp_path / "mine"), "tiny").repair()
    assert "c.parquet" in {Path(src).name for src, _ in moved}


@pytest.mark.parametrize("damage", ["truncate_members", "delete_epochs"])
def test_a_partial_trial_is_not_counted_and_is_run_again(tmp_path: Path, damage: str) -> None:
    _store(tmp_path, ["a", "b"])
    folder = tmp_path / "tiny"
    if damage == "truncate_members":
        path = folder / "members" / "b.parquet"
        path.write_bytes(path.read_bytes()[:20])
    else:
        (folder / "epochs" / "b.parquet").unlink()
    store = ResultStore(str(tmp_path), "tiny")
    assert store.completed_trial_ids() == {"a"}
    store.repair()
    assert not (folder / "trials" / "b.parquet").exists()  # not left recorded with 0 rows
    assert ResultStore(str(tmp_path), "tiny").completed_trial_ids() == {"a"}


def test_recorded_trials_without_spec_yaml_are_refused_naming_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _store(tmp_path, ["a"])
    (tmp_path / "tiny" / "spec.yaml").unlink()
    with pytest.raises(SersweepError, match=r"spec.yaml is missing.*Restore spec.yaml"):
        ResultStore(str(tmp_path), "tiny").claim_identity()
    before = sorted(p.name for p in (tmp_path / "tiny").rglob("*"))
    args = [str(TINY), "--results", str(tmp_path), "--set", "train.epochs=1",
            "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    assert cli.main(args) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "spec.yaml is missing" in err[0]
    assert sorted(p.name for p in (tmp_path / "tiny").rglob("*")) == before  # nothing written


def test_a_sweep_id_file_lost_while_rows_carry_one_is_refused(tmp_path: Path) -> None:
    _store(tmp_path, ["a"])
    (tmp_path / "tiny" / "sweep_id").unlink()
    with pytest.raises(SersweepError, match="sweep_id is missing"):
        ResultStore(str(tmp_path), "tiny").claim_identity()


def test_an_unreachable_address_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    results = tmp_path / "results"
    args = [str(TINY), "--results", str(results), "--address", "127.0.0.1:9",
            "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    assert cli.main(args) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "127.0.0.1:9" in err[-1]
    written = [p for p in results.rglob("*") if p.is_file()] if results.exists() else []
    assert written == []  # no spec.yaml, baseline, journal, sweep_id or lease


def test_an_unreachable_address_is_refused_when_this_process_runs_ray_already(
    ray_local, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A caller that started Ray itself (a bench, a notebook) and names another cluster is told
    that the address is unreachable; the running Ray is not used in its place."""
    test_an_unreachable_address_writes_nothing(tmp_path, capsys)
