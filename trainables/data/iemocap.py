"""`corpus: iemocap`: an IEMOCAP release directory (Session1..Session5).

The index (which wav has which label) comes from torchaudio.datasets.IEMOCAP; audio is read with
soundfile (trainables/data/audio.py). `data.classes: 4` (default) keeps neutral, happy (hap and
exc merged), sad, angry; `data.classes: 6` keeps neu, hap, sad, ang, exc, fru as six classes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainables.data.audio import read_audio
from trainables.data.base import Utterance
from trainables.data.corpus import Corpus, CorpusContent, require_root
from trainables.errors import ConfigError, DataError

LABEL_MAPS: dict[int, dict[str, str]] = {
    4: {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry"},
    6: {"neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry", "exc": "excited",
        "fru": "frustrated"},
}
CLASS_NAMES: dict[int, list[str]] = {
    4: ["neutral", "happy", "sad", "angry"],
    6: ["neutral", "happy", "sad", "angry", "excited", "frustrated"],
}
LAYOUT = ("an IEMOCAP release directory with Session1..Session5/dialog/EmoEvaluation/*.txt and "
          "Session*/sentences/wav/<dialog>/<utterance>.wav")


def speaker_of(stem: str) -> str:
    """`Ses01F_impro01_M000` -> `Ses01_M`: the gender letter of the LAST field is the speaker.

    The first field (`Ses01F`) names who wore the motion-capture markers in the dialog, not who
    is speaking, so torchaudio's speaker field is not the speaker.
    """
    return f"{stem[:5]}_{stem.rsplit('_', 1)[-1][0]}"


def _index(root: Path) -> list[tuple[str, str]]:
    """(path relative to root, raw label) of every labelled wav, via torchaudio's index."""
    from torchaudio.datasets import IEMOCAP

    sessions = tuple(s for s in range(1, 6) if (root / f"Session{s}").is_dir())
    if not sessions:
        raise DataError(root, f"no Session1..Session5 folders; expected {LAYOUT}")
    # torchaudio looks for <root>/IEMOCAP/Session*; the release folder usually has another name
    # (IEMOCAP_full_release), so it is linked under that name in a temporary folder.
    with tempfile.TemporaryDirectory() as tmp:
        if root.name == "IEMOCAP":
            base = root.parent
        else:
            base = Path(tmp)
            os.symlink(root.resolve(), base / "IEMOCAP", target_is_directory=True)
        dataset = IEMOCAP(base, sessions=sessions)
        metas = [dataset.get_metadata(n) for n in range(len(dataset))]
    # get_metadata's path starts at the first "Session" of the absolute path, which is wrong
    # when a parent folder name contains "Session": keep only Session*/sentences/wav/<d>/<u>.wav.
    return [(str(Path(*Path(meta[0]).parts[-5:])), meta[3]) for meta in metas]


class IemocapCorpus(Corpus):
    name = "iemocap"
    needs_root = True

    def _load(self, data_cfg: dict[str, Any],
              progress: Callable[[str], None] | None) -> CorpusContent:
        n_classes = data_cfg.get("classes", 4)
        if n_classes not in LABEL_MAPS:
            raise ConfigError("data.classes", f"iemocap supports 4 or 6 classes, "
                                              f"found {n_classes!r}")
        root = require_root(data_cfg, LAYOUT)
        mapping = LABEL_MAPS[n_classes]
        entries = [(rel, mapping[lab]) for rel, lab in _index(root) if lab in mapping]
        if progress:
            progress(f"iemocap: loading {len(entries)} labelled wav files from {root}")
        utts = []
        for k, (rel, label) in enumerate(entries):
            stem = Path(rel).stem
            utts.append(Utterance(id=stem, waveform=read_audio(root / rel), label=label,
                                  speaker=speaker_of(stem), session=stem[:5]))
            if progress and (k + 1) % 1000 == 0:
                progress(f"iemocap: loaded {k + 1}/{len(entries)} files")
        return CorpusContent(utts, list(CLASS_NAMES[n_classes]), {"root": str(root)})

    def fingerprint(self, data_cfg: dict[str, Any]) -> str:
        root = Path(str(data_cfg.get("root")))
        stats = [p.stat() for p in sorted(root.glob("Session*/dialog/EmoEvaluation"))]
        return ";".join(f"{s.st_mtime_ns}" for s in stats)
