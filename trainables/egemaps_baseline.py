"""The reference baseline of a sweep: openSMILE eGeMAPS functionals + a standardized logistic
regression, trained and scored on the sweep's OWN members (fold x seed).

Every utterance becomes the 88 eGeMAPSv02 functionals of its whole waveform (not cropped to
`data.max_seconds`: the standard eGeMAPS protocol, and the reference then does not depend on the
sweep's front-end, so sweeps of one corpus with other features share it). Per fold, a
`SimpleImputer -> StandardScaler -> LogisticRegression(class_weight="balanced")` pipeline is fit
on the fold's training split (the scaler sees the training split only: the reference classifier
of trainables/data/reference.py) and scored on its validation and test splits with
trainables.metrics. The members are `config.member_pairs`, the trainer's own enumeration, so
row `member` i pairs with member i of every trial.

L-BFGS on the convex logistic loss has no randomness, so every seed of a fold gets the same row:
the pairing stays member by member and the seeds add no spurious spread.

Cached under `<data.cache_dir>/baseline/`: the functionals keyed by the corpus part of the data
config (trainables/data/cache.py's key without the front-end keys), the per-member result keyed
by the functionals key plus the folds' exact index arrays, labels, seeds and the classifier
settings, so a changed fold protocol can never return a stale result.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from trainables.config import DATA_DEFAULTS, member_pairs, with_defaults
from trainables.data import cache, reference
from trainables.data.base import SAMPLE_RATE, Fold, PreparedData
from trainables.data.corpora import get_corpus
from trainables.data.folds import test_set_id
from trainables.errors import ConfigError, DataError
from trainables.metrics import CONFUSION, compute_metrics
from trainables.names import SCALAR_METRICS, split_metric
from trainables.stats import as_python
from trainables.trial_config import TrainSection

Progress = Callable[[str], None]

BASELINE_NAME = "egemaps88_logreg"
BASELINE_VERSION = 1  # bump when the functionals or the classifier change: old caches unread
N_FUNCTIONALS = 88
# Data keys that change only the sweep's front-end, never the utterances, labels or speakers.
# A key missing here only costs a recomputation (the key stays conservative), never a wrong reuse.
FRONT_END_KEYS = ("features", "n_mels", "n_mfcc", "compare_deltas", "downsample", "max_seconds",
                  "normalize", "ssl")



# -- eGeMAPS functionals ------------------------------------------------------------------------
def corpus_config(data_cfg: dict[str, Any]) -> dict[str, Any]:
    """The data config without the front-end keys: what decides the audio, labels and speakers."""
    return {k: v for k, v in data_cfg.items() if k not in FRONT_END_KEYS}


def _fingerprint(cfg: dict[str, Any]) -> str:
    # As prepare_data: corpora on disk add their fingerprint (mtime/size) to the key.
    if cfg.get("root") or cfg["corpus"] == "multi":
        return get_corpus(cfg["corpus"]).fingerprint(cfg)
    return ""


def functionals_key(data_cfg: dict[str, Any]) -> str:
    """Cache key of a corpus' eGeMAPS functionals (data/cache.py's key of corpus_config)."""
    cfg = with_defaults(data_cfg, DATA_DEFAULTS)
    return cache.cache_key({**corpus_config(cfg), "baseline_version": BASELINE_VERSION},
                           _fingerprint(cfg))


def _cache_folder(cfg: dict[str, Any]) -> Path | None:
    return Path(cfg["cache_dir"]).expanduser() / "baseline" if cfg["cache_dir"] else None


_SMILE: list[Any] = []  # per process: the functionals' openSMILE instance, built once
# The stop of this thread's background extraction, None in the foreground (parallel.parallel_map:
# background workers run below the trials): `in_background(stop)` sets it for the calls of one
# thread (a ContextVar: a new thread starts with the default, None).
_BACKGROUND: ContextVar[threading.Event | None] = ContextVar("egemaps_background", default=None)
PART = 16  # utterances per task of the process pool


@contextmanager
def in_background(stop: threading.Event | None = None) -> Iterator[None]:
    """Within this block, this thread's baseline extraction runs in the background, below the
    trials (the sweep computes it beside its first trials: orchestrator/baseline_run.py); once
    `stop` is set, it ends with CancelledError within one PART of utterances per worker."""
    token = _BACKGROUND.set(stop if stop is not None else threading.Event())
    try:
        yield
    finally:
        _BACKGROUND.reset(token)


def _functionals_part(waves: list[np.ndarray]) -> np.ndarray:
    """(len(waves), 88) functionals, one openSMILE call per whole waveform."""
    if not _SMILE:
        import opensmile

        _SMILE.append(opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02,
                                      opensmile.FeatureLevel.Functionals))
    out = np.full((len(waves), N_FUNCTIONALS), np.nan)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Segment too short")  # NaNs, handled below
        for i, wave in enumerate(waves):
            out[i] = _SMILE[0].process_signal(np.asarray(wave, dtype=np.float32),
                                              SAMPLE_RATE).to_numpy(np.float64)[0]
    return out


def compute_functionals(waves: list[np.ndarray], progress: Progress | None = None,
                        workers: int | None = None) -> np.ndarray:
    """(N, 88) float64 eGeMAPSv02 functionals of each whole waveform (NaN where openSMILE found
    a segment too short; the pipeline imputes those with the training mean). Computed by
    `workers` processes (default one per core: trainables/data/parallel.py), identical to one:
    each utterance is processed on its own."""
    from trainables.data.parallel import parallel_map, split

    parts = split(waves, PART)
    step = max(1, 200 // PART)

    def done(k: int) -> None:
        if progress and k % step == 0 and k < len(parts):
            progress(f"baseline: eGeMAPS functionals {k * PART}/{len(waves)} utterances")

    stop = _BACKGROUND.get()  # None: in the foreground
    out = parallel_map(_functionals_part, [list(p) for p in parts], workers=workers,
                       background=stop is not None, done=done, stop=stop)
    return np.concatenate(out) if out else np.full((0, N_FUNCTIONALS), np.nan)


def egemaps_functionals(data_cfg: dict[str, Any], progress: Progress | None = None
                        ) -> tuple[list[str], np.ndarray, str]:
    """(utterance ids, (N, 88) functionals, "hit" | "miss") of the corpus of `data_cfg`, from
    the cache when there (a cache hit reads no audio)."""
    cfg = with_defaults(data_cfg, DATA_DEFAULTS)
    folder = _cache_folder(cfg)
    path = folder / f"egemaps_functionals_{functionals_key(cfg)}.pt" if folder else None
    stored = cache.load(path) if path is not None else None
    if stored is not None:
        return list(stored["ids"]), stored["features"].numpy(), "hit"
    content = get_corpus(cfg["corpus"]).load(cfg, progress)
    if progress:
        progress(f"baseline: eGeMAPS functionals of {len(content.utterances)} utterances")
    ids = [u.id for u in content.utterances]
    x = compute_functionals([u.waveform for u in content.utterances], progress)
    if path is not None:
        cache.save_atomic({"features": torch.from_numpy(x), "ids": ids}, path)
    return ids, x, "miss"


def align(ids: list[str], x: np.ndarray, wanted: list[str]) -> np.ndarray:
    """Rows of `x` (one per `ids`) in the order of `wanted` (PreparedData.ids)."""
    if ids == wanted:
        return x
    row_of = {u: i for i, u in enumerate(ids)}
    missing = [u for u in wanted if u not in row_of]
    if missing or len(row_of) != len(ids):
        raise DataError(f"baseline functionals ({len(ids)} utterances)",
                        f"do not match the prepared data ({len(wanted)} utterances; "
                        f"missing e.g. {missing[:3]}); delete <cache_dir>/baseline to rebuild")
    return x[[row_of[u] for u in wanted]]


# -- the classifier ------------------------------------------------------------------------------
def fit_fold(x: np.ndarray, labels: np.ndarray, fold: Fold, n_classes: int) -> dict[str, Any]:
    """Fit the reference classifier on fold.train; val_*/test_* metrics, confusions, sizes and
    convergence of one fold."""
    start = time.perf_counter()
    if len(fold.train) == 0 or len(set(labels[fold.train].tolist())) < 2:
        raise DataError(f"fold {fold.name}", "the baseline needs >= 2 classes in the training "
                                             "split")
    model, converged = reference.fit(x, labels, fold.train)
    row: dict[str, Any] = {}
    for split, idx in (("val", fold.val), ("test", fold.test)):
        pred = model.predict(x[idx]) if len(idx) else np.zeros(0, dtype=np.int64)
        metrics = compute_metrics(labels[idx], pred, n_classes)
        row.update({split_metric(split, m): float(metrics[m]) for m in SCALAR_METRICS})
        row[split_metric(split, CONFUSION)] = metrics[CONFUSION]
    row.update(n_train=len(fold.train), n_val=len(fold.val), n_test=len(fold.test),
               converged=converged, fit_seconds=time.perf_counter() - start)
    return row


def _result_key(f_key: str, data: PreparedData, seeds: list[int]) -> str:
    """Functionals key + the exact folds, labels, seeds and classifier: never stale."""
    h = hashlib.sha256(json.dumps([f_key, BASELINE_VERSION, reference.C, reference.MAX_ITER, seeds,
                                   data.classes, "test_set_id"],
                                  default=str).encode())
    h.update(data.labels.numpy().astype(np.int64).tobytes())
    for fold in data.folds:
        h.update(fold.name.encode())
        for part in (fold.train, fold.val, fold.test):
            h.update(np.asarray(part, dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()[:20]


def run_baseline(data_cfg: dict[str, Any], train_cfg: dict[str, Any] | None = None,
                 data: PreparedData | None = None, progress: Progress | None = None
                 ) -> pd.DataFrame:
    """The reference baseline on the sweep's members: one row per member (the columns of
    orchestrator/store/schema.py: BASELINE_FIELDS; the store writes them, store/baseline_table).

    `data_cfg`/`train_cfg`: the sweep's `data` and `train` sections (defaults filled in here);
    `data`: the sweep's PreparedData when the caller has it (else prepare_data(data_cfg) builds
    it, or reads it from the cache). `frame.attrs["cache"]` says "hit" when the result came from
    the cache, `frame.attrs["functionals_cache"]` the same for the functionals.
    """
    from trainables.data import prepare_data

    cfg = with_defaults(data_cfg, DATA_DEFAULTS)
    train = TrainSection.of(train_cfg)  # the sweep's train section, defaults filled, checked
    if not train.seeds:
        raise ConfigError("train.seeds", "the baseline needs at least one seed (members = "
                                         "folds x seeds)")
    if data is None:
        data = prepare_data(cfg, progress)
    f_key = functionals_key(cfg)
    folder = _cache_folder(cfg)
    seeds = [int(s) for s in train.seeds]
    result_path = folder / f"result_{_result_key(f_key, data, seeds)}.parquet" if folder else None
    if result_path is not None and result_path.exists():
        try:
            frame = _read_cached(result_path)
        except (OSError, pa.ArrowException):  # unreadable: rebuilt below
            frame = None
        if frame is not None:
            frame.attrs.update(cache="hit", functionals_cache="hit")
            return frame
    ids, x, f_status = egemaps_functionals(cfg, progress)
    x = align(ids, x, data.ids)
    labels = data.labels.numpy().astype(np.int64)
    per_fold = {f.name: fit_fold(x, labels, f, data.n_classes) for f in data.folds}
    rows = [{"member": i, "fold": fold.name, "seed": seed, **per_fold[fold.name],
             "test_set_id": test_set_id(data.ids, fold.test),
             "classes": list(data.classes), "baseline": BASELINE_NAME}
            for i, (fold, seed) in enumerate(member_pairs(data.folds, {"seeds": seeds}))]
    frame = pd.DataFrame(rows)
    if result_path is not None:
        cache._write_atomic(result_path, lambda out: frame.to_parquet(out, compression="zstd"))
    if progress:
        progress(f"baseline: test UAR {frame['test_uar'].mean():.3f} over {len(frame)} members")
    frame.attrs.update(cache="miss", functionals_cache=f_status)
    return frame


def _read_cached(path: Path) -> pd.DataFrame:
    """A cached result (this module's own cache, not the results folder), list columns as
    Python lists."""
    frame = pq.read_table(path).to_pandas()
    for col in ("val_confusion", "test_confusion", "classes"):
        frame[col] = [as_python(v) for v in frame[col]]
    return frame
