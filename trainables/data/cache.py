"""The on-disk cache of prepared data: key from the data config, atomic writes, safe loads."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

CACHE_VERSION = 1  # bump when featurization changes: old cache files are then never read
# Keys that do not change the featurized tensors: folds are rebuilt on every call (cheap).
NOT_IN_KEY = ("cache_dir", "folds", "n_folds", "use_folds")


def cache_key(data_cfg: dict[str, Any], fingerprint: str = "") -> str:
    """A short hash of the data config (minus NOT_IN_KEY), the corpus fingerprint and version."""
    relevant = {k: v for k, v in data_cfg.items() if k not in NOT_IN_KEY}
    text = json.dumps([CACHE_VERSION, relevant, fingerprint], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_path(cache_dir: str | os.PathLike, key: str, feature_kind: str) -> Path:
    return Path(cache_dir).expanduser() / "prepared" / f"{feature_kind}_{key}.pt"


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path: Path) -> dict[str, Any] | None:
    """The cached dict, or None when absent or unreadable (then it is rebuilt and rewritten)."""
    # torch.save writes a zip archive; anything else (a truncated or foreign file) is rebuilt.
    if not path.exists() or not zipfile.is_zipfile(path):
        return None
    try:
        # weights_only: only tensors and plain containers, never arbitrary pickled objects.
        obj = torch.load(path, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError):  # corrupt
        return None
    return obj if isinstance(obj, dict) and "features" in obj else None
