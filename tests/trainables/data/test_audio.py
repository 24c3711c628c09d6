"""read_audio: the documented policy for every kind of bad or unusual file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tests.trainables.data.fixtures import write_wav
from trainables.data.audio import read_audio
from trainables.errors import DataError


def test_mono_16k_roundtrip(tmp_path) -> None:
    path = write_wav(tmp_path / "a.wav", 0.25)
    x = read_audio(path)
    assert x.dtype == np.float32 and x.shape == (4000,)
    np.testing.assert_allclose(x, sf.read(path, dtype="float32")[0])


def test_stereo_is_averaged(tmp_path) -> None:
    path = write_wav(tmp_path / "s.wav", 0.1, channels=2)
    stereo = sf.read(path, dtype="float32")[0]
    np.testing.assert_allclose(read_audio(path), stereo.mean(axis=1), rtol=1e-6)


@pytest.mark.parametrize("sr", [8000, 22050, 44100])
def test_other_rates_are_resampled(sr: int, tmp_path) -> None:
    path = write_wav(tmp_path / "r.wav", 0.5, sr=sr, freq=440.0)
    x = read_audio(path)
    assert abs(len(x) - 8000) <= 1
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * 16000 / len(x) - 440.0) < 5  # pitch survives resampling


@pytest.mark.parametrize("case", ["missing", "not_audio", "empty", "nan"])
def test_bad_files_raise_a_data_error_naming_the_path(case: str, tmp_path) -> None:
    path = tmp_path / f"{case}.wav"
    if case == "not_audio":
        path.write_text("this is text, not audio")
    elif case == "empty":
        sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    elif case == "nan":
        sf.write(path, np.array([0.1, np.nan, 0.2], dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(DataError) as err:
        read_audio(path)
    assert err.value.path == str(path)
    expected = {"missing": "not found", "not_audio": "not a readable audio",
                "empty": "zero-length", "nan": "NaN"}[case]
    assert expected in str(err.value)
