"""prepare_data: corpus -> features -> crop/pad -> normalization -> folds, cached on disk."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from trainables.config import DATA, DATA_DEFAULTS, with_defaults
from trainables.data import cache
from trainables.data.base import SAMPLE_RATE, PreparedData
from trainables.data.corpora import SINGLE_CORPORA, get_corpus
from trainables.data.features import (
    downsample,
    featurize_parallel,
    get_feature,
    normalize_speakers,
    normalize_utterances,
)
from trainables.data.folds import make_folds
from trainables.data.multi import corpus_of as multi_corpus_of
from trainables.data.multi import multi_folds
from trainables.errors import ConfigError
from trainables.names import DATA_SKIPPED_CLIPS


def _check(cfg: dict[str, Any]) -> None:
    """The data keys prepare_data relies on, for a config that skips the sweep file: checked
    against their declarations (trainables/config.py: DATA), the one place they are stated."""
    for name in ("normalize", "max_seconds", "downsample", "use_folds"):
        problem = DATA[name].violation(name, cfg[name])
        if problem:
            raise ConfigError(f"data.{name}", problem)


# The last data variant's features before normalization, by their key (the prepared key without
# data.normalize): a sweep searching data.normalize featurizes its corpus once, not per choice.
_BEFORE_NORMALIZE: dict[str, tuple[list[str], torch.Tensor, torch.Tensor]] = {}
REUSE_MAX_BYTES = 1 << 29  # larger features are not kept in memory for the next variant


def _build(cfg: dict[str, Any], progress: Callable[[str], None] | None,
           fingerprint: str = "") -> dict[str, Any]:
    """Load + featurize: the cached part (everything except the folds)."""
    extractor = get_feature(cfg)  # validates data.features before the (slow) corpus load
    t0 = time.perf_counter()
    content = get_corpus(cfg["corpus"]).load(cfg, progress)
    t1 = time.perf_counter()
    utts = content.utterances
    ids = [u.id for u in utts]
    reuse_key = cache.cache_key({k: v for k, v in cfg.items() if k != "normalize"}, fingerprint)
    before = _BEFORE_NORMALIZE.get(reuse_key)
    reused = before is not None and before[0] == ids and not extractor.finalizes
    if reused and before is not None:
        feats, lengths = before[1].clone(), before[2].clone()
    else:
        if progress:
            progress(f"featurizing {len(utts)} utterances as {extractor.kind} "
                     f"({cfg['max_seconds']} s max)")
        feats, lengths = featurize_parallel(extractor, cfg, [u.waveform for u in utts],
                                            progress)
    if not extractor.finalizes:  # ssl downsamples and normalizes while extracting
        if not reused:
            feats, lengths = downsample(feats, lengths, cfg["downsample"])
            _BEFORE_NORMALIZE.clear()
            if feats.element_size() * feats.nelement() <= REUSE_MAX_BYTES:
                _BEFORE_NORMALIZE[reuse_key] = (ids, feats.clone(), lengths.clone())
        if cfg["normalize"] == "utterance":
            feats = normalize_utterances(feats, lengths)
        elif cfg["normalize"] == "speaker":
            feats = normalize_speakers(feats, lengths, [u.speaker for u in utts])
    t2 = time.perf_counter()
    info = dict(content.info)
    info.update(load_seconds=round(t1 - t0, 3), featurize_seconds=round(t2 - t1, 3),
                features_reused=reused)
    index = {c: i for i, c in enumerate(content.classes)}
    return {
        "features": feats.contiguous(),
        "lengths": lengths,
        "labels": torch.tensor([index[u.label] for u in utts], dtype=torch.long),
        "classes": list(content.classes),
        "ids": ids,
        "speakers": [u.speaker for u in utts],
        "sessions": [u.session for u in utts],
        "splits": [u.split or "" for u in utts],  # "" = none (plain str for weights_only)
        "feature_kind": extractor.kind,
        "frame_rate": SAMPLE_RATE / extractor.hop / cfg["downsample"],
        "info": info,
    }


def prepared_key(data_cfg: Mapping[str, Any]) -> str:
    """Which prepared data a trial's `data` section needs: the whole section over DATA_DEFAULTS,
    as canonical JSON. A sweep that searches data.* choices prepares one PreparedData per key
    (orchestrator/runner.py) and each trial picks its own (trainables/trainable.py)."""
    return json.dumps(with_defaults(dict(data_cfg), DATA_DEFAULTS), sort_keys=True, default=str)


def prepare_data(data_cfg: dict[str, Any],
                 progress: Callable[[str], None] | None = None) -> PreparedData:
    """The sweep's data, featurized and folded; read from the cache under data.cache_dir if there.

    `info["cache"]` is "hit" when the tensors came from the cache, "miss" when they were built.
    """
    cfg = with_defaults(data_cfg, DATA_DEFAULTS)
    _check(cfg)
    corpus = get_corpus(cfg["corpus"])
    feature_kind = cfg["features"]
    extractor = get_feature(cfg)  # unknown names fail here, before anything is read or hashed
    multi = cfg["corpus"] == "multi"
    fingerprint = corpus.fingerprint(cfg) if cfg.get("root") or multi else ""
    key = cache.cache_key(cfg, fingerprint + extractor.fingerprint())
    path = cache.cache_path(cfg["cache_dir"], key, feature_kind) if cfg["cache_dir"] else None
    stored = cache.load(path) if path is not None else None
    if stored is not None:
        status = "hit"
        if progress:
            progress(f"cache hit {path}")
    else:
        status = "miss"
        stored = _build(cfg, progress, fingerprint + extractor.fingerprint())
        if path is not None:
            cache.save_atomic(stored, path)
            if progress:
                progress(f"cached {path}")
    splits = [s or None for s in stored["splits"]]
    corpus_of = multi_corpus_of(stored["ids"]) if multi else []
    if multi and cfg["val"] != DATA_DEFAULTS["val"]:
        raise ConfigError("data.val", f"corpus: multi folds each corpus by its own rule with "
                                      f"the default validation; val: {cfg['val']} is for one "
                                      f"corpus")
    if multi:  # each corpus folded by its own rule (trainables/data/multi.py)
        folds = multi_folds(cfg, SINGLE_CORPORA, corpus_of, stored["speakers"],
                            stored["sessions"], splits)
    else:
        folds = make_folds(cfg["folds"], stored["speakers"], stored["sessions"], splits,
                           cfg["n_folds"], cfg["seed"], cfg["val"], cfg["val_fraction"])
    if cfg["use_folds"] is not None:
        folds = folds[: cfg["use_folds"]]
    info = dict(stored["info"])
    # the corpus' skipped clips (MELD: missing / unreadable wavs), from the cached info on a hit
    info[DATA_SKIPPED_CLIPS] = int(info.get("skipped", 0))
    info.update(cache=status, cache_key=key, cache_path=str(path) if path else None)
    return PreparedData(
        features=stored["features"], lengths=stored["lengths"], labels=stored["labels"],
        classes=stored["classes"], ids=stored["ids"], speakers=stored["speakers"],
        sessions=stored["sessions"], folds=folds, feature_kind=stored["feature_kind"],
        frame_rate=float(stored["frame_rate"]), info=info,
        normalize=cfg["normalize"], corpus_of=corpus_of,
    )
