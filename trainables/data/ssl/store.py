"""The on-disk cache of extracted hidden states, and the lazy handle trials read it through.

Layout of `<cache_dir>/ssl/<model>_<key>/` (written under a temporary name, then renamed):
- features.npy  (total_frames, L, D) float16 (or float32): every utterance's frames end to end,
                the L kept hidden states of a frame side by side (one contiguous read per
                utterance, whatever the head does with the layers)
- index.npz     offsets (N + 1,) int64 and lengths (N,) int64: utterance i is rows
                offsets[i]:offsets[i + 1], in corpus order
- meta.json     model, weights identity, layers, dims, frame rate and how the extraction ran

`SslFeatures` stands in for PreparedData.features: shape (N, T_max, L, D), `features[idx]` gathers
rows into a zero-padded (B, T_b, L, D) tensor (T_b = the longest of those rows) from a read-only
np.memmap, and it pickles as its directory alone, so Ray's object store carries a path, every
trial process maps the same file and the OS page cache holds one copy for all of them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FEATURES_FILE = "features.npy"
INDEX_FILE = "index.npz"
META_FILE = "meta.json"


class SslCacheMissing(FileNotFoundError):
    """The cache directory a handle names is gone (or not shared with this node)."""


class SslFeatures:
    """A read-only, lazily mapped (N, T_max, L, D) feature tensor (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = os.path.abspath(directory)  # trials run in other working directories
        path = Path(self.directory)
        if not (path / META_FILE).is_file() or not (path / INDEX_FILE).is_file():
            raise SslCacheMissing(
                f"{path}: the ssl feature cache is missing (deleted, or not on this node: on a "
                f"cluster data.cache_dir must be a path every node shares)")
        self.meta: dict[str, Any] = json.loads((path / META_FILE).read_text())
        with np.load(path / INDEX_FILE) as index:
            self.offsets = index["offsets"].astype(np.int64)
            self.frame_lengths = index["lengths"].astype(np.int64)
        self._rows: np.ndarray | None = None

    # -- what code written for a torch.Tensor asks of PreparedData.features ---------------------
    @property
    def shape(self) -> torch.Size:
        n_layers, dim = len(self.meta["layers"]), int(self.meta["dim"])
        return torch.Size((len(self.frame_lengths), int(self.frame_lengths.max(initial=1)),
                           n_layers, dim))

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.meta["dtype"] == "float16" else torch.float32

    @property
    def ndim(self) -> int:
        return 4

    def dim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.frame_lengths)

    def contiguous(self) -> SslFeatures:
        return self  # already one contiguous file

    @property
    def rows(self) -> np.ndarray:
        """(total_frames, L, D), memory-mapped read-only on first use."""
        if self._rows is None:
            self._rows = np.load(Path(self.directory) / FEATURES_FILE, mmap_mode="r")
        return self._rows

    @property
    def nbytes(self) -> int:
        return int(os.path.getsize(Path(self.directory) / FEATURES_FILE))

    def utterance(self, i: int) -> np.ndarray:
        """(T_i, L, D) frames of utterance i (a view into the map)."""
        return self.rows[self.offsets[i]: self.offsets[i + 1]]

    def __getitem__(self, idx: Any) -> torch.Tensor:
        """(B, T_b, L, D) zero-padded rows for an index tensor/array/list/slice; (T_i, L, D) for
        an int."""
        if isinstance(idx, int | np.integer):
            return torch.from_numpy(np.array(self.utterance(int(idx))))
        if isinstance(idx, slice):
            rows = np.arange(len(self))[idx]
        elif isinstance(idx, torch.Tensor):
            rows = idx.detach().cpu().numpy().reshape(-1)
        else:
            rows = np.asarray(idx).reshape(-1)
        rows = rows.astype(np.int64)
        lengths = self.frame_lengths[rows]
        steps = int(lengths.max(initial=1))
        _, n_layers, dim = self.rows.shape
        out = np.zeros((len(rows), steps, n_layers, dim), dtype=self.rows.dtype)
        for j, i in enumerate(rows):
            out[j, : lengths[j]] = self.rows[self.offsets[i]: self.offsets[i + 1]]
        return torch.from_numpy(out)

    def __reduce__(self) -> tuple:
        return (SslFeatures, (self.directory,))  # a path through pickles, never the arrays

    def __repr__(self) -> str:
        return f"SslFeatures({self.directory!r}, shape={tuple(self.shape)})"


# The prepared-data cache is read with torch.load(weights_only=True): allow this one class.
torch.serialization.add_safe_globals([SslFeatures])


def write_cache(final: Path, total_frames: int, n_layers: int, dim: int, dtype: str,
                fill: Any, meta: dict[str, Any], offsets: np.ndarray,
                lengths: np.ndarray) -> SslFeatures:
    """Create the cache directory `final`: `fill(rows)` writes the (total_frames, L, D) memmap;
    then the index and meta; then an atomic rename. A concurrent writer's result wins."""
    final.parent.mkdir(parents=True, exist_ok=True)
    need = total_frames * n_layers * dim * np.dtype(dtype).itemsize
    free = shutil.disk_usage(final.parent).free
    if need > free:
        from trainables.errors import DataError

        raise DataError(final.parent, f"the ssl features need {need / 2**30:.1f} GiB, only "
                        f"{free / 2**30:.1f} GiB are free; keep fewer hidden states "
                        f"(data.ssl.layers), downsample in time (data.downsample: 2) or move "
                        f"data.cache_dir")
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=final.name + ".tmp-"))
    try:
        rows = np.lib.format.open_memmap(tmp / FEATURES_FILE, mode="w+", dtype=dtype,
                                         shape=(total_frames, n_layers, dim))
        info = fill(rows)
        rows.flush()
        del rows
        np.savez(tmp / INDEX_FILE, offsets=offsets, lengths=lengths)
        (tmp / META_FILE).write_text(json.dumps({**meta, **(info or {})}, indent=1))
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same cache first: keep theirs
            if not (final / META_FILE).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return SslFeatures(final)
