"""`data.features: ssl`: the FeatureExtractor that prepare_data calls (FEATURES["ssl"]).

`featurize` crops every waveform to max_seconds, looks the hidden states up in the cache (key:
the audio itself, the encoder, its weights, the kept layers, data.downsample, data.normalize and
the dtype) and extracts them on a miss; it returns the lazy SslFeatures handle, not a tensor. It
applies data.downsample and data.normalize (none | utterance) itself, so prepare_data must not
(`finalizes`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from trainables.data.base import SAMPLE_RATE
from trainables.data.extractor import FeatureExtractor
from trainables.data.ssl.settings import SslSettings, ssl_settings
from trainables.data.ssl.store import META_FILE, SslCacheMissing, SslFeatures, write_cache

CACHE_VERSION = 1  # bump when extraction changes: old caches are then never read


def audio_hash(waves: list[np.ndarray], max_samples: int) -> str:
    """sha256 over the cropped float32 waveforms, in order (the cache key's "which audio")."""
    digest = hashlib.sha256()
    for w in waves:
        part = np.ascontiguousarray(w[:max_samples], dtype=np.float32)
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part.tobytes())
    return digest.hexdigest()


def ssl_cache_root(data_cfg: dict[str, Any]) -> Path:
    """<data.cache_dir>/ssl, or a folder in the system's temp dir when the cache is off (the
    features are memory-mapped files: they need a home either way)."""
    base = data_cfg.get("cache_dir")
    root = Path(base).expanduser() if base else Path(tempfile.gettempdir()) / "sersweep"
    # absolute: the handle travels to trial processes, whose working directory is another
    return root.resolve() / "ssl"


def cache_key(settings: SslSettings, identity: str, audio: str, downsample: int,
              normalize: str) -> str:
    relevant = [CACHE_VERSION, settings.model, identity, list(settings.layers),
                json.dumps(settings.params, sort_keys=True, default=str), settings.dtype,
                downsample, normalize, audio]
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class SslFeatureExtractor(FeatureExtractor):
    """Hidden states of a frozen WavLM / HuBERT / wav2vec2 encoder (trainables/data/ssl)."""

    kind = "ssl"
    finalizes: ClassVar[bool] = True  # downsample + normalize applied here (prepare: skip)

    def __init__(self, data_cfg: dict[str, Any]) -> None:
        super().__init__(data_cfg)
        self.settings = ssl_settings(data_cfg)  # ConfigError at the first bad data.ssl key
        from trainables.data.ssl.encoders import check_checkpoint_file

        check_checkpoint_file(self.settings)  # before the corpus is read (a DataError)
        from trainables.data.ssl.extract import conv_config

        # input samples per frame: 320 (20 ms) for every real model
        self.hop = math.prod(stride for _, _, stride in conv_config(self.settings))

    @classmethod
    def feature_width(cls, data_cfg: dict[str, Any]) -> int:
        """D of one hidden state (n_features of PreparedData), known without any audio."""
        return ssl_settings({"ssl": data_cfg.get("ssl")}).dim

    def fingerprint(self) -> str:
        """The weights' identity for the prepared-data cache key (cheap: no hashing)."""
        from trainables.data.ssl.encoders import checkpoint_fingerprint

        return checkpoint_fingerprint(self.settings)

    def n_rows(self, n_samples: int) -> int:
        from trainables.data.ssl.extract import conv_config, frames_of

        return frames_of(n_samples, conv_config(self.settings))

    def _compute(self, batch: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        raise NotImplementedError("features ssl are extracted by featurize(), into the cache")

    def featurize(self, waves: list[np.ndarray], max_seconds: float,
                  progress: Callable[[str], None] | None = None
                  ) -> tuple[SslFeatures, torch.Tensor]:  # type: ignore[override]
        """The cached (or freshly extracted) hidden states of `waves` and their frame counts."""
        from trainables.data.ssl.encoders import build_encoder, checkpoint_identity
        from trainables.data.ssl.extract import extract_to, plan_rows
        from trainables.data.ssl.extraction_memory import auto_cuda_seconds

        settings = self.settings
        max_samples = int(round(max_seconds * SAMPLE_RATE))
        downsample = int(self.cfg.get("downsample") or 1)
        normalize = str(self.cfg.get("normalize") or "none")
        identity = checkpoint_identity(settings)  # DataError naming a missing checkpoint file
        key = cache_key(settings, identity, audio_hash(waves, max_samples), downsample,
                        normalize)
        final = ssl_cache_root(self.cfg) / f"{settings.model}_{key}"
        if (final / META_FILE).is_file():
            try:
                found = SslFeatures(final)
            except (SslCacheMissing, OSError, ValueError, KeyError):
                found = None  # unreadable: extracted again below
            if found is not None and len(found) == len(waves):
                if progress:
                    progress(f"ssl cache hit {final}")
                return found, torch.from_numpy(found.frame_lengths.copy())
        plan = plan_rows(waves, max_samples, settings, downsample)
        model = build_encoder(settings)
        meta = {"version": CACHE_VERSION, "model": settings.model, "bundle": settings.bundle_name,
                "checkpoint": settings.checkpoint, "weights": identity, "arch": settings.arch,
                "layers": list(settings.layers), "dim": settings.dim,
                "n_hidden": settings.n_hidden, "dtype": settings.dtype,
                "frame_rate": SAMPLE_RATE / self.hop / downsample, "downsample": downsample,
                "normalize": normalize, "max_seconds": max_seconds, "utterances": len(waves),
                "total_frames": plan.total_frames}
        handle = write_cache(
            final, plan.total_frames, len(settings.layers), settings.dim, settings.dtype,
            lambda rows: extract_to(rows, waves, plan, settings, model, downsample=downsample,
                                    normalize=normalize, progress=progress,
                                    cuda_seconds=auto_cuda_seconds),
            meta, plan.offsets, plan.out_frames)
        if progress:
            progress(f"ssl features cached in {final} ({handle.nbytes / 2**20:.1f} MiB)")
        return handle, torch.from_numpy(plan.out_frames.copy())


def describe_cache(handle: SslFeatures) -> dict[str, Any]:
    """Size and provenance of a cache (bench/ssl_features.py, logs)."""
    return {**handle.meta, "bytes": handle.nbytes, "directory": handle.directory,
            "bytes_per_utterance": handle.nbytes / max(1, len(handle)),
            "pid": os.getpid()}
