"""Builders of tiny corpora in the real on-disk layouts (IEMOCAP, MELD, manifest).

Plain functions so any test can reuse them: `from tests.trainables.data.fixtures import ...`.
Each returns what a correct loader must find, so tests compare against the builder's own record.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

SMALL_SYNTHETIC = 60  # synthetic_utterances for tests: every class present, generation < 1 s
IEMOCAP_LABELS = ["neu", "hap", "exc", "sad", "ang", "fru", "xxx", "sur"]
MELD_EMOTIONS = ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"]
MELD_SPEAKERS = ["Joey", "Rachel", "Ross", "Monica", "Chandler", "Phoebe"]
MELD_DIRS = {"train": "train", "dev": "dev_splits_complete", "test": "test"}


def write_wav(path: Path, seconds: float, sr: int = 16_000, channels: int = 1,
              freq: float = 220.0, seed: int = 0) -> Path:
    """A short voiced-ish tone plus noise (16-bit PCM)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(max(1, int(seconds * sr))) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    if channels > 1:
        x = np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)
    sf.write(path, x.astype(np.float32), sr, subtype="PCM_16")
    return path


def make_iemocap_tree(root: Path, sessions: tuple[int, ...] = (1, 2, 3, 4, 5),
                      per_dialog: int = 8, sr_of_session: dict[int, int] | None = None
                      ) -> list[dict]:
    """root/Session{s}/{dialog/EmoEvaluation, sentences/wav}; returns the labelled wav records.

    Each session has two dialogs (one F-, one M-recorded); turns alternate F/M speakers and
    labels cycle through IEMOCAP_LABELS (xxx and sur are excluded by every loader).
    """
    sr_of_session = sr_of_session or {}
    records = []
    for s in sessions:
        sess_dir = root / f"Session{s}"
        emo_dir = sess_dir / "dialog" / "EmoEvaluation"
        emo_dir.mkdir(parents=True, exist_ok=True)
        for dialog in (f"Ses{s:02d}F_impro01", f"Ses{s:02d}M_script01_1"):
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            for k in range(per_dialog):
                gender = "FM"[k % 2]
                stem = f"{dialog}_{gender}{k // 2:03d}"
                label = IEMOCAP_LABELS[(k + s) % len(IEMOCAP_LABELS)]
                start = 2.0 * k
                lines += [f"[{start:.4f} - {start + 1.5:.4f}]\t{stem}\t{label}\t"
                          "[2.5000, 2.5000, 2.5000]",
                          "C-E2:\tNeutral;\t()", "A-E3:\tval 3; act 2; dom  2;\t()", ""]
                sr = sr_of_session.get(s, 16_000)
                write_wav(sess_dir / "sentences" / "wav" / dialog / f"{stem}.wav",
                          0.4 + 0.1 * (k % 4), sr=sr, freq=120.0 + 20 * k, seed=s * 100 + k)
                records.append({"stem": stem, "label": label, "speaker": f"Ses{s:02d}_{gender}",
                                "session": f"Ses{s:02d}", "sr": sr})
            (emo_dir / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
    return records


def make_meld_tree(root: Path, dialogues: int = 3, per_dialogue: int = 5,
                   missing: tuple[tuple[str, int, int], ...] = (),
                   broken: tuple[tuple[str, int, int], ...] = ()) -> list[dict]:
    """MELD CSVs + dia{D}_utt{U}.wav per split folder (MELD_DIRS); returns the listed rows.

    `missing` clips are listed but have no wav; `broken` ones are a wav that is not audio.
    """
    rows_all = []
    for split, folder in MELD_DIRS.items():
        rows = []
        for d in range(dialogues):
            for u in range(per_dialogue):
                n = len(rows_all)
                row = {"Sr No.": n + 1, "Utterance": f"line {n}, with a comma",
                       "Speaker": MELD_SPEAKERS[(d + u) % len(MELD_SPEAKERS)],
                       "Emotion": MELD_EMOTIONS[n % len(MELD_EMOTIONS)], "Sentiment": "neutral",
                       "Dialogue_ID": d, "Utterance_ID": u, "Season": 1, "Episode": 1,
                       "StartTime": "00:00:01,000", "EndTime": "00:00:02,000"}
                rows.append(row)
                rows_all.append({**row, "split": split})
                wav = root / folder / f"dia{d}_utt{u}.wav"
                if (split, d, u) in missing:
                    continue
                if (split, d, u) in broken:
                    wav.parent.mkdir(parents=True, exist_ok=True)
                    wav.write_bytes(b"RIFF....not really a wav file")
                    continue
                write_wav(wav, 0.3 + 0.05 * u, sr=16_000, freq=150 + 10 * u, seed=n)
        (root / folder).mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(root / f"{split}_sent_emo.csv", index=False)
    return rows_all


def make_manifest(root: Path, fmt: str = "csv", n: int = 12,
                  labels: tuple[str, ...] = ("calm", "tense", "upbeat")) -> tuple[Path, list]:
    """root/audio/*.wav + root/manifest.{csv,parquet} with relative paths; returns (path, rows)."""
    rows = []
    for i in range(n):
        rel = f"audio/clip{i:03d}.wav"
        write_wav(root / rel, 0.3 + 0.05 * (i % 3), freq=100 + 15 * i, seed=i)
        rows.append({"path": rel, "label": labels[i % len(labels)], "speaker": f"spk{i % 4}",
                     "session": f"sess{i % 4 // 2}"})
    path = root / f"manifest.{fmt}"
    df = pd.DataFrame(rows)
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    return path, rows
