"""Real synthesized speech: the reference baseline vs the default transformer sweep, paired.

Builds a small corpus of REAL synthesized speech (espeak-ng formant synthesis + sox effects):
several espeak voices (accent x voice variant) are the speakers, two per session (one F-, one
M-variant, like IEMOCAP), and the emotion is carried by prosody only: every class says the same
pool of emotionally neutral sentences. Class means (each utterance draws
`neutral + expressivity * (class - neutral)` plus noise of SPREAD x the class range):

    class    pitch(-p)  range  rate(wpm)  amp(-a)  word gap  treble  tremolo  overdrive
    neutral   +0        100%   165        100      0         0 dB    0 %      0
    happy     +14       170%   190        115      0        +3 dB    0 %      0
    sad       -10        45%   130         70      4        -5 dB   15 %      0
    angry     +6        140%   195        150      0        +6 dB    0 %      8

Speakers differ in base pitch, rate, loudness and expressivity; each take has its own recording
gain (+-3 dB) and each session its own background noise, so no single cue separates the classes.
Then, on the same leave-one-session-out folds, it runs (a) the reference baseline
(trainables/egemaps_baseline.py: eGeMAPS functionals + standardized logistic regression) and (b)
the
default transformer sweep through the product's CLI (`sweep.py search_spaces/transformer.yaml`
in a subprocess, every fold), and prints both test UARs and the paired difference per member
(sweep's best-by-validation trial minus baseline) with a 95 % t-interval.

    .venv/bin/python bench/real_speech.py [--voices 10] [--utterances-per-class 16]
        [--trials 8] [--epochs 6] [--out DIR] [--skip-sweep] [--set KEY=VALUE ...]

Needs `espeak-ng` and `sox` on PATH (Debian: apt-get install -y espeak-ng sox).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Run as a script, sys.path[0] is bench/, where a bench/<name>.py would shadow a module of that
# name (a script named like a standard-library module would shadow it): the repo root
# takes its place, before any third-party import.
if sys.path and Path(sys.path[0] or ".").resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile as sf  # noqa: E402
import yaml  # noqa: E402

from trainables.config import DATA_DEFAULTS, with_defaults  # noqa: E402
from trainables.egemaps_baseline import run_baseline  # noqa: E402
from trainables.trial_config import TrainSection  # noqa: E402

SPACE = REPO / "search_spaces" / "transformer.yaml"
SAMPLE_RATE = 16_000
CLASSES = ("neutral", "happy", "sad", "angry")
# (espeak voice, F variant, M variant): one session per accent, two speakers each.
ACCENTS = (("en-us", "f3", "m3"), ("en-gb", "f2", "m1"), ("en-gb-scotland", "f4", "m4"),
           ("en-029", "f1", "m2"), ("en-gb-x-rp", "f5", "m7"), ("en-us-nyc", "f3", "m6"),
           ("en-gb-x-gbclan", "f2", "m5"), ("en-gb-x-gbcwmd", "f4", "m3"))
PARAMS = ("pitch", "range", "rate", "amp", "gap", "treble", "tremolo", "overdrive")
EMOTION = {  # class means of PARAMS (see the module docstring)
    "neutral": (0.0, 100.0, 165.0, 100.0, 0.0, 0.0, 0.0, 0.0),
    "happy": (14.0, 170.0, 190.0, 115.0, 0.0, 3.0, 0.0, 0.0),
    "sad": (-10.0, 45.0, 130.0, 70.0, 4.0, -5.0, 15.0, 0.0),
    "angry": (6.0, 140.0, 195.0, 150.0, 0.0, 6.0, 0.0, 8.0),
}
SPREAD = 0.3  # per-utterance noise, as a fraction of each parameter's range across classes
SENTENCES = (
    "The meeting has been moved to Thursday afternoon.",
    "I left the keys on the kitchen table.",
    "The train to the city leaves at seven.",
    "She told me the report would be ready tomorrow.",
    "We walked along the river until it got dark.",
    "There is a new shop at the end of the street.",
    "He said the package arrived this morning.",
    "The window in the office was open all night.",
    "They are painting the house next door.",
    "My brother called while you were out.",
    "The library closes early on Sundays.",
    "I have to return these books by Friday.",
    "The bus was late again today.",
    "Somebody parked a blue car in front of the gate.",
    "We need more chairs for the dinner.",
    "The phone rang twice and then stopped.",
    "It is going to rain again this evening.",
    "The children are playing in the garden.",
    "I found your letter under the door.",
    "The doctor will see you at ten.",
)


@dataclass(frozen=True)
class Speaker:
    name: str  # e.g. "S01_F" (unique across the corpus)
    session: str  # e.g. "S01"
    voice: str  # espeak-ng voice + variant, e.g. "en-us+f3"
    pitch: float  # base -p offset
    rate: float  # speaking-rate factor
    gain_db: float  # speaker loudness
    expressivity: float  # how strongly they act the emotions


def speakers(n_voices: int, rng: np.random.Generator) -> list[Speaker]:
    """n_voices speakers, two per session (F, M); at most 2 x len(ACCENTS)."""
    if n_voices < 6 or n_voices % 2 or n_voices > 2 * len(ACCENTS):
        raise SystemExit(f"--voices: expected an even number in [6, {2 * len(ACCENTS)}] "
                         "(>= 3 sessions of 2 speakers for leave-one-session-out), "
                         f"found {n_voices}")
    out = []
    for s, (voice, fv, mv) in enumerate(ACCENTS[: n_voices // 2]):
        for gender, variant in (("F", fv), ("M", mv)):
            out.append(Speaker(
                name=f"S{s + 1:02d}_{gender}", session=f"S{s + 1:02d}",
                voice=f"{voice}+{variant}", pitch=float(rng.normal(0, 6)),
                rate=float(rng.uniform(0.9, 1.1)), gain_db=float(rng.normal(0, 2)),
                expressivity=float(rng.uniform(0.6, 1.1))))
    return out


def utterance_params(label: str, spk: Speaker, rng: np.random.Generator) -> dict[str, float]:
    """One take's prosody: the speaker's acted class mean plus per-utterance noise."""
    neutral = np.asarray(EMOTION["neutral"])
    target = np.asarray(EMOTION[label])
    table = np.asarray(list(EMOTION.values()))
    spread = SPREAD * (table.max(0) - table.min(0))
    acted = neutral + spk.expressivity * (target - neutral)
    value = acted + rng.normal(0, 1, len(PARAMS)) * spread
    p = dict(zip(PARAMS, value.tolist(), strict=True))
    return {
        "pitch": float(np.clip(50 + spk.pitch + p["pitch"], 5, 95)),
        "range": float(np.clip(p["range"], 15, 200)),
        "rate": float(np.clip(p["rate"] * spk.rate, 90, 260)),
        "amp": float(np.clip(p["amp"], 30, 200)),
        "gap": float(np.clip(p["gap"], 0, 12)),
        "treble": float(p["treble"]),
        "tremolo": float(np.clip(p["tremolo"], 0, 40)),
        "overdrive": float(np.clip(p["overdrive"], 0, 20)),
        "gain_db": float(spk.gain_db + rng.uniform(-3, 3)),  # recording gain of the take
    }


def synthesize(text: str, spk: Speaker, p: dict[str, float], noise_rms: float, seed: int,
               out: Path) -> float:
    """espeak-ng -> sox effects -> + session noise -> 16 kHz 16-bit wav; returns seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, shaped = Path(tmp) / "espeak.wav", Path(tmp) / "sox.wav"
        ssml = f'<speak><prosody range="{p["range"]:.0f}%">{text}</prosody></speak>'
        subprocess.run(["espeak-ng", "-m", "-v", spk.voice, "-p", f"{p['pitch']:.0f}",
                        "-s", f"{p['rate']:.0f}", "-a", f"{p['amp']:.0f}",
                        "-g", f"{p['gap']:.0f}", "-w", str(raw), ssml],
                       check=True, capture_output=True)
        effects = ["rate", str(SAMPLE_RATE), "treble", f"{p['treble']:.1f}"]
        if p["tremolo"] >= 1:  # a shaky voice
            effects += ["tremolo", "5.5", f"{p['tremolo']:.0f}"]
        if p["overdrive"] >= 1:  # a tense, strained voice
            effects += ["overdrive", f"{p['overdrive']:.0f}", "20"]
        effects += ["gain", f"{p['gain_db']:.1f}"]
        # -G: guard against clipping (only the loudest takes are turned down)
        subprocess.run(["sox", "-G", str(raw), "-c", "1", "-b", "16", str(shaped), *effects],
                       check=True, capture_output=True)
        wave, sr = sf.read(shaped, dtype="float32")
    if sr != SAMPLE_RATE:
        raise RuntimeError(f"{shaped}: sox wrote {sr} Hz, expected {SAMPLE_RATE}")
    rng = np.random.default_rng(seed)
    # pink-ish room noise: white noise through a one-pole low-pass, then the session's level
    white = rng.standard_normal(wave.size + 1)
    pink = white[1:] + 0.9 * white[:-1]
    wave = wave + noise_rms * pink / pink.std()
    sf.write(out, np.clip(wave, -1, 1), SAMPLE_RATE, subtype="PCM_16")
    return wave.size / SAMPLE_RATE


