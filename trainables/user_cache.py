"""The default data cache: an absolute per-user folder, the same from every working directory
(#22.5). `SERSWEEP_CACHE_DIR` when set, else `$XDG_CACHE_HOME/sersweep`, else
`~/.cache/sersweep` (the XDG convention platformdirs follows on Linux; macOS and Windows users
set SERSWEEP_CACHE_DIR or data.cache_dir). A sweep file's `data.cache_dir` wins over all three.
On a multi-node cluster it must be on storage every node reads (the runner checks it)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SERSWEEP_CACHE_DIR"
XDG_ENV = "XDG_CACHE_HOME"


def default_cache_dir() -> str:
    """The data cache when the sweep file names none (absolute, user expanded)."""
    chosen = os.environ.get(CACHE_ENV, "").strip()
    if chosen:
        return str(Path(chosen).expanduser().resolve())
    base = os.environ.get(XDG_ENV, "").strip()
    root = Path(base).expanduser() if base and Path(base).expanduser().is_absolute() \
        else Path.home() / ".cache"
    return str((root / "sersweep").resolve())
