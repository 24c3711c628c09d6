"""The Parquet result store: what every trial left, typed, in files pandas/pyarrow/DuckDB read.

- schema.py        THE place for columns (typed, documented) and statuses; `trial_status`
- result_store.py  ResultStore: one sweep's trials/epochs/members files; repair after a kill
- files.py         paths and URIs, atomic writes, listing, tolerant reads
- rows.py          a trial's buffered reports -> its rows
- callback.py      StoreCallback: the driver-side Ray Tune callback that writes them
- lock.py          SweepLock: one driver per sweep (a lease in <sweep>/driver.lock/)
`StoreCallback` is imported on first use (it needs Ray; readers of the store do not).
"""

from __future__ import annotations

from typing import Any

from orchestrator.store.files import (
    StoreWriteError,
    list_files,
    read_dir,
    resolve,
    write_spec,
    write_table,
)
from orchestrator.store.lock import (
    BREAK_LOCK_FLAG,
    SweepLock,
    SweepLockedError,
    SweepLockLostError,
    SweepLockWriteError,
    current_lease,
)
from orchestrator.store.result_store import CORRUPT_DIR, ResultStore

__all__ = [
    "BREAK_LOCK_FLAG", "CORRUPT_DIR", "ResultStore", "StoreCallback", "StoreWriteError",
    "SweepLock", "SweepLockLostError", "SweepLockWriteError", "SweepLockedError",
    "current_lease", "list_files", "read_dir", "resolve", "write_spec", "write_table",
]


def __getattr__(name: str) -> Any:
    if name == "StoreCallback":
        from orchestrator.store.callback import StoreCallback

        return StoreCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