def build_corpus(folder: Path, n_voices: int, per_class: int, seed: int,
                 jobs: int) -> tuple[Path, dict[str, Any]]:
    """Wavs under folder/wav and folder/manifest.csv (path,label,speaker,session)."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found on PATH (Debian: apt-get install -y "
                             "espeak-ng sox)")
    rng = np.random.default_rng(seed)
    spks = speakers(n_voices, rng)
    noise = {s: float(rng.uniform(0.002, 0.01)) for s in sorted({x.session for x in spks})}
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    jobs_list = []
    for spk in spks:
        for label in CLASSES:
            for k in range(per_class):
                text = SENTENCES[int(rng.integers(len(SENTENCES)))]
                path = folder / "wav" / f"{spk.name}_{label}_{k:03d}.wav"
                jobs_list.append((text, spk, utterance_params(label, spk, rng),
                                  noise[spk.session], int(rng.integers(2**31)), path, label))
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # subprocess-bound
        seconds = list(pool.map(lambda j: synthesize(*j[:6]), jobs_list))
    manifest = folder / "manifest.csv"
    pd.DataFrame([{"path": os.path.relpath(j[5], folder), "label": j[6], "speaker": j[1].name,
                   "session": j[1].session} for j in jobs_list]).to_csv(manifest, index=False)
    info = {"utterances": len(jobs_list), "speakers": len(spks), "sessions": len(noise),
            "hours": round(sum(seconds) / 3600, 3),
            "mean_seconds": round(float(np.mean(seconds)), 2),
            "build_seconds": round(time.perf_counter() - start, 1)}
    return manifest, info


# -- the comparison -----------------------------------------------------------------------------
def sweep_data_train(overrides: list[str], manifest: Path, cache_dir: Path
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The data/train sections the sweep runs with (transformer.yaml + the bench's --set)."""
    space = yaml.safe_load(SPACE.read_text())
    data = with_defaults(space.get("data", {}), DATA_DEFAULTS)
    train = TrainSection.of(space.get("train")).as_dict()
    data.update(corpus="manifest", root=str(manifest), use_folds=None, cache_dir=str(cache_dir))
    for item in overrides:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        if section in ("data", "train"):
            (data if section == "data" else train)[name] = yaml.safe_load(value)
    return data, train


