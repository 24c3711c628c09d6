"""The corpus registry: `data.corpus` -> Corpus class."""

from __future__ import annotations

from trainables.data.corpus import Corpus
from trainables.data.iemocap import IemocapCorpus
from trainables.data.manifest import ManifestCorpus
from trainables.data.meld import MeldCorpus
from trainables.data.multi import MultiCorpus
from trainables.data.synthetic import SyntheticCorpus
from trainables.errors import ConfigError

CORPORA: dict[str, type[Corpus]] = {
    c.name: c for c in (SyntheticCorpus, IemocapCorpus, MeldCorpus, ManifestCorpus, MultiCorpus)
}


def get_corpus(name: object) -> Corpus:
    """An instance of the corpus named `name`, or ConfigError at data.corpus."""
    if name not in CORPORA:
        raise ConfigError("data.corpus", f"unknown corpus {name!r}; valid: {sorted(CORPORA)}")
    return CORPORA[name]()
