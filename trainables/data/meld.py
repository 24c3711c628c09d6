"""`corpus: meld`: the MELD CSVs plus audio extracted to wav (docs/data.md).

data.root holds train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv and one audio folder per
split with `dia{Dialogue_ID}_utt{Utterance_ID}.wav` files; accepted folder names are listed in
AUDIO_DIRS (the first that exists is used). A listed clip whose wav is missing or unreadable is
skipped and counted (MELD has a few broken clips); the count and a few examples are reported once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from trainables.data.audio import read_audio
from trainables.data.base import Utterance
from trainables.data.corpus import Corpus, CorpusContent, class_subset, require_root
from trainables.errors import DataError

EMOTIONS = ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"]
SPLITS = ("train", "dev", "test")
CSV_NAMES = {s: f"{s}_sent_emo.csv" for s in SPLITS}
AUDIO_DIRS = {
    "train": ("train", "train_wav", "train_splits"),
    "dev": ("dev", "dev_wav", "dev_splits_complete"),
    "test": ("test", "test_wav", "output_repeated_splits_test"),
}
COLUMNS = ("Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
LAYOUT = ("a MELD directory with train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv and "
          "wav folders train/, dev/, test/ holding dia{D}_utt{U}.wav")


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(path, f"MELD label file not found; expected {LAYOUT}")
    # The official CSVs contain a few cp1252 bytes in the Utterance text, which is not used.
    df = pd.read_csv(path, encoding="utf-8", encoding_errors="replace")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(path, f"missing columns {missing}; expected columns {list(COLUMNS)}, "
                              f"found {list(df.columns)}")
    unknown = sorted(set(df["Emotion"].astype(str).str.lower()) - set(EMOTIONS))
    if unknown:
        raise DataError(path, f"unknown Emotion labels {unknown}; expected one of {EMOTIONS}")
    return df


def _audio_dir(root: Path, split: str) -> Path:
    for name in AUDIO_DIRS[split]:
        if (root / name).is_dir():
            return root / name
    raise DataError(root, f"no audio folder for the {split} split; expected one of "
                          f"{list(AUDIO_DIRS[split])} holding dia{{D}}_utt{{U}}.wav")


class MeldCorpus(Corpus):
    name = "meld"
    needs_root = True
    shared_labels = {"neutral": "neutral", "joy": "happy", "sadness": "sad", "anger": "angry"}
    default_folds = "official"

    def _load(self, data_cfg: dict[str, Any],
              progress: Callable[[str], None] | None) -> CorpusContent:
        root = require_root(data_cfg, LAYOUT)
        classes = class_subset(data_cfg, EMOTIONS, "meld")
        tables = {s: _read_csv(root / CSV_NAMES[s]) for s in SPLITS}
        total = sum(len(t) for t in tables.values())
        if progress:
            progress(f"meld: loading {total} listed clips from {root}")
        utts, skipped, listed = [], [], 0
        for split, df in tables.items():
            folder = _audio_dir(root, split)
            for row in df.itertuples(index=False):
                label = str(row.Emotion).lower()
                if label not in classes:
                    continue
                listed += 1
                d, u = int(row.Dialogue_ID), int(row.Utterance_ID)
                path = folder / f"dia{d}_utt{u}.wav"
                try:
                    wave = read_audio(path)
                except DataError as exc:  # missing / broken clip: skip it, report once below
                    skipped.append(str(exc))
                    continue
                utts.append(Utterance(id=f"{split}_dia{d}_utt{u}", waveform=wave, label=label,
                                      speaker=str(row.Speaker), session=f"{split}_dia{d}",
                                      split=split))
        if skipped:
            msg = (f"meld: skipped {len(skipped)} of {listed} listed clips (missing or "
                   f"unreadable), e.g. {skipped[:3]}")
            if progress:
                progress(msg)
            else:
                warnings.warn(msg, stacklevel=2)
        info = {"root": str(root), "skipped": len(skipped), "skipped_examples": skipped[:10]}
        return CorpusContent(utts, classes, info)

    def fingerprint(self, data_cfg: dict[str, Any]) -> str:
        root = Path(str(data_cfg.get("root")))
        stats = [(root / n).stat() for n in CSV_NAMES.values() if (root / n).exists()]
        return ";".join(f"{s.st_size}:{s.st_mtime_ns}" for s in stats)
