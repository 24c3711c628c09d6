"""Compaction: merge a sweep's per-trial files into one file per table, so big sweeps query fast.

See `compact` for the order of operations that keeps concurrent readers correct.
"""

from __future__ import annotations

import time

from orchestrator.query.results import QueryError, load
from orchestrator.store import list_files, schema, write_table
from orchestrator.store.files import Vanished, read_arrow


def compact(sweep_dir: str) -> dict[str, int]:
    """Merge each table's files into one `compact-<time>.parquet` (sorted by trial, so curve
    fetches prune row groups). Order: write the merged file (atomically), then delete the merged
    per-trial files, then older compact files. A reader that lists at any instant sees each trial
    at least once, and de-duplicates by trial (a per-trial file beats a compact one, a newer
    compact beats an older), so it sees each exactly once; a file deleted between a reader's
    listing and its read makes the reader list again. A per-trial file rewritten during compaction
    is kept. `sweep_dir` may also be a results root (every sweep under it is compacted).
    Returns {table: files merged}."""
    results = load(sweep_dir)
    merged: dict[str, int] = {}
    for path in results.sweeps.values():
        for table in schema.TABLES:
            folder = f"{path}/{table}"
            for _ in range(6):
                files = list_files(results.fs, folder)
                if len(files) <= 1:
                    break
                try:
                    data, good = read_arrow(results.fs, files)
                    break
                except Vanished:
                    continue
            else:
                raise QueryError(f"{folder} kept changing; try --compact again")
            if len(files) <= 1 or data is None:
                continue
            order = [c for c in schema.EPOCH_KEY if c in data.column_names]
            data = data.sort_by([(c, "ascending") for c in order])
            target = f"{folder}/{schema.COMPACT_PREFIX}{time.time_ns():020d}.parquet"
            write_table(results.fs, target, data, row_group_size=65536)
            for file in sorted(good, key=lambda f: f.compact):  # per-trial files first
                now = results.fs.get_file_info(file.path)
                if now.size == file.size and now.mtime_ns == file.mtime_ns:
                    results.fs.delete_file(file.path)
            merged[table] = merged.get(table, 0) + len(good)
    return merged

