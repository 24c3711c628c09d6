"""Files of the result store: paths and URIs, atomic writes, listing, tolerant reads.

`resolve` takes a local path or any URI pyarrow.fs understands (file://, s3://, gs://, ...).

Atomicity: on a local filesystem each file is written to a hidden temporary name in the same folder
(`.<name>.tmp-<uuid>`: no `.parquet` suffix and a `.` prefix, so neither globs nor pyarrow datasets
see it) and renamed over the final name. Object stores make a single PUT atomic, so there the
file is written in place. A rewrite of a trial replaces its files: rows are keyed by trial id.

Disk faults: any OSError while writing (ENOSPC full disk, EROFS read-only, EDQUOT, EACCES, EIO)
becomes StoreWriteError naming the file; the temporary file is removed, so the final name keeps
its previous content (or stays absent) and every earlier file stays readable.
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

from orchestrator.store import schema
from trainables.errors import SersweepError

log = logging.getLogger(__name__)
SPEC_FILE = "spec.yaml"  # <sweep>/spec.yaml: the sweep as run (SweepSpec.as_dict)


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) of a local path or a URI."""
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


class StoreWriteError(SersweepError):
    """A result file cannot be written (disk full, read-only, no permission). `path` names the
    file, `errno` the cause (errno.ENOSPC, errno.EROFS, ...; None when the OS gave none)."""

    def __init__(self, path: str, exc: OSError) -> None:
        self.path = path
        self.errno = exc.errno
        reason = exc.strerror or str(exc) or type(exc).__name__
        super().__init__(
            f"{path}: cannot write the result file: {reason}; every trial recorded before it is "
            "intact: free space (or make the folder writable) and rerun the same command to "
            "continue the sweep"
        )

    def __reduce__(self) -> tuple:  # keep the real message if it is ever pickled
        return (type(self), (self.path, OSError(self.errno, str(self))))


def _write_file(fs: pafs.FileSystem, path: str, write: Callable[[io.IOBase], None]) -> None:
    """The one low-level write of the store: open `path`, let `write` fill it, close it."""
    with fs.open_output_stream(path) as out:
        write(out)


def _atomic_write(fs: pafs.FileSystem, path: str, write: Callable[[io.IOBase], None],
                  before_commit: Callable[[], None] | None = None) -> None:
    """`before_commit` runs last before the file appears under its name (the writer's fence:
    it raises to abandon the write)."""
    folder, name = path.rsplit("/", 1)
    try:
        fs.create_dir(folder, recursive=True)
        if fs.type_name != "local":  # object stores: one PUT is atomic
            if before_commit is not None:
                before_commit()
            _write_file(fs, path, write)
            return
        tmp = join(folder, f".{name}.tmp-{uuid.uuid4().hex}")
        try:
            _write_file(fs, tmp, write)
            if before_commit is not None:
                before_commit()
            fs.move(tmp, path)  # rename(2): atomic, replaces
        except BaseException:
            try:
                fs.delete_file(tmp)
            except OSError:  # never opened, or the folder is read-only: repair moves it aside
                pass
            raise
    except OSError as exc:  # pyarrow's IO errors are OSError too
        raise StoreWriteError(path, exc) from exc


def write_table(fs: pafs.FileSystem, path: str, table: pa.Table,
                before_commit: Callable[[], None] | None = None, **options) -> None:
    """Write one Parquet file atomically (`options`: pyarrow.parquet.write_table's;
    `before_commit`: see _atomic_write)."""
    options.setdefault("compression", "zstd")
    _atomic_write(fs, path, lambda out: pq.write_table(table, out, **options), before_commit)


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write a small file atomically."""
    _atomic_write(fs, path, lambda out: out.write(data))


def write_spec(sweep_dir: str, spec_dict: dict) -> None:
    """Write <sweep_dir>/spec.yaml atomically (sweep_dir: a path or URI)."""
    fs, path = resolve(sweep_dir)
    write_bytes(fs, join(path, SPEC_FILE), yaml.safe_dump(spec_dict, sort_keys=False).encode())


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


class Vanished(Exception):
    """A listed file disappeared (a concurrent compaction merged it): list again."""


def _read_one(fs: pafs.FileSystem, file: DataFile, filters=None) -> pa.Table | None:
    try:
        with fs.open_input_file(file.path) as handle:
            return pq.read_table(handle, filters=filters)
    except FileNotFoundError as exc:
        raise Vanished(file.path) from exc
    except (OSError, pa.ArrowException) as exc:
        log.warning("skipping unreadable result file %s: %s", file.path, exc)
        return None


def _read_many(fs: pafs.FileSystem, files: list[DataFile]) -> tuple[pa.Table | None, list]:
    """Per-trial files in one multi-threaded dataset scan; file by file if that fails."""
    try:
        found = ds.dataset([f.path for f in files], filesystem=fs, format="parquet")
        return found.to_table(), list(files)
    except FileNotFoundError as exc:
        raise Vanished(str(exc)) from exc
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
    warning naming the file. `trial_ids`: read only those trials. Raises Vanished if a file
    disappeared meanwhile (`read_dir` lists again)."""
    compacts = [f for f in files if f.compact]
    singles = [f for f in files if not f.compact]
    filters = None
    if trial_ids is not None:
        filters = [(schema.TRIAL_ID, "in", sorted(trial_ids))]
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
    keys = merged.select([schema.SWEEP, schema.TRIAL_ID, "_rank"]).to_pandas()
    newest = keys.groupby([schema.SWEEP, schema.TRIAL_ID], sort=False)["_rank"].transform("max")
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
        except Vanished:
            time.sleep(0.05 * (attempt + 1))
    raise OSError(f"files under {folder} kept disappearing while reading")
