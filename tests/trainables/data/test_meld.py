"""MELD: CSV labels + per-split wav folders, official splits, skipped clips."""

from __future__ import annotations

import warnings
from collections import Counter

import pandas as pd
import pytest

from tests.trainables.data.fixtures import MELD_EMOTIONS, make_meld_tree
from trainables.data.meld import MeldCorpus
from trainables.errors import DataError


def test_counts_labels_splits_and_sessions(data_dirs: dict) -> None:
    messages: list[str] = []
    content = MeldCorpus().load({"root": str(data_dirs["meld"])}, messages.append)
    rows = data_dirs["meld_rows"]
    assert content.classes == MELD_EMOTIONS
    assert len(content.utterances) == len(rows) - 2  # one missing + one broken clip
    got = {u.id: u for u in content.utterances}
    for r in rows:
        uid = f"{r['split']}_dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}"
        if uid in ("train_dia1_utt2", "test_dia0_utt1"):
            assert uid not in got
            continue
        u = got[uid]
        assert (u.label, u.speaker, u.split) == (r["Emotion"], r["Speaker"], r["split"])
        assert u.session == f"{r['split']}_dia{r['Dialogue_ID']}"
    assert Counter(u.split for u in content.utterances) == {"train": 14, "dev": 15, "test": 14}


def test_skipped_clips_are_counted_and_reported_once(data_dirs: dict) -> None:
    messages: list[str] = []
    content = MeldCorpus().load({"root": str(data_dirs["meld"])}, messages.append)
    assert content.info["skipped"] == 2
    skip_lines = [m for m in messages if "skipped" in m]
    assert len(skip_lines) == 1 and "2 of 45" in skip_lines[0]
    assert "dia1_utt2.wav" in skip_lines[0] or "dia0_utt1.wav" in skip_lines[0]
    with warnings.catch_warnings(record=True) as caught:  # without a progress callback: a warning
        warnings.simplefilter("always")
        MeldCorpus().load({"root": str(data_dirs["meld"])})
    assert len([w for w in caught if "skipped 2" in str(w.message)]) == 1


def test_class_subset(data_dirs: dict) -> None:
    content = MeldCorpus().load({"root": str(data_dirs["meld"]), "classes": ["anger", "joy"]})
    assert content.classes == ["anger", "joy"]
    assert {u.label for u in content.utterances} == {"anger", "joy"}


def test_unknown_emotion_names_the_csv(tmp_path) -> None:
    make_meld_tree(tmp_path, dialogues=1, per_dialogue=7)
    csv = tmp_path / "dev_sent_emo.csv"
    df = pd.read_csv(csv)
    df.loc[0, "Emotion"] = "boredom"
    df.to_csv(csv, index=False)
    with pytest.raises(DataError) as err:
        MeldCorpus().load({"root": str(tmp_path)})
    assert str(csv) in str(err.value) and "boredom" in str(err.value)


def test_missing_column_names_the_csv(tmp_path) -> None:
    make_meld_tree(tmp_path, dialogues=1, per_dialogue=7)
    csv = tmp_path / "test_sent_emo.csv"
    pd.read_csv(csv).drop(columns=["Speaker"]).to_csv(csv, index=False)
    with pytest.raises(DataError, match="Speaker") as err:
        MeldCorpus().load({"root": str(tmp_path)})
    assert str(csv) in str(err.value)


def test_missing_csv_is_a_data_error(tmp_path) -> None:
    make_meld_tree(tmp_path, dialogues=1, per_dialogue=7)
    (tmp_path / "train_sent_emo.csv").unlink()
    with pytest.raises(DataError, match="train_sent_emo.csv"):
        MeldCorpus().load({"root": str(tmp_path)})
