"""Feature extractors (raw, logmel, mfcc, compare, egemaps), fixed-length crop/pad, normalization.

Every extractor turns waveforms cropped to `max_seconds` (the first max_seconds are kept) into a
fixed-size tensor plus the valid length of each row; positions past a row's length are zero.
Frame features use 25 ms windows and a 10 ms hop (100 frames/s) before `downsample`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from math import ceil
from typing import Any

import numpy as np
import torch
from scipy.signal import resample_poly

from trainables.data.base import SAMPLE_RATE
from trainables.data.extractor import CHUNK, HOP, FeatureExtractor, _zero_padding
from trainables.errors import ConfigError

WIN = SAMPLE_RATE * 25 // 1000  # 25 ms
N_FFT = 512
LOG_EPS = 1e-6
STD_FLOOR = 1e-5  # std clamp: a constant feature must not divide by ~0


class Raw(FeatureExtractor):
    """`raw`: the waveform itself, (N, S)."""

    kind = "raw"
    hop = 1

    def n_rows(self, n_samples: int) -> int:
        return n_samples

    def _compute(self, batch: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return batch


class LogMel(FeatureExtractor):
    """`logmel`: log(mel power + 1e-6), n_mels bands, (N, T, n_mels)."""

    kind = "logmel"

    def __init__(self, data_cfg: dict[str, Any]) -> None:
        super().__init__(data_cfg)
        import torchaudio

        n_mels = _positive_int(data_cfg, "n_mels", 64)
        self.transform = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=WIN, hop_length=HOP, n_mels=n_mels)

    def _compute(self, batch: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            mel = self.transform(torch.from_numpy(batch))  # (B, n_mels, T)
        return torch.log(mel + LOG_EPS).transpose(1, 2).numpy()


class MFCC(FeatureExtractor):
    """`mfcc`: n_mfcc cepstra of the log-mel spectrum (max(n_mels, n_mfcc) bands)."""

    kind = "mfcc"

    def __init__(self, data_cfg: dict[str, Any]) -> None:
        super().__init__(data_cfg)
        import torchaudio

        n_mfcc = _positive_int(data_cfg, "n_mfcc", 40)
        n_mels = max(_positive_int(data_cfg, "n_mels", 64), n_mfcc)
        # log_mels=True: the default AmplitudeToDB(top_db) clamps relative to the max of the
        # whole batch, which would make an utterance's features depend on its batch-mates.
        self.transform = torchaudio.transforms.MFCC(
            sample_rate=SAMPLE_RATE, n_mfcc=n_mfcc, log_mels=True,
            melkwargs={"n_fft": N_FFT, "win_length": WIN, "hop_length": HOP, "n_mels": n_mels})

    def _compute(self, batch: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.transform(torch.from_numpy(batch)).transpose(1, 2).numpy()


class OpenSmileLLD(FeatureExtractor):
    """openSMILE low-level descriptors, one `Smile` per part in `self.smiles` (concatenated)."""

    smiles: list[Any]

    def _compute(self, batch: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        rows = []
        for wave, n in zip(batch, lengths):
            # Per utterance on its valid part only: padding would add silent frames.
            parts = [s.process_signal(wave[:n], SAMPLE_RATE).to_numpy(np.float32)
                     for s in self.smiles]
            t = min(p.shape[0] for p in parts)
            rows.append(np.concatenate([p[:t] for p in parts], axis=1))
        width = max(r.shape[0] for r in rows)
        out = np.zeros((len(rows), width, rows[0].shape[1]), dtype=np.float32)
        for i, r in enumerate(rows):
            out[i, : r.shape[0]] = r
        return np.nan_to_num(out)

    def n_rows(self, n_samples: int) -> int:
        # openSMILE emits only complete 60 ms frames: ~(n - 800) // 160 + 1 of them.
        return max(1, (n_samples - 800) // HOP + 1)


class ComParE(OpenSmileLLD):
    """`compare`: openSMILE ComParE_2016 LLDs (65 dims; 130 with `compare_deltas`)."""

    kind = "compare"

    def __init__(self, data_cfg: dict[str, Any]) -> None:
        super().__init__(data_cfg)
        import opensmile

        level = opensmile.FeatureLevel.LowLevelDescriptors
        self.smiles = [opensmile.Smile(opensmile.FeatureSet.ComParE_2016, level)]
        if data_cfg.get("compare_deltas", False):
            self.smiles.append(opensmile.Smile(opensmile.FeatureSet.ComParE_2016,
                                               opensmile.FeatureLevel.LowLevelDescriptors_Deltas))


class EGeMAPS(OpenSmileLLD):
    """`egemaps`: openSMILE eGeMAPSv02 LLDs, 25 per 10 ms frame (loudness, spectral slopes,
    MFCC 1-4, F0 in semitones, jitter, shimmer, HNR, formants F1-F3; zero where unvoiced)."""

    kind = "egemaps"
    LLDS = 25  # eGeMAPSv02 low-level descriptors

    @classmethod
    def feature_width(cls, data_cfg: Mapping[str, Any]) -> int:
        """n_features before featurizing (trainables/data/widths.py asks)."""
        return cls.LLDS

    def __init__(self, data_cfg: dict[str, Any]) -> None:
        super().__init__(data_cfg)
        import opensmile

        self.smiles = [opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02,
                                       opensmile.FeatureLevel.LowLevelDescriptors)]


FEATURES: dict[str, type[FeatureExtractor]] = {
    c.kind: c for c in (Raw, LogMel, MFCC, ComParE, EGeMAPS)
}


# The kinds featurize_parallel spreads over a process pool (raw: nothing to compute; ssl:
# extracts on the GPU and finalizes itself).
PARALLEL_KINDS = (LogMel, MFCC, ComParE, EGeMAPS)
_WORKER_EXTRACTORS: dict[str, FeatureExtractor] = {}  # per worker process: built once


def _featurize_part(job: tuple[dict[str, Any], list[np.ndarray]]) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """A worker's part of featurize_parallel: (features, lengths) of CHUNK-aligned waveforms."""
    data_cfg, waves = job
    key = repr(sorted(data_cfg.items()))
    if key not in _WORKER_EXTRACTORS:
        _WORKER_EXTRACTORS.clear()
        _WORKER_EXTRACTORS[key] = get_feature(data_cfg)
    feats, lengths = _WORKER_EXTRACTORS[key].featurize(waves, data_cfg["max_seconds"])
    return feats.numpy(), lengths.numpy()


