"""Reading one audio file: mono float32 at SAMPLE_RATE, or a DataError saying what is wrong.

Policy (docs/data.md): stereo/multichannel is downmixed by averaging the channels; any other
sample rate is resampled with scipy.signal.resample_poly; empty files, files soundfile cannot
decode and files with NaN/inf samples are rejected with a DataError naming the file.
"""

from __future__ import annotations

import os
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from trainables.data.base import SAMPLE_RATE
from trainables.errors import DataError


def read_audio(path: str | os.PathLike) -> np.ndarray:
    """The waveform of `path` as (S,) float32, mono, SAMPLE_RATE."""
    if not os.path.isfile(path):
        raise DataError(path, "audio file not found; expected a readable WAV/FLAC file")
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as exc:
        raise DataError(path, f"not a readable audio file (expected WAV/FLAC/OGG): {exc}") from exc
    if data.shape[0] == 0:
        raise DataError(path, "zero-length audio; expected at least one sample")
    if not np.isfinite(data).all():
        raise DataError(path, "audio contains NaN or infinite samples; expected finite samples")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]  # downmix to mono
    if sr != SAMPLE_RATE:
        g = gcd(int(sr), SAMPLE_RATE)
        wave = resample_poly(wave, SAMPLE_RATE // g, int(sr) // g)
    return np.ascontiguousarray(wave, dtype=np.float32)
