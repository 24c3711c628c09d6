"""The interface every feature kind implements (trainables/data/features.py registers the
built-in kinds, trainables/data/ssl the self-supervised one): waveforms cropped to max_seconds ->
a zero-padded tensor plus the valid rows of each utterance."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from trainables.data.base import SAMPLE_RATE

HOP = SAMPLE_RATE // 100  # 10 ms
CHUNK = 64  # utterances featurized at once (bounds peak memory)


class FeatureExtractor(ABC):
    """One feature kind. Subclasses implement `_compute` on a zero-padded batch."""

    kind: ClassVar[str]
    hop: ClassVar[int] = HOP  # input samples per output row
    # True: featurize() already applied data.downsample and data.normalize (ssl), prepare skips
    finalizes: ClassVar[bool] = False

    def __init__(self, data_cfg: dict[str, Any]) -> None:
        self.cfg = data_cfg

    def fingerprint(self) -> str:
        """What decides the features besides the data config (ssl: the weights file), for the
        prepared-data cache key; "" for the built-in kinds."""
        return ""

    def n_rows(self, n_samples: int) -> int:
        """Valid output rows for `n_samples` input samples (centered frames: 1 + n // hop)."""
        return 1 + n_samples // self.hop

    @abstractmethod
    def _compute(self, batch: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """(B, S) float32 zero-padded waveforms -> (B, T) raw or (B, T, F) frames, T >= rows."""

    def featurize(self, waves: list[np.ndarray], max_seconds: float,
                  progress: Callable[[str], None] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop/pad to max_seconds and featurize: (features, lengths) before downsampling."""
        max_samples = int(round(max_seconds * SAMPLE_RATE))
        n_out = self.n_rows(max_samples)
        chunks, lengths = [], []
        for start in range(0, len(waves), CHUNK):
            part = waves[start: start + CHUNK]
            n = np.array([min(len(w), max_samples) for w in part], dtype=np.int64)
            batch = np.zeros((len(part), max_samples), dtype=np.float32)
            for i, w in enumerate(part):
                batch[i, : n[i]] = w[: n[i]]
            out = self._compute(batch, n)
            if out.shape[1] < n_out:  # e.g. opensmile drops partial frames at the end
                pad = [(0, 0)] * out.ndim
                pad[1] = (0, n_out - out.shape[1])
                out = np.pad(out, pad)
            rows = np.clip([self.n_rows(int(k)) for k in n], 1, n_out)
            chunks.append(_zero_padding(torch.from_numpy(np.ascontiguousarray(
                out[:, :n_out], dtype=np.float32)), torch.from_numpy(rows)))
            lengths.append(rows)
            if progress and (start // CHUNK) % 8 == 7:
                progress(f"features {self.kind}: {start + len(part)}/{len(waves)} utterances")
        return torch.cat(chunks), torch.from_numpy(np.concatenate(lengths)).long()


def _zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    return x * (mask if x.dim() == 2 else mask[..., None])
