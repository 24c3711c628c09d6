"""IEMOCAP: torchaudio's index over a tiny tree in the real release layout."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.trainables.data.fixtures import make_iemocap_tree, write_wav
from trainables.data.iemocap import IemocapCorpus, speaker_of
from trainables.errors import ConfigError, DataError

FOUR = {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry"}


def test_speaker_is_the_gender_of_the_last_field() -> None:
    assert speaker_of("Ses01F_impro01_M000") == "Ses01_M"
    assert speaker_of("Ses03M_script02_1_F012") == "Ses03_F"


def test_four_classes_merge_excited_into_happy(data_dirs: dict) -> None:
    content = IemocapCorpus().load({"root": str(data_dirs["iemocap"]), "classes": 4})
    records = {r["stem"]: r for r in data_dirs["iemocap_records"] if r["label"] in FOUR}
    got = {u.id: u for u in content.utterances}
    assert set(got) == set(records)  # fru, xxx, sur dropped; every other wav found
    assert content.classes == ["neutral", "happy", "sad", "angry"]
    for stem, rec in records.items():
        assert got[stem].label == FOUR[rec["label"]]
        assert got[stem].speaker == rec["speaker"] and got[stem].session == rec["session"]
    assert len({u.speaker for u in content.utterances}) == 10
    raw = Counter(r["label"] for r in records.values())
    assert Counter(u.label for u in content.utterances)["happy"] == raw["hap"] + raw["exc"]


def test_six_classes_keep_excited_and_frustrated(data_dirs: dict) -> None:
    content = IemocapCorpus().load({"root": str(data_dirs["iemocap"]), "classes": 6})
    assert content.classes[4:] == ["excited", "frustrated"]
    expected = [r for r in data_dirs["iemocap_records"] if r["label"] not in ("xxx", "sur")]
    assert len(content.utterances) == len(expected)


def test_other_sample_rates_are_resampled(data_dirs: dict) -> None:
    content = IemocapCorpus().load({"root": str(data_dirs["iemocap"])})
    rec = {r["stem"]: r for r in data_dirs["iemocap_records"]}
    session5 = [u for u in content.utterances if u.session == "Ses05"]
    assert session5 and all(rec[u.id]["sr"] == 8000 for u in session5)
    # Written at 8 kHz for 0.4/0.5/0.6/0.7 s: at 16 kHz twice the samples of the file.
    assert {len(u.waveform) for u in session5} == {6400, 8000, 9600, 11200}


def test_bad_class_count_is_a_config_error(data_dirs: dict) -> None:
    with pytest.raises(ConfigError) as err:
        IemocapCorpus().load({"root": str(data_dirs["iemocap"]), "classes": 5})
    assert err.value.key == "data.classes"


def test_root_without_sessions_is_a_data_error(tmp_path) -> None:
    with pytest.raises(DataError, match="Session1"):
        IemocapCorpus().load({"root": str(tmp_path)})


def test_a_class_with_no_utterances_is_a_data_error(tmp_path) -> None:
    make_iemocap_tree(tmp_path, sessions=(1,), per_dialog=2)  # labels: hap and exc only
    with pytest.raises(DataError, match="no utterances"):
        IemocapCorpus().load({"root": str(tmp_path)})


def test_a_corrupt_wav_names_the_file(tmp_path) -> None:
    make_iemocap_tree(tmp_path, sessions=(1,))
    bad = tmp_path / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(DataError) as err:
        IemocapCorpus().load({"root": str(tmp_path)})
    assert str(bad) in str(err.value)


def test_stereo_is_downmixed(tmp_path) -> None:
    make_iemocap_tree(tmp_path, sessions=(1,))
    wav = tmp_path / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    write_wav(wav, 0.5, channels=2)
    content = IemocapCorpus().load({"root": str(tmp_path)})
    u = next(u for u in content.utterances if u.id == "Ses01F_impro01_F000")
    assert u.waveform.ndim == 1 and len(u.waveform) == 8000


def test_root_named_iemocap_under_a_session_folder(tmp_path) -> None:
    # torchaudio cuts paths at the first "Session": a parent named like one must not confuse it.
    root = tmp_path / "Sessions_2024" / "IEMOCAP"
    records = make_iemocap_tree(root, sessions=(1, 2))
    content = IemocapCorpus().load({"root": str(root), "classes": 6})
    assert len(content.utterances) == len([r for r in records if r["label"] not in ("xxx", "sur")])
