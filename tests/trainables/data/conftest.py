"""Fixtures of the data-layer tests: tiny corpora in real layouts, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trainables.data.fixtures import (
    SMALL_SYNTHETIC,
    make_iemocap_tree,
    make_manifest,
    make_meld_tree,
)


@pytest.fixture(scope="session")
def data_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tree per corpus kind (read-only for tests) and what each builder recorded."""
    base = tmp_path_factory.mktemp("corpora")
    iemocap = base / "IEMOCAP_full_release"
    meld = base / "MELD"
    return {
        "iemocap": iemocap, "iemocap_records": make_iemocap_tree(iemocap, sr_of_session={5: 8000}),
        "meld": meld, "meld_rows": make_meld_tree(meld, missing=(("train", 1, 2),),
                                                  broken=(("test", 0, 1),)),
        "manifest": make_manifest(base / "manifest")[0],
        "cache": base / "cache",
    }


@pytest.fixture(scope="session")
def corpus_cfgs(data_dirs: dict) -> dict[str, dict]:
    """A working data config per registered corpus (shared cache dir for the synthetic one)."""
    cache = str(data_dirs["cache"])
    return {
        "synthetic": {"corpus": "synthetic", "synthetic_utterances": SMALL_SYNTHETIC,
                      "cache_dir": cache},
        "iemocap": {"corpus": "iemocap", "root": str(data_dirs["iemocap"]), "cache_dir": cache},
        "meld": {"corpus": "meld", "root": str(data_dirs["meld"]), "cache_dir": cache},
        "manifest": {"corpus": "manifest", "root": str(data_dirs["manifest"]), "cache_dir": cache},
        "multi": {"corpus": "multi", "cache_dir": cache, "corpora": [
            {"corpus": "meld", "root": str(data_dirs["meld"])},
            {"corpus": "iemocap", "root": str(data_dirs["iemocap"])}]},
    }


@pytest.fixture()
def cache_dir(tmp_path: Path) -> str:
    return str(tmp_path / "cache")
