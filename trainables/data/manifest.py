"""`corpus: manifest`: any corpus listed in one CSV or Parquet file (data.root).

Columns: path, label, speaker (required), session, split (optional). Relative paths resolve
against the manifest's folder. Classes are `data.classes` when it is a list (then every label
must be one of them), otherwise the sorted unique labels. Session defaults to the speaker.
"""

from __future__ import annotations

import os
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
    """The manifest's rows as text, checked (check_rows); every problem is one DataError."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:
            raise DataError(path, f"the manifest is empty; expected {LAYOUT} and one row per "
                                  "audio file") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataError(path, f"the manifest is not readable CSV "
                                  f"({str(exc).splitlines()[0]}); expected {LAYOUT}") from None
    elif suffix in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path).astype(str)
        except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
            raise DataError(path, f"the manifest is not readable Parquet "
                                  f"({str(exc).splitlines()[0]}); expected {LAYOUT}") from None
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
    check_rows(path, df)
    return df


def _rows(index: pd.Index) -> str:
    shown = [int(i) for i in index[:6]]
    return f"rows {shown}{' ...' if len(index) > 6 else ''} (0-based, after the header)"


def check_rows(path: Path, df: pd.DataFrame) -> None:
    """Refuse a manifest that leaks or lies (issue 23.6): no rows; one audio file listed twice
    (duplicated row, or under two labels, speakers or sessions: it could be test in one role and
    training in another); labels that differ only by case or surrounding spaces (`Calm`,
    `calm `: separate classes, a UAR over too many)."""
    if df.empty:
        raise DataError(path, f"the manifest has no rows; expected {LAYOUT} and one row per "
                              "audio file")
    audio = [os.path.normpath(p if os.path.isabs(p) else path.parent / p) for p in df["path"]]
    repeated = pd.Series(audio, index=df.index)
    repeated = repeated[repeated.duplicated(keep=False)]
    if not repeated.empty:
        first = repeated[repeated == repeated.iloc[0]].index
        rows = df.loc[first]
        listed = rows["path"].iloc[0]
        for col, what in (("speaker", "speakers"), ("session", "sessions"), ("label", "labels")):
            if col in rows and rows[col].nunique() > 1:
                raise DataError(path, f"{listed} is listed under {rows[col].nunique()} {what} "
                                      f"({', '.join(map(repr, rows[col].unique()))}) in "
                                      f"{_rows(first)}; each audio file is one utterance of one "
                                      f"{col}")
        raise DataError(path, f"{listed} is listed {len(first)} times, in {_rows(first)}; "
                              "each audio file is listed once (remove the duplicated rows)")
    labels = df["label"]
    folded = labels.str.strip().str.casefold()
    for _, group in labels.groupby(folded):
        variants = group.value_counts().index.tolist()  # the most common spelling first
        if len(variants) > 1:
            rows = group.index[group != variants[0]]
            raise DataError(path, f"labels {', '.join(map(repr, variants))} differ only by case "
                                  f"or surrounding spaces ({_rows(rows)} of the less common "
                                  "spellings): write each class one way")


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