def featurize_parallel(extractor: FeatureExtractor, data_cfg: dict[str, Any],
                       waves: list[np.ndarray], progress: Callable[[str], None] | None = None,
                       workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`extractor.featurize(waves, data_cfg["max_seconds"])` spread over `workers` processes
    (default one per core; trainables/data/parallel.py), identical to it: each worker featurizes
    whole batches of CHUNK utterances, the batches the serial path computes. Kinds outside
    PARALLEL_KINDS featurize in this process."""
    from trainables.data.parallel import default_workers, parallel_map, split

    n_workers = default_workers() if workers is None else workers
    if type(extractor) not in PARALLEL_KINDS or n_workers <= 1 or len(waves) <= CHUNK:
        return extractor.featurize(waves, data_cfg["max_seconds"], progress)
    per_part = CHUNK * max(1, len(waves) // (CHUNK * 2 * n_workers))  # a multiple of CHUNK
    parts = split(waves, per_part)
    cfg = {k: v for k, v in data_cfg.items() if isinstance(v, (str, int, float, bool, type(None)))}

    def done(k: int) -> None:
        if progress and k < len(parts):
            progress(f"features {extractor.kind}: {min(k * per_part, len(waves))}/{len(waves)} "
                     f"utterances")

    out = parallel_map(_featurize_part, [(cfg, list(p)) for p in parts], workers=n_workers,
                       done=done)
    return (torch.cat([torch.from_numpy(f) for f, _ in out]),
            torch.cat([torch.from_numpy(n) for _, n in out]))


def get_feature(data_cfg: dict[str, Any]) -> FeatureExtractor:
    name = data_cfg.get("features")
    if name not in FEATURES:
        raise ConfigError("data.features", f"unknown features {name!r}; valid: {sorted(FEATURES)}")
    return FEATURES[name](data_cfg)


def _positive_int(cfg: dict[str, Any], key: str, default: int) -> int:
    value = cfg.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"data.{key}", f"expected a positive integer, found {value!r}")
    return value


def downsample(features: torch.Tensor, lengths: torch.Tensor,
               factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Downsample along time by `factor` (polyphase, anti-aliased), each row's valid part only."""
    if factor == 1:
        return features, lengths
    n_out = ceil(features.shape[1] / factor)
    out = torch.zeros((features.shape[0], n_out, *features.shape[2:]), dtype=features.dtype)
    new_len = torch.clamp((lengths + factor - 1) // factor, min=1)
    x = features.numpy()
    for i in range(features.shape[0]):
        n = int(lengths[i])
        # Only the valid part: the zero padding must not leak into the last valid rows.
        y = resample_poly(x[i, :n], 1, factor, axis=0)
        out[i, : y.shape[0]] = torch.from_numpy(y.astype(np.float32))
    return out, new_len


def masked_moments(x: torch.Tensor, lengths: torch.Tensor,
                   per_row: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean/std over valid positions (float64), per feature dim; per row or over all rows."""
    x3 = x.unsqueeze(-1) if x.dim() == 2 else x
    mask = (torch.arange(x3.shape[1])[None, :] < lengths[:, None])[..., None]
    dims = (1,) if per_row else (0, 1)
    count = mask.sum(dim=dims).clamp_min(1).double()
    mean = (x3.double() * mask).sum(dim=dims) / count
    centred = (x3.double() - (mean[:, None] if per_row else mean)) * mask
    var = (centred**2).sum(dim=dims) / count
    return mean, var.sqrt().clamp_min(STD_FLOOR)


def train_stats(features: torch.Tensor, lengths: torch.Tensor,
                idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over the valid positions of rows `idx`.

    (N, T, F) -> two (F,) tensors; (N, S) raw -> two (1,) tensors. std >= STD_FLOOR.
    """
    idx_t = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    total = torch.zeros(features.shape[-1] if features.dim() == 3 else 1, dtype=torch.float64)
    sq, count = total.clone(), 0
    means = []
    # Two passes in chunks of rows: bounded memory for raw audio, exact (not sum-of-squares).
    for pass_ in range(2):
        for start in range(0, len(idx_t), 256):
            rows = idx_t[start: start + 256]
            x = features[rows]
            x3 = (x.unsqueeze(-1) if x.dim() == 2 else x).double()
            mask = (torch.arange(x3.shape[1])[None, :] < lengths[rows][:, None])[..., None]
            if pass_ == 0:
                total += (x3 * mask).sum(dim=(0, 1))
                count += int(mask.sum())
            else:
                sq += (((x3 - means[0]) * mask) ** 2).sum(dim=(0, 1))
        if pass_ == 0:
            means.append(total / max(count, 1))
    std = (sq / max(count, 1)).sqrt().clamp_min(STD_FLOOR)
    return means[0].float(), std.float()


def normalize_utterances(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row to zero mean / unit std over its valid positions (per feature dim); pad = 0."""
    out = torch.empty_like(features)
    for start in range(0, features.shape[0], CHUNK):
        x = features[start: start + CHUNK]
        n = lengths[start: start + CHUNK]
        mean, std = masked_moments(x, n, per_row=True)  # (B, F)
        x3 = x.unsqueeze(-1) if x.dim() == 2 else x
        y = ((x3.double() - mean[:, None]) / std[:, None]).float()
        out[start: start + CHUNK] = _zero_padding(y.squeeze(-1) if x.dim() == 2 else y, n)
    return out


def normalize_speakers(features: torch.Tensor, lengths: torch.Tensor,
                       speakers: list[str]) -> torch.Tensor:
    """`normalize: speaker`: each speaker's rows z-scored with that speaker's own statistics.

    Mean/std per feature dim over every valid position of all of the speaker's utterances (the
    rule of `train_stats`, applied to the speaker's rows); padding stays 0. Label-free and
    independent of the folds, so applying it to validation and test speakers with their own
    statistics leaks nothing about the labels (standard in SER: it removes speaker identity, e.g.
    base pitch and loudness, that a held-out speaker would otherwise shift).
    """
    if len(speakers) != features.shape[0]:
        raise ValueError(f"{len(speakers)} speakers for {features.shape[0]} feature rows")
    names = np.asarray(speakers)
    out = torch.empty_like(features)
    for speaker in sorted(set(speakers)):
        idx = np.flatnonzero(names == speaker)
        mean, std = train_stats(features, lengths, idx)  # (F,) or (1,) for raw
        for start in range(0, len(idx), CHUNK):
            rows = torch.as_tensor(idx[start: start + CHUNK], dtype=torch.long)
            x = features[rows]
            y = ((x.double() - mean.double()) / std.double()).float()
            out[rows] = _zero_padding(y, lengths[rows])
    return out


# Registered last: its module imports torchaudio's encoders only when it extracts.
from trainables.data.ssl.feature import SslFeatureExtractor  # noqa: E402

FEATURES[SslFeatureExtractor.kind] = SslFeatureExtractor
