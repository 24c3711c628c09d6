"""Parameter count and training time of every model family at its DEFAULT size, on this machine.

One training step = forward + backward + AdamW step on a batch of 4 s utterances (16 kHz raw
audio, or 400 x 64 log-mel frames), timed after one warm-up step. The epoch time is the step time
times the batches of one synthetic-corpus member (480 training utterances: 800 utterances,
leave-one-session-out, minus validation speakers), at logical batch 32.

    python bench/families.py [--batch 8] [--steps 2] [--only transformer,cnn_lstm]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from trainables.models import MODELS, build_model

TRAIN_UTTERANCES = 480
INPUTS = {"raw": (64_000,), "frames": (400, 64)}
VARIANTS = {  # family -> (input, extra constructor args)
    "cnn_lstm": ("raw", {}),
    "sincnet": ("raw", {"framing": "per_frame"}),
    "sincnet (shared)": ("raw", {"framing": "shared"}),
    "transformer": ("frames", {}),
    "resnet_lstm": ("frames", {}),
    "vggish_lstm": ("frames", {}),
}


def step_seconds(name: str, batch: int, steps: int) -> tuple[int, float]:
    kind, extra = VARIANTS[name]
    family = name.split(" ")[0]
    shape = INPUTS[kind]
    n_features = 1 if kind == "raw" else shape[-1]
    model = build_model({"name": family, **extra}, n_features=n_features, n_classes=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, *shape)
    lengths = torch.full((batch,), shape[0], dtype=torch.long)
    y = torch.arange(batch) % 4
    times = []
    for _ in range(steps + 1):  # the first step warms up allocators and kernels
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x, lengths), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    return params, min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--only", default=None, help="comma-separated variants")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(VARIANTS)
    assert set(n.split(" ")[0] for n in VARIANTS) == set(MODELS), "a family is missing here"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print(f"{'family':<18} {'input':<10} {'params':>10} {'s/step':>8} {'epoch s (est.)':>15}")
    for name in names:
        params, seconds = step_seconds(name, args.batch, args.steps)
        per_sample = seconds / args.batch
        epoch = per_sample * 32 * math.ceil(TRAIN_UTTERANCES / 32)
        kind = VARIANTS[name][0]
        print(f"{name:<18} {kind:<10} {params:>10,} {seconds:>8.2f} {epoch:>15.0f}")


if __name__ == "__main__":
    main()
