"""`corpus: manifest`: any corpus listed in one CSV or Parquet file (data.root).

Columns: path, label, speaker (required), session, split (optional). Relative paths resolve
against the manifest's folder. Classes are `data.classes` when it is a list (then every label
must be one of them), otherwise the sorted unique labels. Session defaults to the speaker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from trainables.data.audio import read_audio
from trainables.data.base import Utterance
from trainables.data.corpus import Corpus, CorpusContent, require_root
from trainables.errors import ConfigError, DataError

REQUIRED = ("path", "label", "speaker")
OPTIONAL = ("session", "split")
LAYOUT = "a .csv or .parquet manifest with columns path, label, speaker[, session][, split]"


def read_manifest(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    elif suffix in (".parquet", ".pq"):
        df = pd.read_parquet(path).astype(str)
    else:
        raise DataError(path, f"unknown manifest type {suffix!r}; expected {LAYOUT}")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(path, f"missing columns {missing}; expected {LAYOUT}, "
                              f"found columns {list(df.columns)}")
    for col in REQUIRED:
        blank = df.index[df[col].str.strip().isin(["", "nan", "None"])].tolist()
        if blank:
            raise DataError(path, f"column {col!r} is empty in rows {blank[:5]}; "
                                  "expected a value in every row")
    return df


def _optional(row: dict[str, str], key: str) -> str | None:
    value = row.get(key)
    return None if value is None or value.strip() in ("", "nan", "None") else value


class ManifestCorpus(Corpus):
    name = "manifest"
    needs_root = True

    def _load(self, data_cfg: dict[str, Any],
              progress: Callable[[str], None] | None) -> CorpusContent:
        path = require_root(data_cfg, LAYOUT)
        if not path.is_file():
            raise DataError(path, f"data.root is not a file; expected {LAYOUT}")
        df = read_manifest(path)
        labels = sorted(set(df["label"]))
        classes = data_cfg.get("classes")
        if isinstance(classes, list):
            if not classes or len(set(classes)) != len(classes):
                raise ConfigError("data.classes", f"expected distinct class names, "
                                                  f"found {classes}")
            unknown = [lab for lab in labels if lab not in classes]
            if unknown:
                rows = df.index[df["label"].isin(unknown)].tolist()[:5]
                raise DataError(path, f"labels {unknown} (rows {rows}) are not in data.classes "
                                      f"{classes}")
            labels = [str(c) for c in classes]
        if progress:
            progress(f"manifest: loading {len(df)} files listed in {path}")
        base = path.parent
        utts = []
        for i, row in enumerate(df.to_dict("records")):
            audio = Path(row["path"])
            audio = audio if audio.is_absolute() else base / audio
            session = _optional(row, "session") or row["speaker"]
            split = _optional(row, "split")
            utts.append(Utterance(id=f"{i}:{row['path']}", waveform=read_audio(audio),
                                  label=row["label"], speaker=row["speaker"],
                                  session=session, split=split))
            if progress and (i + 1) % 1000 == 0:
                progress(f"manifest: loaded {i + 1}/{len(df)} files")
        return CorpusContent(utts, labels, {"root": str(path)})

    def fingerprint(self, data_cfg: dict[str, Any]) -> str:
        stat = Path(str(data_cfg.get("root"))).stat()
        return f"{stat.st_size}:{stat.st_mtime_ns}"
