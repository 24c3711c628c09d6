"""The corpus registry: `data.corpus` -> Corpus class. SINGLE_CORPORA are the corpora a
`corpus: multi` union may combine (handed to MultiCorpus, so multi.py needs no registry)."""

from __future__ import annotations

from trainables.data.corpus import Corpus
from trainables.data.iemocap import IemocapCorpus
from trainables.data.manifest import ManifestCorpus
from trainables.data.meld import MeldCorpus
from trainables.data.multi import MultiCorpus
from trainables.data.synthetic import SyntheticCorpus
from trainables.errors import ConfigError

SINGLE_CORPORA: dict[str, type[Corpus]] = {
    c.name: c for c in (SyntheticCorpus, IemocapCorpus, MeldCorpus, ManifestCorpus)
}
CORPORA: dict[str, type[Corpus]] = {**SINGLE_CORPORA, MultiCorpus.name: MultiCorpus}


def get_corpus(name: object) -> Corpus:
    """An instance of the corpus named `name`, or ConfigError at data.corpus."""
    if name not in CORPORA:
        raise ConfigError("data.corpus", f"unknown corpus {name!r}; valid: {sorted(CORPORA)}")
    if name == MultiCorpus.name:
        return MultiCorpus(SINGLE_CORPORA)
    return CORPORA[name]()
