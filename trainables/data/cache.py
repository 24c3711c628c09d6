"""The on-disk cache of prepared data: key from the data config, atomic writes, verified loads.

Each entry `<kind>_<key>.pt` has a checksum file beside it, `<kind>_<key>.pt.sha256` (JSON: the
entry's sha256 and size), written after the entry. `load` checks both before unpickling anything:
a truncated file, a flipped byte (which torch.load would read silently as a wrong feature value),
an unreadable file, or a missing / damaged checksum file each make it a miss, with one warning
line naming the file and what was wrong, and the caller rebuilds and rewrites the entry. An entry
without a checksum file (written by an older sersweep, or a writer killed between the two files)
cannot be trusted, so it is rebuilt too, once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when featurization changes: old cache files are then never read
# Keys that do not change the featurized tensors: folds are rebuilt on every call (cheap).
NOT_IN_KEY = ("cache_dir", "folds", "n_folds", "use_folds", "val", "val_fraction")
CHECKSUM_SUFFIX = ".sha256"
# What torch.load raises on a file that is not a loadable archive of plain tensors/containers.
_LOAD_ERRORS = (RuntimeError, EOFError, OSError, ValueError, KeyError, pickle.UnpicklingError)


def cache_key(data_cfg: dict[str, Any], fingerprint: str = "") -> str:
    """A short hash of the data config (minus NOT_IN_KEY), the corpus fingerprint and version."""
    relevant = {k: v for k, v in data_cfg.items() if k not in NOT_IN_KEY}
    text = json.dumps([CACHE_VERSION, relevant, fingerprint], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_path(cache_dir: str | os.PathLike, key: str, feature_kind: str) -> Path:
    return Path(cache_dir).expanduser() / "prepared" / f"{feature_kind}_{key}.pt"


def checksum_path(path: Path) -> Path:
    """The checksum file of a cache entry: `<entry>.sha256` beside it."""
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write` into a temporary file in the same folder, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w+b") as handle:  # readable too: save_atomic hashes what it wrote
            write(handle)
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """torch.save `obj` to `path` atomically, then its checksum file (see the module docstring).

    The entry goes first: a reader in between (or after a crash in between) finds the old or no
    checksum, which fails verification, so the worst case is a rebuild, never a wrong load."""
    digest: dict[str, Any] = {}

    def write(handle: BinaryIO) -> None:
        torch.save(obj, handle)
        handle.flush()
        handle.seek(0)
        digest["sha256"] = hashlib.file_digest(handle, "sha256").hexdigest()
        digest["size"] = handle.tell()

    _write_atomic(path, write)
    text = json.dumps({"file": path.name, **digest}).encode()
    _write_atomic(checksum_path(path), lambda handle: handle.write(text))


def _verify(path: Path) -> str | None:
    """None if `path` matches its checksum file, else what is wrong (one line)."""
    sidecar = checksum_path(path)
    try:
        recorded = json.loads(sidecar.read_text())
        expected_sha, expected_size = str(recorded["sha256"]), int(recorded["size"])
    except FileNotFoundError:
        return f"has no checksum file {sidecar.name} (written before checksums, or interrupted)"
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return f"has an unreadable checksum file {sidecar.name} ({type(exc).__name__}: {exc})"
    try:
        size = path.stat().st_size
        if size != expected_size:
            return f"is truncated or damaged: {size} bytes, {expected_size} recorded"
        actual = file_sha256(path)
    except OSError as exc:
        return f"is unreadable ({type(exc).__name__}: {exc})"
    if actual != expected_sha:
        return f"is corrupt: sha256 {actual[:16]}..., {expected_sha[:16]}... recorded"
    return None


def _rebuild_note(path: Path, why: str) -> None:
    log.warning("feature cache entry %s %s: rebuilding it", path, why)


def load(path: Path) -> dict[str, Any] | None:
    """The cached dict, or None when absent, corrupt or unloadable (then it is rebuilt and
    rewritten; anything but absence is noted in one warning line naming the file)."""
    if not path.exists():
        return None
    why = _verify(path)
    if why is not None:
        _rebuild_note(path, why)
        return None
    try:
        # weights_only: only tensors and plain containers, never arbitrary pickled objects.
        obj = torch.load(path, weights_only=True)
    except _LOAD_ERRORS as exc:  # checksum fine, content not loadable (e.g. another torch)
        first_line = (str(exc).splitlines() or [""])[0]  # the note stays one line
        _rebuild_note(path, f"does not load ({type(exc).__name__}: {first_line})")
        return None
    if not isinstance(obj, dict) or "features" not in obj:
        _rebuild_note(path, "does not hold a prepared-data dict")
        return None
    return obj
