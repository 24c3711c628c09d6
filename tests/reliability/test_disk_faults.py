"""A full or read-only disk while the store writes a trial (orchestrator/store/files.py): the run
stops with one error naming the file (StoreWriteError, exit 2), the results folder holds exactly
the trials recorded before it (the half-written trial is taken back, no temporary file), they read
back intact, and the same command, once the disk is fine, completes the sweep with no lost and no
duplicated rows.

The fault is injected at the store's one low-level write (`files._write_file`) for the Nth table
file written, through a real sweep (real Ray, Tune, Optuna, Parquet) run in this process."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.store import StoreWriteError, files
from tests.reliability.drivers import assert_store_consistent, table_files, tiny_args

TRIALS = 4  # tiny.yaml: one trial at a time, 3 epochs
SWEEP = "tiny_rel"
TABLES = ("trials", "epochs", "members")
# write_trial writes, per trial: epochs, members, trials (the trials file last)
FAULTS = {
    # ENOSPC on the 3rd trial's members file: its epochs file was already written
    "enospc_mid_trial": (errno.ENOSPC, 2 * 3 + 2, "members"),
    # EROFS on the 2nd trial's trials file: its epochs and members files were written
    "erofs_last_file": (errno.EROFS, 1 * 3 + 3, "trials"),
}


def _table_writes(monkeypatch: pytest.MonkeyPatch, fail_at: int, code: int) -> list[str]:
    """Make the `fail_at`-th write of a table file raise OSError(code); returns the paths."""
    real = files._write_file
    seen: list[str] = []

    def write_file(fs, path: str, write) -> None:
        if path.rsplit("/", 2)[-2] in TABLES:
            seen.append(path)
            if len(seen) == fail_at:
                raise OSError(code, os.strerror(code), path)
        real(fs, path, write)

    monkeypatch.setattr(files, "_write_file", write_file)
    return seen


def _listing(sweep_dir: Path) -> dict[str, list[str]]:
    """Every file (hidden ones too) of each table folder."""
    return {t: sorted(p.name for p in (sweep_dir / t).iterdir()) for t in TABLES}


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_disk_fault_stops_the_run_naming_the_file_and_the_same_command_repairs(
    fault: str, ray_local, tmp_path: Path, data_cache: Path, monkeypatch, capsys
) -> None:
    code, fail_at, table = FAULTS[fault]
    recorded = (fail_at - 1) // 3  # trials fully written before the fault
    results = tmp_path / "results"
    sweep_dir = results / SWEEP
    args = tiny_args(results, data_cache, "--trials", str(TRIALS))
    writes = _table_writes(monkeypatch, fail_at, code)

    assert cli.main(args) == cli.EXIT_BAD_INPUT  # the CLI's code for a SersweepError
    err = capsys.readouterr().err
    failed = writes[fail_at - 1]  # the final name; the fault hit its hidden temporary
    final = failed.rsplit("/", 1)[0] + "/" + failed.rsplit("/", 1)[1][1:].split(".tmp-")[0]
    assert final.endswith(".parquet") and final.rsplit("/", 2)[-2] == table, final
    assert f"error: {final}: cannot write the result file: {os.strerror(code)}" in err, err
    assert err.count("error: ") == 1, err

    # exactly the trials recorded before the fault, each with its three files; nothing else
    ids = sorted(p.stem for p in table_files(sweep_dir, "trials"))
    assert len(ids) == recorded, ids
    assert _listing(sweep_dir) == {t: [f"{i}.parquet" for i in ids] for t in TABLES}
    assert not (sweep_dir / "corrupt").exists()
    before = {f"{t}/{i}": (sweep_dir / t / f"{i}.parquet").read_bytes() for t in TABLES
              for i in ids}  # fmt: skip
    assert_store_consistent(sweep_dir, recorded)  # every earlier row reads back

    monkeypatch.undo()  # the disk is fine again: the same command continues
    rc = cli.main(args)
    out, err = capsys.readouterr()
    assert rc == cli.EXIT_OK, err[-3000:]
    assert f"{recorded} trials recorded, {TRIALS - recorded} to go" in out, out[-2000:]
    results_frame = assert_store_consistent(sweep_dir, TRIALS)  # none lost, none duplicated
    assert set(ids) <= set(results_frame.trials["trial_id"])
    after = {f"{t}/{i}": (sweep_dir / t / f"{i}.parquet").read_bytes() for t in TABLES
             for i in ids}  # fmt: skip
    assert after == before, "a trial recorded before the fault changed"


def test_the_error_names_the_file_and_the_cause(tmp_path: Path, monkeypatch) -> None:
    """Without Ray: a write_spec on a full disk raises StoreWriteError naming spec.yaml, and
    leaves neither the file nor a temporary behind."""

    def full(fs, path, write) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(files, "_write_file", full)
    with pytest.raises(StoreWriteError) as caught:
        files.write_spec(str(tmp_path), {"name": "x"})
    assert caught.value.errno == errno.ENOSPC and caught.value.path == f"{tmp_path}/spec.yaml"
    assert str(caught.value).startswith(f"{tmp_path}/spec.yaml: cannot write the result file: "
                                        "No space left on device")
    assert list(tmp_path.iterdir()) == []
