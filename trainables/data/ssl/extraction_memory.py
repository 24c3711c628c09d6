"""Memory of the ssl extraction (the encoder at the longest utterance) and the head's input shape,
for the planner and `sweep.py plan`, known before any audio is read.

`extraction_memory` runs the extraction's own forward (extract.hidden_states plus the stacking of
the kept layers) at two batch sizes on fake tensors (no memory, no weights) and counts the live
bytes after every allocation with the trainer's estimator (trainables.memory.LiveBytes); the peak
is linear in the batch: fixed (the weights) + per_utterance x b. The fake CPU kernels take the math
attention path (B x heads x T x T scores), which CUDA's fused kernels do not materialize, so on a
GPU the estimate errs on the safe side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainables.data.base import SAMPLE_RATE
from trainables.data.ssl.extract import CUDA_BATCH_SECONDS, conv_config, frames_of
from trainables.data.ssl.settings import SslSettings, ssl_settings
from trainables.memory.measure import profiled_peak

TRACE_BATCHES = (1, 2)


@dataclass(frozen=True)
class ExtractionMemory:
    fixed_bytes: int  # the encoder's weights (and what does not grow with the batch)
    per_utterance_bytes: int  # activations of one utterance of the traced length
    samples: int  # the traced utterance length
    precision: str

    def peak(self, batch: int) -> int:
        return self.fixed_bytes + self.per_utterance_bytes * int(batch)


_CACHE: dict[tuple, ExtractionMemory] = {}


def _swap_to_fake(model: nn.Module, dtype: torch.dtype) -> None:
    """Every parameter and buffer replaced by an empty (fake, inside the mode) CPU tensor."""
    done: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                if id(p) not in done:
                    done[id(p)] = nn.Parameter(torch.empty(p.shape, dtype=dtype),
                                               requires_grad=False)
                module._parameters[name] = done[id(p)]
        for name, b in list(module._buffers.items()):
            if b is not None:
                if id(b) not in done:
                    done[id(b)] = torch.empty(b.shape, dtype=b.dtype)
                module._buffers[name] = done[id(b)]


def _trace_peak(settings: SslSettings, samples: int, batch: int, dtype: torch.dtype) -> int:
    from torch._subclasses.fake_tensor import FakeTensorMode

    from trainables.data.ssl.encoders import build_architecture
    from trainables.data.ssl.extract import hidden_states
    from trainables.memory import LiveBytes, build_meta

    model = build_meta(lambda: build_architecture(settings))
    layers = list(settings.layers)
    # real (not fake) lengths: the per-utterance conv path reads them on the host
    lengths = torch.full((batch,), samples, dtype=torch.long)
    live = LiveBytes()
    with FakeTensorMode(allow_non_fake_inputs=True), live, torch.no_grad():
        _swap_to_fake(model, dtype)
        waves = torch.empty((batch, samples), dtype=dtype)
        states, _ = hidden_states(model, waves, lengths, settings, max(layers))
        out = torch.stack([states[k] for k in layers], dim=2)  # (B, T, L, D)
        del states, out
    return int(live.peak)


def extraction_memory(settings: SslSettings, samples: int,
                      precision: str = "float16") -> ExtractionMemory:
    """The extraction's peak bytes at `samples` per utterance as fixed + per_utterance x b
    (cached per encoder, layers, length and precision)."""
    key = (settings.model, repr(settings.params), settings.layers, int(samples), precision)
    if key not in _CACHE:
        dtype = torch.float16 if precision == "float16" else torch.float32
        b1, b2 = TRACE_BATCHES
        p1, p2 = (_trace_peak(settings, int(samples), b, dtype) for b in (b1, b2))
        per = max(0, (p2 - p1) // (b2 - b1))
        fixed = p1 - per * b1
        # What the fake kernels cannot show: copies made inside real kernels, each the size of
        # the first conv's output (channels x frames). Group-norm front-ends (run one utterance
        # at a time): one, once. Layer-norm front-ends (batched): two per utterance, torchaudio's
        # LayerNorm copying its transposed view and the next conv its non-contiguous input.
        # With them the estimate is 2-17 % above the measured CPU peak (bench/ssl_features.py).
        channels, kernel, stride = conv_config(settings)[0]
        copy = channels * ((int(samples) - kernel) // stride + 1) * dtype.itemsize
        if settings.group_norm:
            fixed += copy
        else:
            per += 2 * copy
        _CACHE[key] = ExtractionMemory(fixed, per, int(samples), precision)
    return _CACHE[key]


def estimate_extraction_memory(data_cfg: Mapping[str, Any], *, batch: int = 1,
                               precision: str | None = None) -> int:
    """Peak bytes of extracting `batch` utterances of data.max_seconds with data.ssl's encoder.

    precision: float16 (what a GPU runs) | float32 (the CPU); None = float16 when CUDA is
    available here, else float32.
    """
    settings = ssl_settings({"ssl": data_cfg.get("ssl")})  # the encoder only
    if precision is None:
        precision = "float16" if torch.cuda.is_available() else "float32"
    samples = int(round(float(data_cfg.get("max_seconds", 4.0)) * SAMPLE_RATE))
    return extraction_memory(settings, samples, precision).peak(batch)


def ssl_input_shape(data_cfg: Mapping[str, Any]) -> tuple[int, int, int]:
    """(T, L, D) of one ssl_head input at the longest utterance (data.max_seconds), after
    data.downsample: the `input_shape` the trainer's memory estimate takes, before extraction.
    The cache's real T_max (its longest utterance) is at most this."""
    settings = ssl_settings({"ssl": data_cfg.get("ssl")})  # the encoder only
    samples = int(round(float(data_cfg.get("max_seconds", 4.0)) * SAMPLE_RATE))
    frames = frames_of(samples, conv_config(settings))
    steps = max(1, math.ceil(frames / int(data_cfg.get("downsample") or 1)))
    return steps, len(settings.layers), settings.dim