def run_sweep(manifest: Path, results: Path, cache_dir: Path, trials: int, epochs: int,
              overrides: list[str], log: Path) -> tuple[int, float]:
    """`sweep.py search_spaces/transformer.yaml` on the manifest, every fold; (exit code, s)."""
    cmd = [sys.executable, str(REPO / "sweep.py"), str(SPACE), "--results", str(results),
           "--trials", str(trials), "--epochs", str(epochs),
           "--set", "data.corpus=manifest", "--set", f"data.root={manifest}",
           "--set", "data.use_folds=null", "--set", f"data.cache_dir={cache_dir}"]
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    start = time.perf_counter()
    with log.open("w") as out:
        out.write(" ".join(cmd) + "\n")
        out.flush()
        code = subprocess.run(cmd, cwd=REPO, env=env, stdout=out,
                              stderr=subprocess.STDOUT).returncode
    return code, time.perf_counter() - start


def best_trial(sweep_dir: Path) -> tuple[pd.Series, pd.DataFrame]:
    """The best-by-validation trial (max objective among completed/pruned trials that are not
    all-collapsed) and its member rows."""
    trials = pd.read_parquet(sweep_dir / "trials")
    members = pd.read_parquet(sweep_dir / "members")
    ok = trials[trials["status"].isin(["completed", "pruned"]) & trials["objective"].notna()]
    if "members_collapsed" in ok and "members" in ok:
        ok = ok[ok["members_collapsed"] < ok["members"]]
    if ok.empty:
        raise RuntimeError(f"{sweep_dir}: no completed trial with an objective; statuses "
                           f"{trials['status'].value_counts().to_dict()}")
    best = ok.loc[ok["objective"].idxmax()]
    rows = members[members["trial_id"] == best["trial_id"]].sort_values("member")
    return best, rows


