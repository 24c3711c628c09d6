"""The Parquet result store: layout, atomic writes, tolerant reads, and the driver-side callback.

Layout (DESIGN.md): <root>/<sweep>/spec.yaml, trials/<trial_id>.parquet, epochs/<trial_id>.parquet,
members/<trial_id>.parquet. Every column is typed and documented in orchestrator/schema.py.
`root` is a local path or any URI pyarrow.fs understands (file://, s3://, gs://, ...).

Atomicity: on a local filesystem each file is written to a hidden temporary name in the same folder
(`.<name>.tmp-<uuid>`: no `.parquet` suffix and a `.` prefix, so neither globs nor pyarrow datasets
see it) and renamed over the final name. Object stores make a single PUT atomic, so there the
file is written in place. A rewrite of a trial replaces its files: rows are keyed by trial id.
"""

from __future__ import annotations

import io
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from orchestrator import schema

log = logging.getLogger(__name__)
CORRUPT_DIR = "corrupt"  # <sweep>/corrupt/<table>/: files ResultStore.repair moved aside

__all__ = ["ResultStore", "write_spec", "resolve", "read_dir", "list_files"]


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) of a local path or a URI."""
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _atomic_write(fs: pafs.FileSystem, path: str, write: Callable[[io.IOBase], None]) -> None:
    folder, name = path.rsplit("/", 1)
    fs.create_dir(folder, recursive=True)
    if fs.type_name != "local":  # object stores: one PUT is atomic
        with fs.open_output_stream(path) as out:
            write(out)
        return
    tmp = _join(folder, f".{name}.tmp-{uuid.uuid4().hex}")
    try:
        with fs.open_output_stream(tmp) as out:
            write(out)
        fs.move(tmp, path)  # rename(2): atomic, replaces
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise


def write_table(fs: pafs.FileSystem, path: str, table: pa.Table, **options) -> None:
    """Write one Parquet file atomically (`options`: pyarrow.parquet.write_table's)."""
    options.setdefault("compression", "zstd")
    _atomic_write(fs, path, lambda out: pq.write_table(table, out, **options))


def write_spec(sweep_dir: str, spec_dict: dict) -> None:
    """Write <sweep_dir>/spec.yaml atomically (sweep_dir: a path or URI)."""
    fs, path = resolve(sweep_dir)
    text = yaml.safe_dump(spec_dict, sort_keys=False).encode()
    _atomic_write(fs, _join(path, "spec.yaml"), lambda out: out.write(text))


def is_complete_name(name: str) -> bool:
    """A finished data file (not a temporary one)."""
    return name.endswith(".parquet") and not name.startswith((".", "_"))


@dataclass(frozen=True)
class DataFile:
    path: str
    size: int
    mtime_ns: int | None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def compact(self) -> bool:
        return self.name.startswith(schema.COMPACT_PREFIX)


def list_files(fs: pafs.FileSystem, folder: str) -> list[DataFile]:
    """Complete files of one table folder: compact files (oldest first), then per-trial files.

    Later files win when a trial is in several (see `read_files`)."""
    selector = pafs.FileSelector(folder, allow_not_found=True)
    infos = [i for i in fs.get_file_info(selector) if i.is_file and is_complete_name(i.base_name)]
    files = [DataFile(i.path, i.size or 0, i.mtime_ns) for i in infos]
    return sorted(files, key=lambda f: (not f.compact, f.name))


class _Vanished(Exception):
    """A listed file disappeared (a concurrent compaction merged it): list again."""


def _read_one(fs: pafs.FileSystem, file: DataFile, filters=None) -> pa.Table | None:
    try:
        with fs.open_input_file(file.path) as handle:
            return pq.read_table(handle, filters=filters)
    except FileNotFoundError as exc:
        raise _Vanished(file.path) from exc
    except (OSError, pa.ArrowException) as exc:
        log.warning("skipping unreadable result file %s: %s", file.path, exc)
        return None


def _read_many(fs: pafs.FileSystem, files: list[DataFile]) -> tuple[pa.Table | None, list]:
    """Per-trial files in one multi-threaded dataset scan; file by file if that fails."""
    try:
        found = ds.dataset([f.path for f in files], filesystem=fs, format="parquet")
        return found.to_table(), list(files)
    except FileNotFoundError as exc:
        raise _Vanished(str(exc)) from exc
    except (OSError, pa.ArrowException):
        pass  # a truncated file or differing column types: find out file by file
    pairs = [(f, _read_one(fs, f)) for f in files]
    tables = [t for _, t in pairs if t is not None and t.num_rows]
    good = [f for f, t in pairs if t is not None]
    return (pa.concat_tables(tables, promote_options="permissive") if tables else None), good


def read_arrow(
    fs: pafs.FileSystem, files: list[DataFile], trial_ids: set[str] | None = None
) -> tuple[pa.Table | None, list[DataFile]]:
    """Read files (as `list_files` orders them) -> (rows, the files read without error).

    Each trial is taken from ONE file, the last one holding it, so a trial in both a compact file
    and a newer per-trial file is never doubled. Unreadable / truncated files are skipped with a
    warning naming the file. `trial_ids`: read only those trials. Raises _Vanished if a file
    disappeared meanwhile (`read_dir` lists again)."""
    compacts = [f for f in files if f.compact]
    singles = [f for f in files if not f.compact]
    filters = None
    if trial_ids is not None:
        filters = [("trial_id", "in", sorted(trial_ids))]
        singles = [f for f in singles if f.name.removesuffix(".parquet") in trial_ids]
    parts = [(rank, _read_one(fs, f, filters)) for rank, f in enumerate(compacts)]
    good = [f for (_, t), f in zip(parts, compacts) if t is not None]
    if singles:
        table, read = _read_many(fs, singles)
        parts.append((len(compacts), table))
        good += read
    parts = [(rank, t) for rank, t in parts if t is not None and t.num_rows]
    if len(parts) <= 1:
        return (parts[0][1] if parts else None), good
    merged = pa.concat_tables(
        [t.append_column("_rank", pa.array([r] * t.num_rows)) for r, t in parts],
        promote_options="permissive",
    )
    keys = merged.select(["sweep", "trial_id", "_rank"]).to_pandas()
    newest = keys.groupby(["sweep", "trial_id"], sort=False)["_rank"].transform("max")
    keep = pa.array((keys["_rank"] == newest).to_numpy())
    return merged.filter(keep).drop_columns("_rank"), good


def read_dir(
    fs: pafs.FileSystem, folder: str, trial_ids: set[str] | None = None
) -> pd.DataFrame:
    """All rows of one table folder, each trial once (retries if a compaction races the read)."""
    for attempt in range(6):
        try:
            table, _ = read_arrow(fs, list_files(fs, folder), trial_ids)
            return pd.DataFrame() if table is None else table.to_pandas()
        except _Vanished:
            time.sleep(0.05 * (attempt + 1))
    raise OSError(f"files under {folder} kept disappearing while reading")


class ResultStore:
    """The store of one sweep under `root` (a local path or a pyarrow.fs URI)."""

    def __init__(self, root: str, sweep: str) -> None:
        self.root = root
        self.sweep = sweep
        self.sweep_dir = _join(root, sweep) if "://" in root else os.path.join(root, sweep)
        self.fs, self._path = resolve(self.sweep_dir)

    def _file(self, table: str, trial_id: str) -> str:
        return _join(self._path, table, f"{trial_id}.parquet")

    def write_trial(
        self, trial_row: dict, epoch_rows: list[dict], member_rows: list[dict]
    ) -> None:
        """Write (or replace) one trial's three files. Epoch rows are deduplicated on
        (trial_id, member, epoch) keeping the last. The trials file is written last, so a trial
        listed by `completed_trial_ids` always has its epochs and members."""
        trial_id = str(trial_row["trial_id"])
        base = {"trial_id": trial_id, "sweep": self.sweep}
        trial_row = {**trial_row, **base}
        unique: dict[tuple, dict] = {}
        for row in epoch_rows:
            row = {**row, **base}
            unique[tuple(row.get(k) for k in schema.EPOCH_KEY)] = row
        epochs = sorted(unique.values(), key=lambda r: (r.get("member"), r.get("epoch")))
        members = [{**row, **base} for row in member_rows]
        for table, rows in (("epochs", epochs), ("members", members), ("trials", [trial_row])):
            write_table(self.fs, self._file(table, trial_id), schema.to_table(table, rows))

    def files(self, table: str) -> list[DataFile]:
        return list_files(self.fs, _join(self._path, table))

    def read_table(self, table: str) -> pd.DataFrame:
        return read_dir(self.fs, _join(self._path, table))

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
            target = _join(self._path, CORRUPT_DIR, table, name)
            if self.fs.get_file_info(target).type != pafs.FileType.NotFound:
                target = f"{target}.{time.time_ns()}"
            self.fs.create_dir(_join(self._path, CORRUPT_DIR, table), recursive=True)
            self.fs.move(file_path, target)
            log.warning("moved %s result file %s to %s", why, file_path, target)
            moved.append((file_path, target))

        for table in schema.TABLES:
            folder = _join(self._path, table)
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
        recorded = self.completed_trial_ids()
        for table in ("epochs", "members"):
            for file in self.files(table):
                if not file.compact and file.name.removesuffix(".parquet") not in recorded:
                    move_aside(table, file.path, "the orphaned (no trials row)")
        return moved

    def completed_trial_ids(self) -> set[str]:
        """Ids of every trial with a row (any status: the trial ended and was recorded)."""
        files = self.files("trials")
        if not any(f.compact for f in files):
            return {f.name.removesuffix(".parquet") for f in files}
        return set(self.read_trials()["trial_id"].astype(str))
