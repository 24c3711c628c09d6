"""The store of one sweep: write a trial's three files, read its tables, repair what a killed
driver left.

Layout (docs/design.md): <root>/<sweep>/spec.yaml, trials/<trial_id>.parquet,
epochs/<trial_id>.parquet, members/<trial_id>.parquet; every column is typed and documented in
schema.py. Only the driver writes (store/callback.py), one trial at a time, when it ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator.store import schema
from orchestrator.store.files import (
    SPEC_FILE,
    DataFile,
    StoreWriteError,
    is_complete_name,
    join,
    list_files,
    read_dir,
    resolve,
    write_bytes,
    write_table,
)
from orchestrator.store.lock import SweepLockLostError
from trainables.errors import SersweepError

log = logging.getLogger(__name__)
SWEEP_ID_FILE = "sweep_id"  # <sweep>/sweep_id: one line, the sweep's identity (a uuid)
CORRUPT_DIR = "corrupt"  # <sweep>/corrupt/<table>/: files ResultStore.repair moved aside


class ResultStore:
    """The store of one sweep under `root` (a local path or a pyarrow.fs URI)."""

    def __init__(
        self, root: str, sweep: str, *, param_types: dict[str, pa.DataType] | None = None,
        fence: Callable[[], None] | None = None,
    ) -> None:
        """`param_types`: the sweep's `schema.param_types`; `fence`: raises SweepLockLostError
        once the writer no longer holds the sweep's lease (lock.Fence.check), run before and
        after each trial is written (the writer's; readers need neither). The sweep's identity
        (`sweep_id`) is read from <sweep>/sweep_id when first needed (`claim_identity`)."""
        self.root = root
        self.sweep = sweep
        self.param_types = dict(param_types or {})
        self.fence = fence
        self._sweep_id: str | None = None
        self.sweep_dir = join(root, sweep) if "://" in root else os.path.join(root, sweep)
        self.fs, self._path = resolve(self.sweep_dir)

    def _file(self, table: str, trial_id: str) -> str:
        return join(self._path, table, f"{trial_id}.parquet")

    def write_trial(
        self, trial_row: dict, epoch_rows: list[dict], member_rows: list[dict]
    ) -> None:
        """Write (or replace) one trial's three files. Epoch rows are deduplicated on
        (trial_id, member, epoch) keeping the last. The trials file is written last, so a trial
        listed by `completed_trial_ids` always has its epochs and members. StoreWriteError (disk
        full, read-only) names the file; a new trial's files written before it are deleted."""
        trial_id = str(trial_row[schema.TRIAL_ID])
        base = {"trial_id": trial_id, schema.SWEEP: self.sweep, schema.SWEEP_ID: self.sweep_id}
        trial_row = {**trial_row, **base}
        unique: dict[tuple, dict] = {}
        for row in epoch_rows:
            row = {**row, **base}
            unique[tuple(row.get(k) for k in schema.EPOCH_KEY)] = row
        epochs = sorted(unique.values(), key=lambda r: (r.get("member"), r.get("epoch")))
        members = [{**row, **base} for row in member_rows]
        if self.fence is not None:
            self.fence()
        recorded = self.fs.get_file_info(self._file("trials", trial_id)).is_file
        written: list[str] = []
        try:
            for table, rows in (("epochs", epochs), ("members", members), ("trials", [trial_row])):
                types = self.param_types if table == "trials" else None
                # the trials file makes the trial recorded: the fence is checked right before
                # it appears, and again after (a writer stalled in between takes it back)
                write_table(self.fs, self._file(table, trial_id),
                            schema.to_table(table, rows, types),
                            before_commit=self.fence if table == "trials" else None)
                written.append(self._file(table, trial_id))
            if self.fence is not None:
                self.fence()
        except (StoreWriteError, SweepLockLostError):
            # A new trial half-written (disk full, read-only, lease lost) is taken back, so
            # readers see only complete trials of the lease holder; a rewrite keeps its files
            # (each is the old or the new version). Where even deleting fails, the next run's
            # repair() moves them aside.
            if not recorded:
                for path in written:
                    with contextlib.suppress(OSError):
                        self.fs.delete_file(path)
            raise

    # -- identity: rows that belong ------------------------------------------------------------

    @property
    def sweep_id(self) -> str | None:
        """This sweep's identity: <sweep>/sweep_id (None: not written yet)."""
        if self._sweep_id is None:
            with contextlib.suppress(FileNotFoundError):
                with self.fs.open_input_stream(join(self._path, SWEEP_ID_FILE)) as stream:
                    self._sweep_id = stream.read().decode(errors="replace").strip() or None
        return self._sweep_id

    def claim_identity(self) -> str:
        """The sweep's id for a run about to write: the recorded one, or a new one (written by
        `write_identity` once the run can start). SersweepError, naming the fix, when recorded
        trials lost what says which sweep they are: spec.yaml (a different sweep file would
        continue them silently), or sweep_id while the rows carry one."""
        trials = self.files("trials")
        spec = self.fs.get_file_info(join(self._path, SPEC_FILE)).type
        if trials and spec == pafs.FileType.NotFound:
            raise SersweepError(
                f"{self.sweep_dir}/{SPEC_FILE} is missing, but the folder holds {len(trials)} "
                "recorded trial files: the sweep they belong to is unknown, so it is not "
                f"continued. Restore {SPEC_FILE} (the sweep file it was run with), or start a "
                "new sweep with --results DIR or another `name:`")
        if self.sweep_id is None:
            ids = set(self._rows_ids()) - {None}
            if ids:
                raise SersweepError(
                    f"{self.sweep_dir}/{SWEEP_ID_FILE} is missing, but recorded trials carry "
                    f"sweep ids ({', '.join(sorted(ids)[:3])}): write the sweep's own id back "
                    f"into {SWEEP_ID_FILE} (one line), or start a new sweep with --results DIR "
                    "or another `name:`")
            self._sweep_id = uuid.uuid4().hex
        return self._sweep_id

    def write_identity(self) -> None:
        """Write <sweep>/sweep_id (once; `claim_identity` first)."""
        if self.fs.get_file_info(join(self._path, SWEEP_ID_FILE)).type != pafs.FileType.File:
            text = (self.claim_identity() + "\n").encode()
            write_bytes(self.fs, join(self._path, SWEEP_ID_FILE), text)

    def _rows_ids(self) -> list[str | None]:
        frame = self.read_table("trials")
        if frame.empty or schema.SWEEP_ID not in frame:
            return []
        return [None if pd.isna(v) else str(v) for v in frame[schema.SWEEP_ID]]

    def _foreign(self, row: dict, file_stem: str | None) -> str | None:
        """Why a trials row does not belong to this sweep, else None."""
        name, sid = row.get(schema.SWEEP), row.get(schema.SWEEP_ID)
        if name != self.sweep:
            return f"of sweep {name!r}"
        if sid is not None and not pd.isna(sid) and sid != self.sweep_id:
            return f"of another sweep named {name!r} (sweep id {sid})"
        if file_stem is not None and str(row.get(schema.TRIAL_ID)) != file_stem:
            return f"holding trial {row.get(schema.TRIAL_ID)!r} under another name"
        return None

    def _readable(self, path: str) -> bool:
        try:
            with self.fs.open_input_file(path) as handle:
                pq.read_metadata(handle)
            return True
        except (OSError, pa.ArrowException):
            return False

    def _missing_parts(self, trial_id: str) -> list[str]:
        """The tables whose per-trial file of `trial_id` is absent or unreadable."""
        return [t for t in ("epochs", "members") if not self._readable(self._file(t, trial_id))]

    def recorded_trials(self) -> pd.DataFrame:
        """The trials that count: rows of this sweep (name and sweep id), each with its epochs
        and members files (a per-trial row whose other files are missing or unreadable is
        partial: not counted, so it is run again). Counted by content, not by file name."""
        frame = self.read_trials()
        if frame.empty:
            return frame
        singles = {f.name.removesuffix(".parquet") for f in self.files("trials") if not f.compact}
        keep = []
        for row in frame.to_dict("records"):
            tid = str(row[schema.TRIAL_ID])
            keep.append(self._foreign(row, None) is None
                        and not (tid in singles and self._missing_parts(tid)))
        return frame[keep].reset_index(drop=True)

    def files(self, table: str) -> list[DataFile]:
        return list_files(self.fs, join(self._path, table))

    def read_table(self, table: str) -> pd.DataFrame:
        return read_dir(self.fs, join(self._path, table))

    def read_trials(self) -> pd.DataFrame:
        """Every recorded trial (one row each); unreadable files skipped with a warning."""
        frame = self.read_table("trials")
        if frame.empty:
            return pd.DataFrame(columns=schema.TRIALS_SCHEMA.names)
        return frame

    def repair(self) -> list[tuple[str, str]]:
        """Move aside what a crashed or killed writer left, so the store holds complete trials
        only; returns (from, to) of every file moved, each also logged as a warning.

        Moved to <sweep>/corrupt/<table>/ (never deleted, so nothing is lost for good):
        unreadable files (a truncated file has no Parquet footer; only footers are read, so this
        stays cheap on big stores), stale temporary files of an interrupted write, and per-trial
        epochs/members files of a trial with no trials row (write_trial writes the trials file
        last: a driver killed in between left them). Such a trial is not recorded, so a resumed
        run replaces it. Call only while no driver writes this sweep (the runner, at start)."""
        moved: list[tuple[str, str]] = []

        def move_aside(table: str, file_path: str, why: str) -> None:
            name = file_path.rsplit("/", 1)[-1]
            target = join(self._path, CORRUPT_DIR, table, name)
            if self.fs.get_file_info(target).type != pafs.FileType.NotFound:
                target = f"{target}.{time.time_ns()}"
            self.fs.create_dir(join(self._path, CORRUPT_DIR, table), recursive=True)
            self.fs.move(file_path, target)
            log.warning("moved %s result file %s to %s", why, file_path, target)
            moved.append((file_path, target))

        for table in schema.TABLES:
            folder = join(self._path, table)
            selector = pafs.FileSelector(folder, allow_not_found=True)
            for info in self.fs.get_file_info(selector):
                if not info.is_file:
                    continue
                if info.base_name.startswith(".") and ".tmp-" in info.base_name:
                    move_aside(table, info.path, "the temporary (interrupted write)")
                    continue
                if not is_complete_name(info.base_name):
                    continue
                try:
                    with self.fs.open_input_file(info.path) as handle:
                        pq.read_metadata(handle)
                except (OSError, pa.ArrowException):
                    move_aside(table, info.path, "unreadable")
        for file in self.files("trials"):  # rows of another sweep, or a trial missing parts
            if file.compact:
                continue
            stem = file.name.removesuffix(".parquet")
            with self.fs.open_input_file(file.path) as handle:
                rows = pq.read_table(handle).to_pylist()
            why = next((w for w in (self._foreign(r, stem) for r in rows) if w), None)
            if why is None and self._missing_parts(stem):
                why = f"partial (its {' and '.join(self._missing_parts(stem))} unreadable)"
            if why is not None:  # every file of that trial id goes: it is run again
                for table in schema.TABLES:
                    path = self._file(table, stem)
                    if self.fs.get_file_info(path).type == pafs.FileType.File:
                        move_aside(table, path, f"the {why}")
        recorded = self.completed_trial_ids()
        for table in ("epochs", schema.MEMBERS):
            for file in self.files(table):
                if not file.compact and file.name.removesuffix(".parquet") not in recorded:
                    move_aside(table, file.path, "the orphaned (no trials row)")
        return moved

    def completed_trial_ids(self) -> set[str]:
        """Ids of every recorded trial that counts (any status; `recorded_trials`)."""
        frame = self.recorded_trials()
        return set() if frame.empty else set(frame[schema.TRIAL_ID].astype(str))