def paired(sweep: pd.DataFrame, base: pd.DataFrame, metric: str = "test_uar") -> dict[str, Any]:
    """Per member: sweep - baseline; mean, sample std, 95 % t-interval, Wilcoxon p."""
    from scipy import stats

    joined = sweep[["member", "fold", "seed", metric]].merge(
        base[["member", "fold", "seed", metric]], on="member", suffixes=("_sweep", "_baseline"))
    if len(joined) != len(base) or (joined["fold_sweep"] != joined["fold_baseline"]).any() \
            or (joined["seed_sweep"] != joined["seed_baseline"]).any():
        pairs = joined[["member", "fold_sweep", "fold_baseline"]].to_dict("records")
        raise RuntimeError(f"the sweep's members and the baseline's do not pair: {pairs}")
    d = (joined[f"{metric}_sweep"] - joined[f"{metric}_baseline"]).to_numpy()
    n = len(d)
    out: dict[str, Any] = {"n": n, "mean": float(d.mean()), "per_member": d.tolist()}
    if n >= 2:
        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        out.update(std=sd, ci95=(out["mean"] - half, out["mean"] + half))
        out["wilcoxon_p"] = float(stats.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    return out


def _mean_sd(values: pd.Series) -> str:
    v = values.to_numpy(dtype=float)
    return f"{v.mean():.3f} +- {v.std(ddof=1):.3f} (n={v.size})" if v.size > 1 else f"{v[0]:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voices", type=int, default=10, help="speakers (even, 6-16)")
    parser.add_argument("--utterances-per-class", type=int, default=16,
                        help="utterances per speaker and class")
    parser.add_argument("--trials", type=int, default=8, help="sweep trials")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per trial")
    parser.add_argument("--seed", type=int, default=0, help="corpus generation seed")
    parser.add_argument("--jobs", type=int, default=2, help="parallel synthesis processes")
    parser.add_argument("--out", type=Path, default=None,
                        help="work folder (default: a new temporary folder, kept)")
    parser.add_argument("--skip-sweep", action="store_true", help="the baseline only")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="extra sweep override (repeatable)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="real_speech_"))
    out.mkdir(parents=True, exist_ok=True)
    cache_dir, results = out / "cache", out / "results"
    summary: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}

    manifest = out / "corpus" / "manifest.csv"
    if manifest.exists():
        print(f"corpus: reusing {manifest}")
    else:
        manifest, summary["corpus"] = build_corpus(out / "corpus", args.voices,
                                                   args.utterances_per_class, args.seed,
                                                   args.jobs)
        print(f"corpus: {summary['corpus']} -> {manifest}")

    data_cfg, train_cfg = sweep_data_train(args.overrides, manifest, cache_dir)
    start = time.perf_counter()
    base = run_baseline(data_cfg, train_cfg, progress=None)
    summary["baseline_seconds"] = round(time.perf_counter() - start, 1)
    summary["baseline_test_uar"] = base["test_uar"].tolist()
    print(f"\nreference baseline (eGeMAPS functionals + logistic regression), "
          f"{summary['baseline_seconds']} s:")
    print(base[["member", "fold", "seed", "val_uar", "test_uar", "test_acc"]]
          .to_string(index=False, float_format="%.3f"))
    print(f"baseline test UAR {_mean_sd(base['test_uar'])}")

    if not args.skip_sweep:
        code, seconds = run_sweep(manifest, results, cache_dir, args.trials, args.epochs,
                                  args.overrides, out / "sweep.log")
        summary.update(sweep_exit=code, sweep_seconds=round(seconds, 1))
        sweep_dir = results / "transformer"
        print(f"\nsweep: exit {code} after {seconds:.0f} s (log: {out / 'sweep.log'})")
        if not (sweep_dir / "trials").is_dir():
            tail = (out / "sweep.log").read_text().splitlines()[-25:]
            print("sweep wrote no results; last lines of its log:\n" + "\n".join(tail))
            summary["sweep_error"] = tail
        else:
            spec = yaml.safe_load((sweep_dir / "spec.yaml").read_text())
            ran_data = with_defaults(spec.get("data", {}), DATA_DEFAULTS)
            ran_train = TrainSection.of(spec.get("train")).as_dict()
            if (ran_data, ran_train["seeds"]) != (data_cfg, train_cfg["seeds"]):
                # the sweep's own resolved spec wins: same members by construction
                print("the sweep ran with other data/seeds than predicted: baseline recomputed")
                base = run_baseline(ran_data, ran_train)
            best, rows = best_trial(sweep_dir)
            print(f"best-by-validation trial {best['trial_id']} (objective "
                  f"{best['objective']:.3f}, status {best['status']}):")
            print(rows[["member", "fold", "seed", "val_uar", "test_uar", "test_acc"]]
                  .to_string(index=False, float_format="%.3f"))
            diff = paired(rows, base)
            summary.update(best_trial=str(best["trial_id"]), best_objective=best["objective"],
                           sweep_test_uar=rows["test_uar"].tolist(), paired=diff)
            print(f"\nbaseline test UAR {_mean_sd(base['test_uar'])}")
            print(f"sweep    test UAR {_mean_sd(rows['test_uar'])}")
            line = f"paired difference (sweep - baseline) {diff['mean']:+.3f}"
            if "ci95" in diff:
                line += (f", 95% CI [{diff['ci95'][0]:+.3f}, {diff['ci95'][1]:+.3f}], "
                         f"Wilcoxon p {diff['wilcoxon_p']:.3f}")
            print(line + f" over {diff['n']} members")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nsummary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
