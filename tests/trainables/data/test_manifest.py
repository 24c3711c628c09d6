"""Manifest corpora: CSV or Parquet, relative paths, class lists, malformed manifests."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.trainables.data.fixtures import make_manifest
from trainables.data.manifest import ManifestCorpus
from trainables.errors import ConfigError, DataError


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_reads_rows_with_relative_paths(fmt: str, tmp_path) -> None:
    path, rows = make_manifest(tmp_path, fmt=fmt)
    content = ManifestCorpus().load({"root": str(path)})
    assert content.classes == sorted({r["label"] for r in rows})
    assert [(u.label, u.speaker, u.session) for u in content.utterances] == [
        (r["label"], r["speaker"], r["session"]) for r in rows]
    assert all(u.split is None for u in content.utterances)


def test_class_list_sets_the_order_and_rejects_other_labels(tmp_path) -> None:
    path, _ = make_manifest(tmp_path)
    order = ["upbeat", "tense", "calm"]
    assert ManifestCorpus().load({"root": str(path), "classes": order}).classes == order
    with pytest.raises(DataError) as err:
        ManifestCorpus().load({"root": str(path), "classes": ["calm", "tense"]})
    assert "upbeat" in str(err.value) and str(path) in str(err.value)


def test_listed_class_without_utterances_is_a_data_error(tmp_path) -> None:
    path, _ = make_manifest(tmp_path)
    with pytest.raises(DataError, match="no utterances"):
        ManifestCorpus().load({"root": str(path), "classes": ["calm", "tense", "upbeat", "sad"]})


def test_missing_column_names_the_manifest(tmp_path) -> None:
    path, _ = make_manifest(tmp_path)
    pd.read_csv(path).drop(columns=["speaker"]).to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        ManifestCorpus().load({"root": str(path)})
    assert str(path) in str(err.value) and "speaker" in str(err.value)


def test_missing_audio_names_the_file(tmp_path) -> None:
    path, rows = make_manifest(tmp_path)
    (tmp_path / rows[3]["path"]).unlink()
    with pytest.raises(DataError) as err:
        ManifestCorpus().load({"root": str(path)})
    assert rows[3]["path"] in str(err.value) and "not found" in str(err.value)


def test_optional_split_and_session(tmp_path) -> None:
    path, _ = make_manifest(tmp_path)
    df = pd.read_csv(path).drop(columns=["session"])
    df["split"] = ["train", "dev", "test"] * (len(df) // 3)
    df.to_csv(path, index=False)
    content = ManifestCorpus().load({"root": str(path)})
    assert [u.split for u in content.utterances[:3]] == ["train", "dev", "test"]
    assert all(u.session == u.speaker for u in content.utterances)


def test_duplicate_class_names_are_a_config_error(tmp_path) -> None:
    path, _ = make_manifest(tmp_path)
    with pytest.raises(ConfigError):
        ManifestCorpus().load({"root": str(path), "classes": ["calm", "calm"]})


def test_unknown_manifest_type(tmp_path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("path,label,speaker\n")
    with pytest.raises(DataError, match="manifest"):
        ManifestCorpus().load({"root": str(path)})
