"""One suite over every registered corpus, then what is specific to each one."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from trainables.data import CORPORA, get_corpus
from trainables.errors import ConfigError, DataError


def test_registry_has_every_corpus() -> None:
    assert set(CORPORA) == {"synthetic", "iemocap", "meld", "manifest", "multi"}


def test_unknown_corpus_names_the_key_and_the_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        get_corpus("iemocapp")
    assert err.value.key == "data.corpus"
    assert "iemocapp" in str(err.value) and "'synthetic'" in str(err.value)


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_corpus_contract(name: str, corpus_cfgs: dict) -> None:
    content = get_corpus(name).load(corpus_cfgs[name])
    utts = content.utterances
    assert utts and content.classes
    counts = Counter(u.label for u in utts)
    assert set(counts) == set(content.classes)  # no unknown label, no empty class
    assert len({u.id for u in utts}) == len(utts)
    for u in utts:
        assert u.waveform.dtype == np.float32 and u.waveform.ndim == 1 and u.waveform.size > 0
        assert np.isfinite(u.waveform).all() and np.abs(u.waveform).max() <= 1.0
        assert u.speaker and u.session
    assert content.info["corpus"] == name
    again = get_corpus(name).load(corpus_cfgs[name])
    assert [u.id for u in again.utterances] == [u.id for u in utts]  # deterministic order
    assert all(np.array_equal(a.waveform, b.waveform) for a, b in zip(again.utterances, utts))


@pytest.mark.parametrize("name", ["iemocap", "meld", "manifest"])
def test_missing_root_is_a_data_error_naming_it(name: str, tmp_path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        get_corpus(name).load({"corpus": name, "root": str(missing), "classes": 4})
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)


@pytest.mark.parametrize("name", ["iemocap", "meld", "manifest"])
def test_no_root_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError) as err:
        get_corpus(name).load({"corpus": name, "root": None})
    assert err.value.key == "data.root"
