"""`corpus: multi`: several corpora trained together on shared classes (e.g. MELD + IEMOCAP).

    data:
      corpus: multi
      corpora:
        - {corpus: meld, root: /data/MELD.Raw, folds: official}
        - {corpus: iemocap, root: /data/IEMOCAP_full_release}

Each entry is a small `data` section of its own (corpus, root and optionally name, folds, n_folds,
seed, synthetic_utterances, classes); the rest (features, max_seconds, ...) comes from the outer
section. Labels are mapped onto SHARED_CLASSES by each corpus class' `shared_labels` (MELD: joy ->
happy, anger -> angry, sadness -> sad, neutral -> neutral; its other emotions are dropped).
Utterance ids, speakers and sessions are prefixed with the entry's name (`meld/...`), so nothing
collides across corpora and each row's corpus is known (PreparedData.corpus_of: the members
report each corpus' own test UAR).

Folds: each corpus is folded by its own rule (default: its class' `default_folds`, official for
MELD, else data.folds), and
fold k of the union joins fold k of every corpus (a corpus with fewer folds repeats its folds:
MELD's one official split is then used with every IEMOCAP session fold).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from trainables.data.base import Fold, Utterance
from trainables.data.corpus import Corpus, CorpusContent, Progress
from trainables.data.folds import make_folds
from trainables.errors import ConfigError

SHARED_CLASSES = ["neutral", "happy", "sad", "angry"]
ENTRY_KEYS = ("corpus", "root", "name", "folds", "n_folds", "seed", "synthetic_utterances",
              "classes")
SEP = "/"  # between the corpus name and the corpus' own id / speaker / session


def entries(data_cfg: Mapping[str, Any],
            parts: Mapping[str, type[Corpus]]) -> list[dict[str, Any]]:
    """data.corpora checked: a non-empty list of mappings naming a corpus of `parts` (the
    single-corpus registry, corpora.SINGLE_CORPORA: passed in, so this module needs no
    registry), unique names."""
    raw = data_cfg.get("corpora")
    if not isinstance(raw, list | tuple) or not raw:
        raise ConfigError("data.corpora", "corpus: multi needs data.corpora, a list such as "
                          "[{corpus: meld, root: ...}, {corpus: iemocap, root: ...}]")
    out = []
    for i, entry in enumerate(raw):
        where = f"data.corpora.{i}"
        if not isinstance(entry, Mapping):
            raise ConfigError(where, f"expected a mapping {{corpus: ..., root: ...}}, "
                              f"found {entry!r}")
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}", f"unknown key {unknown[0]!r}; valid keys: "
                              f"{', '.join(ENTRY_KEYS)}")
        corpus = entry.get("corpus")
        if corpus not in parts:
            valid = sorted(parts)
            raise ConfigError(f"{where}.corpus", f"unknown corpus {corpus!r}; valid: {valid}")
        name = str(entry.get("name", corpus))
        if not name or SEP in name:
            raise ConfigError(f"{where}.name", f"a corpus name is non-empty without {SEP!r}, "
                              f"found {name!r}")
        out.append({**entry, "name": name})
    dup = [n for n, c in Counter(e["name"] for e in out).items() if c > 1]
    if dup:
        raise ConfigError("data.corpora", f"corpus names must be unique (add `name:` to tell "
                          f"two entries of one corpus apart); duplicated: {dup}")
    return out


def sub_config(data_cfg: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """The data section one corpus of the union is loaded with."""
    cfg = {k: v for k, v in data_cfg.items() if k != "corpora"}
    cfg.update({k: v for k, v in entry.items() if k != "name"})
    cfg["root"] = entry.get("root")  # never the outer root: each corpus names its own
    return cfg


class MultiCorpus(Corpus):
    """The union; `parts` is the registry of the corpora it may combine (corpora.py passes it)."""

    name = "multi"

    def __init__(self, parts: Mapping[str, type[Corpus]]) -> None:
        self.parts = dict(parts)

    def fingerprint(self, data_cfg: dict[str, Any]) -> str:
        return "|".join(self.parts[e["corpus"]]().fingerprint(sub_config(data_cfg, e))
                        if e.get("root") else "" for e in entries(data_cfg, self.parts))

    def _load(self, data_cfg: dict[str, Any], progress: Progress | None) -> CorpusContent:
        utts: list[Utterance] = []
        info: dict[str, Any] = {"corpora": [], "dropped": {}}
        for entry in entries(data_cfg, self.parts):
            name, corpus = entry["name"], entry["corpus"]
            content = self.parts[corpus]().load(sub_config(data_cfg, entry), progress)
            mapping = self.parts[corpus].shared_labels or {c: c for c in SHARED_CLASSES}
            kept = [u for u in content.utterances if u.label in mapping]
            info["corpora"].append(name)
            info["dropped"][name] = len(content.utterances) - len(kept)
            if not kept:
                raise ConfigError(f"data.corpora.{name}", f"no utterance of {corpus} maps onto "
                                  f"the shared classes {SHARED_CLASSES} (its classes: "
                                  f"{content.classes})")
            utts += [Utterance(id=f"{name}{SEP}{u.id}", waveform=u.waveform,
                               label=mapping[u.label], speaker=f"{name}{SEP}{u.speaker}",
                               session=f"{name}{SEP}{u.session}", split=u.split) for u in kept]
            if progress:
                progress(f"multi: {name}: {len(kept)} utterances kept, "
                         f"{info['dropped'][name]} dropped (not in {SHARED_CLASSES})")
        return CorpusContent(utts, list(SHARED_CLASSES), info)


def corpus_of(ids: list[str]) -> list[str]:
    """The corpus name of each row (the prefix MultiCorpus put on its id)."""
    return [i.split(SEP, 1)[0] for i in ids]


def multi_folds(data_cfg: Mapping[str, Any], parts: Mapping[str, type[Corpus]],
                names: list[str], speakers: list[str], sessions: list[str],
                splits: list[str | None]) -> list[Fold]:
    """Each corpus folded by its own rule; fold k joins every corpus' fold k (mod its count)."""
    arr_names = np.asarray(names)
    per_corpus = []
    for entry in entries(data_cfg, parts):
        idx = np.flatnonzero(arr_names == entry["name"])
        kind = (entry.get("folds") or parts[entry["corpus"]].default_folds
                or data_cfg["folds"])
        folds = make_folds(kind, [speakers[i] for i in idx], [sessions[i] for i in idx],
                           [splits[i] for i in idx], entry.get("n_folds", data_cfg["n_folds"]),
                           entry.get("seed", data_cfg["seed"]))
        per_corpus.append((entry["name"], idx, folds))
    n = max(len(folds) for _, _, folds in per_corpus)
    out = []
    for k in range(n):
        parts = [(name, idx, folds[k % len(folds)]) for name, idx, folds in per_corpus]
        out.append(Fold(
            "+".join(f"{name}:{f.name}" for name, _, f in parts),
            *(np.sort(np.concatenate([idx[getattr(f, s)] for _, idx, f in parts]))
              for s in ("train", "val", "test")),
        ))
    return out
