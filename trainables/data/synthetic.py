"""The synthetic corpus: a small IEMOCAP-like corpus generated in code (docs/data.md).

10 speakers (one F, one M per session) in 5 sessions utter voiced, speech-like signals: a
Rosenberg glottal pulse train with jitter and shimmer, through a cascade of formant resonators
whose vowel changes syllable by syllable, with consonant-like noise bursts, pauses and background
noise. The emotion shows only in prosody and voice quality (pitch level and range, tempo, pauses,
energy, spectral tilt, breathiness, jitter/shimmer), scaled by a per-speaker expressivity and
blurred by per-utterance variation, so classes overlap like acted emotions do: happy/angry share
high arousal, neutral/sad low arousal.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal

from trainables.data.base import SAMPLE_RATE, Utterance
from trainables.data.corpus import Corpus, CorpusContent
from trainables.errors import ConfigError

GENERATOR_VERSION = 4  # bump when the generator changes: invalidates cached corpora
CLASSES = ["neutral", "happy", "sad", "angry"]
CLASS_SHARE = np.array([0.31, 0.29, 0.20, 0.20])  # IEMOCAP 4-class shares (hap+exc merged)
N_SESSIONS = 5
SR = SAMPLE_RATE

# Per-class prosody. Each utterance draws speaker-neutral + expressivity * (class - neutral),
# plus per-utterance noise of SPREAD * (range of that parameter over classes).
_PARAMS = ["pitch", "range", "rate", "db", "oq", "cq", "jitter", "shimmer", "breath", "pause",
           "tilt"]
_PROSODY = {
    #           pitch range rate  db    oq    cq    jitter shimmer breath pause tilt
    "neutral": (1.00, 2.5, 4.0, 0.0, 0.60, 0.20, 0.006, 0.04, 0.03, 0.25, 0.0),
    "happy":   (1.15, 5.0, 4.5, 2.5, 0.55, 0.15, 0.008, 0.05, 0.03, 0.20, 0.2),
    "sad":     (0.94, 1.6, 3.3, -4.0, 0.68, 0.26, 0.011, 0.07, 0.07, 0.40, -0.3),
    "angry":   (1.11, 4.0, 4.7, 5.0, 0.48, 0.10, 0.011, 0.08, 0.02, 0.17, 0.4),
}
_TABLE = np.array([_PROSODY[c] for c in CLASSES])  # (4, P)
SPREAD = 0.15  # per-utterance noise, in units of each parameter's class range: the overlap knob

# Male formants F1-F4 (Hz) of five vowels; female speakers scale them up (~15 %).
_VOWELS = np.array([
    [730, 1090, 2440, 3400],  # a
    [530, 1840, 2480, 3500],  # e
    [270, 2290, 3010, 3600],  # i
    [570, 840, 2410, 3400],  # o
    [300, 870, 2240, 3300],  # u
], dtype=float)


def _speakers(rng: np.random.Generator) -> list[dict[str, Any]]:
    out = []
    for s in range(N_SESSIONS):
        noise_db = rng.uniform(-48, -36)  # recording condition of the session
        for gender in ("F", "M"):
            out.append({
                "speaker": f"Ses{s + 1:02d}_{gender}",
                "session": f"Ses{s + 1:02d}",
                "gender": gender,
                "f0": rng.normal(210, 18) if gender == "F" else rng.normal(118, 12),
                "formant": rng.normal(1.15 if gender == "F" else 1.0, 0.04),
                "rate": rng.normal(1.0, 0.08),
                "expressivity": rng.uniform(0.7, 1.15),
                "db": rng.normal(0.0, 2.0),
                "oq": rng.normal(0.0, 0.03),
                "noise_db": noise_db,
                "share": rng.dirichlet(CLASS_SHARE * 40),
            })
    return out


def _allocate(n: int, share: np.ndarray) -> np.ndarray:
    """Largest-remainder class counts summing to n, each class >= 1 when n >= n_classes."""
    raw = share * n
    counts = np.floor(raw).astype(int)
    counts[np.argsort(raw - counts)[::-1][: n - counts.sum()]] += 1
    while n >= len(share) and (counts == 0).any():
        counts[np.argmax(counts)] -= 1
        counts[np.argmin(counts)] += 1
    return counts


def _resonators(formants: np.ndarray) -> np.ndarray:
    """A cascade of unity-DC-gain 2-pole resonators as an sos array (len(formants), 6)."""
    bw = 50.0 + 0.06 * formants
    r = np.exp(-np.pi * bw / SR)
    theta = 2 * np.pi * formants / SR
    a1, a2 = -2 * r * np.cos(theta), r**2
    sos = np.zeros((len(formants), 6))
    sos[:, 0] = 1 + a1 + a2
    sos[:, 3], sos[:, 4], sos[:, 5] = 1.0, a1, a2
    return sos


def _segments(rng: np.random.Generator, dur: float, rate: float, pause: float) -> np.ndarray:
    """Syllable (start, end) times in seconds filling `dur`, with pauses between words."""
    t = rng.uniform(0.08, 0.3)
    segs = []
    while True:
        for _ in range(rng.integers(1, 4)):  # one word of 1-3 syllables
            d = rng.gamma(6.0, 1.0 / (6.0 * rate))
            if t + d > dur - 0.05:
                return np.array(segs or [(t, max(t + 0.05, dur - 0.05))])
            segs.append((t, t + d))
            t += d
        if rng.random() < 0.45:
            t += rng.exponential(pause)


def _utterance(rng: np.random.Generator, spk: dict[str, Any], cls: int) -> np.ndarray:
    p = _TABLE[0] + spk["expressivity"] * (_TABLE[cls] - _TABLE[0])
    p = p + rng.normal(0, SPREAD, p.shape) * np.ptp(_TABLE, axis=0)
    v = dict(zip(_PARAMS, p))
    dur = float(np.clip(rng.lognormal(np.log(2.8), 0.4), 1.0, 6.0))
    n = int(dur * SR)
    t = np.arange(n) / SR
    segs = _segments(rng, dur, max(2.0, v["rate"] * spk["rate"]), max(0.05, v["pause"]))

    # Pitch: declination over the utterance + a random accent per syllable, in semitones.
    centers = segs.mean(axis=1)
    rng_st = max(0.5, v["range"])
    semis = rng_st * (0.5 - centers / dur) + rng.normal(0, rng_st / 2, len(segs))
    f0 = spk["f0"] * max(0.7, v["pitch"]) * 2 ** (np.interp(t, centers, semis) / 12)

    # Glottal source: jitter per period, Rosenberg pulse shape, shimmer per period.
    period = np.floor(np.cumsum(f0) / SR).astype(np.int64)
    jit = rng.normal(0, max(0.0, v["jitter"]), period[-1] + 2)
    phase = np.cumsum(f0 * (1 + jit[period])) / SR
    frac, period = phase % 1.0, phase.astype(np.int64)
    oq = np.clip(v["oq"] + spk["oq"], 0.3, 0.85)
    tn = np.clip(v["cq"], 0.04, oq - 0.1)
    tp = oq - tn
    flow = np.where(frac < tp, 0.5 * (1 - np.cos(np.pi * frac / tp)),
                    np.where(frac < oq, np.cos(0.5 * np.pi * (frac - tp) / tn), 0.0))
    shim = 1 + rng.normal(0, max(0.0, v["shimmer"]), period[-1] + 2)
    source = np.diff(flow, prepend=0.0) * shim[period] * 20
    source += max(0.0, v["breath"]) * rng.standard_normal(n) * (0.3 + flow)

    # Vowels: crossfaded outputs of each vowel's formant cascade, one vowel per syllable.
    starts, ends = (segs * SR).astype(int).T
    vowel_of = rng.integers(0, len(_VOWELS), len(segs))
    weights = np.zeros((len(_VOWELS), n))
    env = np.zeros(n)
    amp = 10 ** (rng.normal(0, 2.0 + 1.5 * max(0.0, v["range"]) / 5, len(segs)) / 20)
    cons = np.zeros(n)
    for k, (a, b) in enumerate(zip(starts, ends)):
        m = b - a
        onset = int(m * rng.uniform(0.15, 0.35)) if rng.random() < 0.6 else 0
        weights[vowel_of[k], a:b] = 1.0
        env[a + onset: b] = amp[k] * np.sin(np.linspace(0, np.pi, m - onset)) ** 0.6
        if onset:
            cons[a: a + onset] = amp[k] * np.hanning(onset) * 0.4
    # 20 ms moving average (via cumsum, O(n)): smooth vowel-to-vowel formant transitions.
    csum = np.cumsum(np.pad(weights, ((0, 0), (161, 160))), axis=1)
    weights = (csum[:, 321:] - csum[:, :-321]) / 321
    voiced = np.zeros(n)
    scale = spk["formant"] * (1 + 0.04 * (v["db"] / 5))  # louder -> more open mouth, higher F1
    for k, formants in enumerate(_VOWELS):
        if weights[k].any():
            voiced += weights[k] * signal.sosfilt(_resonators(formants * scale), source)
    voiced *= env
    # Spectral tilt: a first-difference mix (positive -> brighter, negative -> duller).
    tilt = float(np.clip(v["tilt"], -0.8, 0.8))
    voiced = voiced + tilt * (voiced - np.concatenate(([0.0], voiced[:-1])))
    hiss = rng.standard_normal(n)
    voiced += cons * (hiss - np.concatenate(([0.0], hiss[:-1]))) * 0.5

    rms = np.sqrt(np.mean(voiced[env > 0] ** 2)) + 1e-9
    gain_db = -26 + v["db"] + spk["db"] + rng.normal(0, 2.0)  # mic distance varies per take
    speech = voiced / rms * 10 ** (gain_db / 20)
    noise = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(n)) / 4.0  # pinkish
    noise *= 10 ** ((spk["noise_db"] + rng.normal(0, 2)) / 20)
    return speech + noise  # float64; generate rounds it to int16 PCM


def _to_pcm(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)


def _from_pcm(pcm: np.ndarray) -> np.ndarray:
    # Generated and cached waveforms both go through int16, so a cache hit is bit-identical.
    return pcm.astype(np.float32) / np.float32(32767)


def _utterances(tasks: list[tuple[int, int, int, dict[str, Any], int]]) -> list[np.ndarray]:
    """A process pool's part of `generate`: the int16 PCM of each (seed, speaker index, k,
    speaker, class), each from its own generator."""
    # One generator per utterance: each utterance depends only on (seed, speaker, k).
    return [_to_pcm(_utterance(np.random.default_rng([seed, s, k]), spk, cls))
            for seed, s, k, spk, cls in tasks]


def generate(n_utterances: int, seed: int,
             progress: Callable[[str], None] | None = None,
             workers: int | None = None) -> list[Utterance]:
    """The synthetic corpus, deterministic in (n_utterances, seed) whatever `workers` (processes
    generating the waveforms; default one per core, trainables/data/parallel.py)."""
    from trainables.data.parallel import default_workers, parallel_map, split

    rng = np.random.default_rng([seed, 7919])
    speakers = _speakers(rng)
    per_spk = np.full(len(speakers), n_utterances // len(speakers))
    per_spk[: n_utterances % len(speakers)] += 1
    tasks = []  # the labels come from the shared generator, in this process, in order
    for s, spk in enumerate(speakers):
        labels = np.repeat(np.arange(len(CLASSES)), _allocate(int(per_spk[s]), spk["share"]))
        rng.shuffle(labels)
        tasks.extend((seed, s, k, spk, int(cls)) for k, cls in enumerate(labels))
    n_workers = default_workers() if workers is None else workers
    parts = split(tasks, max(8, -(-len(tasks) // (4 * n_workers))))
    sizes = np.cumsum([len(p) for p in parts])

    def done(k: int) -> None:
        if progress and (k == len(parts) or k % max(1, len(parts) // 5) == 0):
            progress(f"synthetic: generated {sizes[k - 1]}/{n_utterances} utterances")

    pcm = [w for part in parallel_map(_utterances, parts, workers=n_workers, done=done)
           for w in part]
    return [Utterance(id=f"{spk['speaker']}_{k:04d}", waveform=_from_pcm(wave),
                      label=CLASSES[cls], speaker=spk["speaker"], session=spk["session"])
            for (_, _, k, spk, cls), wave in zip(tasks, pcm)]


def _cache_path(cache_dir: str | os.PathLike, n: int, seed: int) -> Path:
    tag = hashlib.sha256(f"{GENERATOR_VERSION}-{n}-{seed}".encode()).hexdigest()[:16]
    return Path(cache_dir) / "synthetic" / f"synthetic_{n}_{seed}_{tag}.npz"


def _save(path: Path, utts: list[Utterance]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    waves = [u.waveform for u in utts]
    pcm = _to_pcm(np.concatenate(waves))  # int16 PCM halves the file
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, pcm=pcm, lengths=np.array([len(w) for w in waves], dtype=np.int64),
                 ids=np.array([u.id for u in utts]), labels=np.array([u.label for u in utts]),
                 speakers=np.array([u.speaker for u in utts]),
                 sessions=np.array([u.session for u in utts]))
        os.replace(tmp, path)  # atomic: a concurrent reader never sees a half-written file
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load(path: Path) -> list[Utterance]:
    with np.load(path, allow_pickle=False) as z:
        pcm, lengths = z["pcm"], z["lengths"]
        ids, labels, speakers, sessions = z["ids"], z["labels"], z["speakers"], z["sessions"]
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    return [
        Utterance(id=str(ids[i]), waveform=_from_pcm(pcm[offsets[i]: offsets[i + 1]]),
                  label=str(labels[i]), speaker=str(speakers[i]),
                  session=str(sessions[i]))
        for i in range(len(lengths))
    ]


class SyntheticCorpus(Corpus):
    """`corpus: synthetic`: generated from `data.seed`, `data.synthetic_utterances` long."""

    name = "synthetic"

    def _load(self, data_cfg: dict[str, Any],
              progress: Callable[[str], None] | None) -> CorpusContent:
        n = data_cfg.get("synthetic_utterances", 800)
        if not isinstance(n, int) or isinstance(n, bool) or n < 40:
            raise ConfigError("data.synthetic_utterances",
                              f"expected an integer >= 40, found {n!r}")
        seed = data_cfg.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError("data.seed", f"expected an integer, found {seed!r}")
        cache_dir = data_cfg.get("cache_dir")
        path = _cache_path(cache_dir, n, seed) if cache_dir else None
        if path is not None and path.exists():
            utts, cache = _load(path), "hit"
        else:
            utts, cache = generate(n, seed, progress), "miss"
            if path is not None:
                _save(path, utts)
        return CorpusContent(utts, list(CLASSES), {"synthetic_cache": cache})
