"""Self-supervised front-ends (data.features: ssl): extraction throughput, cache size, and the
per-trial data load against the trial's training time, measured on this machine.

    python bench/ssl_features.py               # base model, 40 synthetic utterances (CPU: minutes)
    python bench/ssl_features.py --model wav2vec2_base --utterances 100 --max-seconds 6
    python bench/ssl_features.py --arch small  # the preset search_spaces/ssl_head.yaml runs

1. Extraction: prepare_data(features: ssl) on the synthetic corpus with a random-init encoder
   (same architecture and cost as the pretrained one) into a fresh cache: audio seconds per wall
   second, the whole pipeline (crop, batching by length, every hidden state, fp16 cache writes).
2. Cache size: bytes per utterance and per audio second, measured from the file; the projection
   for IEMOCAP (5,531 utterances, ~7 h): frames (50/s) x hidden states x dims x 2 bytes.
3. Per-trial load vs trial time on a cache of the default synthetic corpus (800 utterances, 4 s
   max) at the base model's size (13 x 768), filled with random values (the layout and sizes of
   a real extraction; extracting it for real takes ~15 min on 2 cores): the time a trial spends
   to receive the data (the pickled PreparedData through the object store, the memory map) and to
   gather one epoch of batches, against the time of training ssl_head for 2 epochs on one member.
4. Extraction memory: the fake-tensor estimate (trainables/data/ssl/extraction_memory.py) against
the peak
   measured for real (CPU: c10 allocator via the profiler, float32; CUDA: max_memory_allocated,
   float16), and the estimates for full-size base and large encoders at 20 s.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainables.data import prepare_data  # noqa: E402
from trainables.data.ssl import ssl_settings  # noqa: E402
from trainables.data.ssl.extract import plan_rows  # noqa: E402
from trainables.data.ssl.feature import describe_cache  # noqa: E402
from trainables.data.ssl.store import write_cache  # noqa: E402
from trainables.train import LockstepTrainer  # noqa: E402

IEMOCAP_UTTERANCES, IEMOCAP_HOURS, FRAME_RATE = 5531, 7.0, 50.0


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def extraction(args: argparse.Namespace, cache_dir: Path) -> dict:
    data_cfg = {"corpus": "synthetic", "synthetic_utterances": args.utterances,
                "max_seconds": args.max_seconds, "features": "ssl", "normalize": "none",
                "cache_dir": str(cache_dir),
                "ssl": {"model": args.model, "checkpoint": "random", "arch": args.arch,
                        "device": args.device}}
    prepare_data({**data_cfg, "features": "logmel"})  # the corpus generated outside the timing
    start = time.perf_counter()
    data = prepare_data(data_cfg, progress=lambda m: print(f"  {m}", file=sys.stderr))
    wall = time.perf_counter() - start
    info = describe_cache(data.features)
    audio = float(info["audio_seconds"])
    print(f"1. extraction, {args.model}{' arch ' + args.arch if args.arch else ''} "
          f"(random init), {len(data)} utterances, {audio:.0f} s of audio, on "
          f"{info['device']} ({torch.get_num_threads()} torch threads, {info['precision']}):")
    print(f"   encoder {info['extract_seconds']:.1f} s = {info['audio_seconds_per_second']:.2f} "
          f"audio-s/s; prepare_data total {wall:.1f} s = {audio / wall:.2f} audio-s/s")
    per_utt = info["bytes"] / len(data)
    per_sec = info["bytes"] / audio
    print(f"2. cache: {info['bytes'] / 2**20:.1f} MiB for {len(data)} utterances = "
          f"{per_utt / 2**20:.2f} MiB/utterance, {per_sec / 2**20:.3f} MiB per audio second "
          f"({len(info['layers'])} hidden states x {info['dim']} x {info['dtype']})")
    return {"data": data, "info": info, "per_sec": per_sec}


def projection() -> None:
    seconds = IEMOCAP_HOURS * 3600
    print(f"   IEMOCAP projection ({IEMOCAP_UTTERANCES} utterances, {IEMOCAP_HOURS:g} h, "
          f"uncropped, {FRAME_RATE:g} frames/s, float16):")
    for name, layers, dim in (("base, all 13", 13, 768), ("base, 1 layer", 1, 768),
                              ("large, all 25", 25, 1024)):
        total = seconds * FRAME_RATE * layers * dim * 2
        print(f"     {name:14s}: {gib(total)} = {total / IEMOCAP_UTTERANCES / 2**20:.2f} "
              f"MiB/utterance")


def fake_base_cache(root: Path, utterances: int, max_seconds: float):
    """A cache with the layout and sizes wavlm_base would write for the synthetic corpus."""
    logmel = prepare_data({"corpus": "synthetic", "synthetic_utterances": utterances,
                           "max_seconds": max_seconds, "cache_dir": str(root),
                           "features": "raw", "normalize": "none"})
    waves = [logmel.features[i, : int(logmel.lengths[i])].numpy() for i in range(len(logmel))]
    settings = ssl_settings({"ssl": {"model": "wavlm_base", "checkpoint": "random"}})
    plan = plan_rows(waves, int(max_seconds * 16000), settings, 1)
    g = np.random.default_rng(0)

    def fill(rows: np.ndarray) -> dict:
        for start in range(0, len(rows), 4096):
            part = rows[start: start + 4096]
            part[...] = g.standard_normal(part.shape, dtype=np.float32).astype(np.float16)
        return {}

    meta = {"model": "wavlm_base", "layers": list(settings.layers), "dim": settings.dim,
            "dtype": "float16", "frame_rate": 50.0}
    handle = write_cache(root / "ssl" / "bench_base", plan.total_frames, len(settings.layers),
                         settings.dim, "float16", fill, meta, plan.offsets, plan.out_frames)
    logmel.features, logmel.lengths = handle, torch.from_numpy(plan.out_frames.copy())
    logmel.feature_kind, logmel.frame_rate = "ssl", 50.0
    return logmel


def load_vs_trial(root: Path, args: argparse.Namespace) -> None:
    data = fake_base_cache(root, args.load_utterances, 4.0)
    size = data.features.nbytes
    t0 = time.perf_counter()
    blob = pickle.dumps(data)  # what tune.with_parameters puts into the object store
    shipped = pickle.loads(blob)
    t1 = time.perf_counter()
    fold = shipped.folds[0]
    gen = torch.Generator().manual_seed(0)
    gathers = []
    # epoch 1 maps the file's pages in, epoch 2 reads them from RAM; epoch 3 gathers without the
    # float32 conversion (on a GPU, batching.Inputs converts after the copy to the device)
    for epoch in range(3):
        order = torch.as_tensor(fold.train)[torch.randperm(len(fold.train), generator=gen)]
        start = time.perf_counter()
        for split in (order, fold.val, fold.test):
            for idx in torch.as_tensor(split).split(32):
                x = shipped.features[idx]
                if epoch < 2:
                    x.float()  # what batching.Inputs does on the CPU
        gathers.append(time.perf_counter() - start)
    print(f"3. per-trial data (cache of {len(data)} utterances at 13 x 768 float16, "
          f"{gib(size)}): PreparedData pickled = {len(blob) / 1024:.1f} KiB, unpickled and "
          f"mapped in {1000 * (t1 - t0):.1f} ms; one epoch of batches (train {len(fold.train)}, "
          f"val {len(fold.val)}, test {len(fold.test)}, batch 32, gathered + .float()) in "
          f"{gathers[0]:.2f} s (first), {gathers[1]:.2f} s (second); without .float() "
          f"{gathers[2]:.2f} s")
    gather = gathers[1]
    # the rest of the train section: its defaults, filled in by the trainer's TrialConfig
    train = {"epochs": 2, "batch_size": 32, "amp": "off", "device": "cpu", "seeds": [0]}
    config = {"data": {}, "model": {"name": "ssl_head"}, "train": train,
              "runtime": {"metric": "val_uar", "mode": "max"}}
    shipped.folds = shipped.folds[:1]
    start = time.perf_counter()
    trainer = LockstepTrainer(config, shipped, torch.device("cpu"))
    while not trainer.finished:
        trainer.run_epoch()
    trial = time.perf_counter() - start
    print(f"   ssl_head (defaults: weighted layers, proj 256, mean, head [256]), 1 member, "
          f"2 epochs: {trial:.1f} s; the data load is {100 * (t1 - t0) / trial:.2f} % of it, "
          f"gathering (second-epoch rate) {100 * 2 * gather / trial:.0f} % (2 epochs)")


def memory(args: argparse.Namespace) -> None:
    """The extraction-memory estimate (fake tensors) against the measured peak."""
    from trainables.data.ssl.extraction_memory import extraction_memory, measure_extraction_memory

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = "float16" if device == "cuda" else "float32"
    print(f"4. extraction memory, estimate vs measured ({device}, {precision}, 4 s utterances):")
    for model, arch in (("wavlm_base", None), ("hubert_large", "small"),
                        ("wav2vec2_large_lv60k", None)):
        settings = ssl_settings({"ssl": {"model": model, "checkpoint": "random", "arch": arch}})
        line = extraction_memory(settings, 64000, precision)
        for b in (1, 2):
            real = measure_extraction_memory(settings, 64000, b, device)
            print(f"   {model:22s} {str(arch or 'full'):5s} batch {b}: estimate "
                  f"{line.peak(b) / 2**20:8.1f} MiB, measured {real / 2**20:8.1f} MiB "
                  f"({100 * (line.peak(b) - real) / real:+.1f} %)")
    print("   estimates for a GPU (float16), 20 s utterances:")
    for model in ("wavlm_base_plus", "wavlm_large"):
        line = extraction_memory(ssl_settings({"ssl": {"model": model}}), 320000, "float16")
        print(f"   {model:16s}: weights+fixed {gib(line.fixed_bytes)}, "
              f"{line.per_utterance_bytes / 2**20:.0f} MiB per utterance")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="wavlm_base")
    parser.add_argument("--arch", default=None, help="tiny | small (default: the real size)")
    parser.add_argument("--utterances", type=int, default=40)
    parser.add_argument("--max-seconds", type=float, default=6.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--load-utterances", type=int, default=800)
    parser.add_argument("--skip-extract", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the "
          f"start (other processes share these cores: rates below scale with it)")
    with tempfile.TemporaryDirectory(prefix="bench_ssl_") as tmp:
        if not args.skip_extract:
            extraction(args, Path(tmp) / "extract")
        projection()
        if not args.skip_load:
            load_vs_trial(Path(tmp) / "load", args)
        if not args.skip_memory:
            memory(args)


if __name__ == "__main__":
    main()