def cache_bytes(data_cfg: Mapping[str, Any], audio_seconds: float) -> int:
    """Bytes of the cache for `audio_seconds` of (cropped) audio: frames x L x D x dtype."""
    settings = ssl_settings({"ssl": data_cfg.get("ssl")})  # the encoder only
    hop = math.prod(s for _, _, s in conv_config(settings))
    frames = audio_seconds * SAMPLE_RATE / hop / int(data_cfg.get("downsample") or 1)
    item = 2 if settings.dtype == "float16" else 4
    return int(frames * len(settings.layers) * settings.dim * item)


def measure_extraction_memory(settings: SslSettings, samples: int, batch: int,
                              device: str = "cpu", model: nn.Module | None = None) -> int:
    """The measured peak bytes of the same forward (random weights) in this process: CUDA's
    max_memory_allocated (float16, as the extraction runs there) or, on the CPU (float32), the
    weights + input plus the c10 allocator's peak from the torch profiler's memory events (the
    rule of trainables/memory/measure.py). `model` (CUDA: already float16 on the device) is
    measured instead of a fresh one, and its weights are then not counted."""
    from trainables.data.ssl.encoders import build_architecture
    from trainables.data.ssl.extract import hidden_states

    dev = torch.device(device)
    layers = list(settings.layers)
    lengths = torch.full((batch,), int(samples), dtype=torch.long)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        if model is None:
            model = build_architecture(settings).to(dev).half()
        waves = torch.randn((batch, int(samples)), device=dev).half()
        with torch.inference_mode():
            states, _ = hidden_states(model, waves, lengths.to(dev), settings, max(layers))
            out = torch.stack([states[k] for k in layers], dim=2)
            del states, out
        torch.cuda.synchronize(dev)
        return int(torch.cuda.max_memory_allocated(dev) - before)
    from torch.profiler import ProfilerActivity, profile

    model = build_architecture(settings) if model is None else model
    waves = torch.randn((batch, int(samples)))
    tensors = [*model.parameters(), *model.buffers(), waves]
    base = sum({t.untyped_storage()._cdata: t.untyped_storage().nbytes()
                for t in tensors}.values())
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with torch.inference_mode():
            states, _ = hidden_states(model, waves, lengths, settings, max(layers))
            out = torch.stack([states[k] for k in layers], dim=2)
            del states, out
    return int(base + profiled_peak(prof))


def auto_cuda_seconds(settings: SslSettings, longest: int, device: torch.device,
                      runner: nn.Module) -> float:
    """Padded seconds per GPU batch: what fits 80 % of the free memory by the peak MEASURED on
    this GPU with `runner` at 1 and 2 of the longest utterances (two forwards), at most
    CUDA_BATCH_SECONDS; a batch that still runs out of memory is halved and redone."""
    p1, p2 = (measure_extraction_memory(settings, longest, b, str(device), model=runner)
              for b in (1, 2))
    per = max(1, p2 - p1)
    fixed = max(0, p1 - per)
    free, _ = torch.cuda.mem_get_info(device)
    count = max(1, int((0.8 * free - fixed) // per))
    return float(min(CUDA_BATCH_SECONDS, max(1, count) * longest / SAMPLE_RATE))
