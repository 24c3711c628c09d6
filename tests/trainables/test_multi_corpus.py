"""`data.corpus: multi`: corpora joined on shared classes, folded per corpus, scored per corpus."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from trainables.data import prepare_data
from trainables.errors import ConfigError
from trainables.train import LockstepTrainer

sys.path.insert(0, str(Path(__file__).parent / "data"))
from fixtures import make_iemocap_tree, make_meld_tree  # noqa: E402

TWO_SYNTHETIC = [{"corpus": "synthetic", "name": "a", "seed": 1, "synthetic_utterances": 80},
                 {"corpus": "synthetic", "name": "b", "seed": 2, "synthetic_utterances": 60}]


def _multi(corpora: list, tmp_path: Path, **extra):
    return prepare_data({"corpus": "multi", "corpora": corpora, "max_seconds": 0.5,
                         "n_mels": 8, "cache_dir": str(tmp_path / "cache"), **extra})


def test_two_corpora_are_prefixed_and_folded_together(tmp_path: Path) -> None:
    data = _multi(TWO_SYNTHETIC, tmp_path)
    assert Counter(data.corpus_of) == {"a": 80, "b": 60}
    for name, ident, spk, sess in zip(data.corpus_of, data.ids, data.speakers, data.sessions,
                                      strict=True):
        assert ident.startswith(f"{name}/") and spk.startswith(f"{name}/")
        assert sess.startswith(f"{name}/")
    assert data.classes == ["neutral", "happy", "sad", "angry"]
    corpus = np.asarray(data.corpus_of)
    for fold in data.folds:
        parts = [fold.train, fold.val, fold.test]
        assert sum(map(len, parts)) == len(data)  # every utterance in exactly one split
        assert len(np.unique(np.concatenate(parts))) == len(data)
        assert set(corpus[fold.test]) == {"a", "b"}  # both corpora are tested in each fold
    again = _multi(TWO_SYNTHETIC, tmp_path)  # the cache keeps the corpus of each row
    assert again.info["cache"] == "hit" and again.corpus_of == data.corpus_of


def test_meld_labels_map_to_shared_classes_and_iemocap_joins(tmp_path: Path) -> None:
    make_meld_tree(tmp_path / "meld", dialogues=4, per_dialogue=6)
    make_iemocap_tree(tmp_path / "iemocap")
    data = _multi([{"corpus": "meld", "root": str(tmp_path / "meld")},
                   {"corpus": "iemocap", "root": str(tmp_path / "iemocap")}], tmp_path)
    meld = [data.classes[int(y)] for y, c in zip(data.labels, data.corpus_of, strict=True)
            if c == "meld"]
    assert set(meld) == {"neutral", "happy", "sad", "angry"}  # joy/anger/sadness mapped
    assert data.info["dropped"]["meld"] > 0  # surprise, fear, disgust
    # MELD's one official split is joined to each of IEMOCAP's five session folds
    assert len(data.folds) == 5 and all(f.name.startswith("meld:official+iemocap:")
                                        for f in data.folds)


def test_bad_corpora_entries_name_the_key(tmp_path: Path) -> None:
    for corpora, key in (([], "data.corpora"), ([{"corpus": "nope"}], "data.corpora.0.corpus"),
                         ([{"corpus": "synthetic", "colour": 1}], "data.corpora.0.colour"),
                         ([{"corpus": "synthetic"}] * 2, "data.corpora")):
        with pytest.raises(ConfigError) as err:
            _multi(corpora, tmp_path)
        assert err.value.key == key


def test_members_report_test_uar_per_corpus(tmp_path: Path) -> None:
    data = _multi(TWO_SYNTHETIC, tmp_path, use_folds=1)
    model = {"name": "transformer", "layers": 1, "d_model": 16, "heads": 2, "ff_dim": 16}
    trainer = LockstepTrainer({"model": model, "train": {"epochs": 1, "seeds": [0]}}, data)
    result = json.loads(trainer.run_epoch()["member_results_json"])[0]
    assert set(result["test_uar_by_corpus"]) == {"a", "b"}
    assert all(0 <= v <= 1 for v in result["test_uar_by_corpus"].values())
