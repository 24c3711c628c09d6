"""The data layer: corpora, features, folds and the on-disk cache (docs/data.md).

`prepare_data(data_cfg)` is the one entry point a sweep needs; `CORPORA` and `FEATURES` are the
registries behind `data.corpus` and `data.features`.
"""

from __future__ import annotations

from trainables.data.base import SAMPLE_RATE, Fold, PreparedData, Utterance
from trainables.data.corpora import CORPORA, get_corpus
from trainables.data.corpus import Corpus, CorpusContent
from trainables.data.features import FEATURES, FeatureExtractor, get_feature, train_stats
from trainables.data.folds import FOLD_KINDS, make_folds
from trainables.data.prepare import prepare_data, prepared_key

__all__ = [
    "CORPORA", "FEATURES", "FOLD_KINDS", "SAMPLE_RATE", "Corpus", "CorpusContent",
    "FeatureExtractor", "Fold", "PreparedData", "Utterance", "get_corpus", "get_feature",
    "make_folds", "prepare_data", "prepared_key", "train_stats",
]
