"""Running the frozen encoder over a corpus: every hidden state kept, batched by length.

Exactness: an utterance's features do not depend on its batch-mates. The transformer is run on a
zero-padded batch with its padding masked (the positional convolution then sees the zeros its own
padding would add), which is exact; a group-norm conv front-end (every base model) normalizes over
time, so a padded batch would change it: there the conv front-end runs per utterance and only the
transformer is batched. torchaudio's WavLM refuses an attention mask in batches
(pytorch/audio#3700), so its layers get the key-padding mask they support instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.signal import resample_poly
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from trainables.data.base import SAMPLE_RATE
from trainables.data.ssl.settings import SslSettings
from trainables.memory.oom import is_oom

CPU_BATCH_SECONDS = 16.0  # padded audio per batch on the CPU (larger batches gain little there)
CUDA_BATCH_SECONDS = 240.0  # the most on a GPU (auto picks less when memory says so)
PROGRESS_SECONDS = 15.0  # at most one progress line this often (and at every 10 %)
FLOAT16_MAX = 65504.0
WAVE_EPS = 1e-5  # F.layer_norm's eps: the waveform normalization of the large bundles
# (settings, longest samples, device, encoder) -> padded seconds per GPU batch
CudaSeconds = Callable[[SslSettings, int, torch.device, nn.Module], float]


def conv_config(settings: SslSettings) -> list[tuple[int, int, int]]:
    conv = settings.params.get("extractor_conv_layer_config")
    return [tuple(c) for c in conv] if conv else [(512, 10, 5)] + [(512, 3, 2)] * 4 + [
        (512, 2, 2)] * 2


def frames_of(n_samples: int, conv: Sequence[tuple[int, int, int]]) -> int:
    """Output frames of the conv front-end for n samples (torchaudio's ConvLayerBlock rule)."""
    n = n_samples
    for _, kernel, stride in conv:
        n = max(0, (n - kernel) // stride + 1)
    return n


def min_samples(conv: Sequence[tuple[int, int, int]]) -> int:
    """The shortest input that gives one frame (400 samples = 25 ms for the real models)."""
    n = 1
    for _, kernel, stride in reversed(conv):
        n = (n - 1) * stride + kernel
    return n


def _normalize_waves(waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's valid part to zero mean / unit variance (layer norm), padding stays 0."""
    mask = (torch.arange(waves.shape[1], device=waves.device)[None, :] < lengths[:, None])
    mask = mask.to(waves.dtype)
    count = lengths[:, None].to(waves.dtype)
    mean = (waves * mask).sum(1, keepdim=True) / count
    var = (((waves - mean) * mask) ** 2).sum(1, keepdim=True) / count
    return (waves - mean) / torch.sqrt(var + WAVE_EPS) * mask


def hidden_states(model: nn.Module, waves: torch.Tensor, lengths: torch.Tensor,
                  settings: SslSettings, upto: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Hidden states 0..upto of a zero-padded batch (see the module docstring).

    waves (B, S), lengths (B,) valid samples -> [upto + 1 x (B, T, D)], frame lengths (B,).
    State 0 is the transformer's input (after the positional convolution), i its layer i.
    """
    if settings.normalize_waveform:  # in fp32: fp16 sums over 10^5 samples would overflow
        waves = _normalize_waves(waves.float(), lengths).to(waves.dtype)
    extractor = model.feature_extractor
    if settings.group_norm:
        per_utt = [extractor(waves[i: i + 1, : int(n)], None)[0][0]  # (T_i, C)
                   for i, n in enumerate(lengths.tolist())]
        frame_lengths = torch.tensor([f.shape[0] for f in per_utt], device=waves.device)
        feats = pad_sequence(per_utt, batch_first=True)  # (B, T, C)
    else:
        feats, frame_lengths = extractor(waves, lengths)  # (B, T, C), (B,)
    x, mask = model.encoder._preprocess(feats, frame_lengths)  # (B, T, D), padding zeroed
    transformer = model.encoder.transformer
    x = transformer._preprocess(x)  # + positional convolution (and layer norm for base models)
    states = [x]
    padding = torch.arange(x.shape[1], device=x.device)[None, :] >= frame_lengths[:, None]
    # additive float mask (B, T): WavLM adds it to its float position bias (a bool one warns)
    padding = torch.zeros(padding.shape, dtype=x.dtype, device=x.device).masked_fill(
        padding, float("-inf"))
    wavlm = settings.model_type == "WavLM"
    position_bias = None
    for layer in transformer.layers[:upto]:
        if wavlm:  # (B, T) key padding mask; WavLM's attention takes no attention mask
            x, position_bias = layer(x, None, position_bias=position_bias,
                                     key_padding_mask=padding)
        else:
            x, position_bias = layer(x, mask, position_bias=position_bias)
        states.append(x)  # (B, T, D)
    return states, frame_lengths


@dataclass
class Plan:
    """Where each utterance's frames go in the cache: rows[offsets[i]:offsets[i+1]]."""

    samples: np.ndarray  # (N,) input samples after crop (and the pad to the shortest input)
    frames: np.ndarray  # (N,) encoder frames
    out_frames: np.ndarray  # (N,) frames kept after data.downsample
    offsets: np.ndarray  # (N + 1,)

    @property
    def total_frames(self) -> int:
        return int(self.offsets[-1])


def plan_rows(waves: Sequence[np.ndarray], max_samples: int, settings: SslSettings,
              downsample: int) -> Plan:
    conv = conv_config(settings)
    shortest = min_samples(conv)
    samples = np.array([max(min(len(w), max_samples), shortest) for w in waves], dtype=np.int64)
    frames = np.array([frames_of(int(n), conv) for n in samples], dtype=np.int64)
    out = np.maximum(1, -(-frames // downsample))  # resample_poly keeps ceil(n / k)
    offsets = np.concatenate([[0], np.cumsum(out)]).astype(np.int64)
    return Plan(samples, frames, out, offsets)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from trainables.errors import ConfigError

        raise ConfigError("data.ssl.device", "cuda requested but no CUDA GPU is visible")
    return torch.device(name)


def batches_by_length(samples: np.ndarray, budget_samples: int) -> list[np.ndarray]:
    """Row indices, longest first, grouped so that rows x longest row <= budget (>= 1 row)."""
    order = np.argsort(-samples, kind="stable")
    out, start = [], 0
    while start < len(order):
        longest = int(samples[order[start]])
        count = max(1, budget_samples // max(1, longest))
        out.append(order[start: start + count])
        start += count
    return out


class Progress:
    """One line per 10 % of the audio or per PROGRESS_SECONDS, to `emit` (or stderr)."""

    def __init__(self, what: str, total_seconds: float, n: int,
                 emit: Callable[[str], None] | None) -> None:
        self.what, self.total, self.n = what, total_seconds, n
        self.emit = emit or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.start = self.last = time.perf_counter()
        self.done_seconds, self.done, self.next_tenth = 0.0, 0, 1

    def update(self, utterances: int, seconds: float) -> None:
        self.done += utterances
        self.done_seconds += seconds
        now = time.perf_counter()
        tenth = self.done_seconds >= self.next_tenth * self.total / 10
        if not (tenth or now - self.last >= PROGRESS_SECONDS or self.done == self.n):
            return
        while self.done_seconds >= self.next_tenth * self.total / 10 and self.next_tenth <= 10:
            self.next_tenth += 1
        self.last = now
        rate = self.done_seconds / max(now - self.start, 1e-9)
        eta = (self.total - self.done_seconds) / max(rate, 1e-9)
        self.emit(f"{self.what}: {self.done}/{self.n} utterances, {self.done_seconds:.0f}/"
                  f"{self.total:.0f} s of audio, {rate:.1f} audio-s/s, ETA {eta:.0f} s")


def _postprocess(x: np.ndarray, downsample: int, normalize: str) -> np.ndarray:
    """(T, L, D) float32 of one utterance -> downsampled (valid part only), then normalized."""
    if downsample > 1:
        x = resample_poly(x, 1, downsample, axis=0).astype(np.float32)
    if normalize == "utterance":  # per hidden state and dim, over the utterance's frames
        x = (x - x.mean(0, keepdims=True)) / np.maximum(x.std(0, keepdims=True), 1e-5)
    return x


def extract_to(rows: np.ndarray, waves: Sequence[np.ndarray], plan: Plan, settings: SslSettings,
               model: nn.Module, *, downsample: int, normalize: str,
               progress: Callable[[str], None] | None = None,
               cuda_seconds: CudaSeconds | None = None) -> dict[str, object]:
    """Fill `rows` (total_frames, L, D) with every utterance's kept hidden states, in corpus
    order; returns what happened (device, precision, batches, seconds, fallbacks).
    `cuda_seconds` sizes a GPU batch (memory.auto_cuda_seconds; None: CUDA_BATCH_SECONDS)."""
    device = resolve_device(settings.device)
    layers = list(settings.layers)
    upto = max(layers)
    half = device.type == "cuda"
    if half:  # an fp16 copy on the GPU; the fp32 model stays on the CPU for fallbacks
        import copy

        runner = copy.deepcopy(model).to(device).half()
    else:
        runner = model.to(device)
    seconds = settings.batch_seconds
    if seconds is None:
        if device.type == "cpu":
            seconds = CPU_BATCH_SECONDS
        elif cuda_seconds is None:
            seconds = CUDA_BATCH_SECONDS
        else:
            seconds = cuda_seconds(settings, int(plan.samples.max()), device, runner)
    budget = max(int(plan.samples.max()), int(seconds * SAMPLE_RATE))
    total = float(plan.samples.sum()) / SAMPLE_RATE
    bar = Progress(f"ssl {settings.model}", total, len(waves), progress)
    bar.emit(f"ssl {settings.model}: extracting {len(layers)} hidden states x "
             f"{settings.dim} of {len(waves)} utterances ({total:.0f} s of audio) on {device}"
             f"{' in float16' if half else ''}, batches of <= {budget / SAMPLE_RATE:.0f} s")
    fallbacks, n_batches, start = 0, 0, time.perf_counter()
    pending = batches_by_length(plan.samples, budget)
    while pending:
        idx = pending.pop(0)
        longest = int(plan.samples[idx].max())
        batch = np.zeros((len(idx), longest), dtype=np.float32)
        for j, i in enumerate(idx):
            w = waves[i][: plan.samples[i]]
            batch[j, : len(w)] = w
        waves_t = torch.from_numpy(batch).to(device)
        lengths = torch.from_numpy(plan.samples[idx]).to(device)
        try:
            with torch.inference_mode():
                states, frame_lengths = hidden_states(
                    runner, waves_t.half() if half else waves_t, lengths, settings, upto)
                out = torch.stack([states[k] for k in layers], dim=2)  # (B, T, L, D)
                if half and not bool(torch.isfinite(out).all()):
                    # fp16 overflowed somewhere: this batch again in fp32 (counted in meta)
                    fallbacks += 1
                    model.to(device)
                    states, frame_lengths = hidden_states(model, waves_t, lengths, settings,
                                                          upto)
                    out = torch.stack([states[k] for k in layers], dim=2)
                    model.to("cpu")
                del states
        except RuntimeError as exc:
            if not is_oom(exc) or len(idx) == 1:
                raise
            del exc
            if device.type == "cuda":
                torch.cuda.empty_cache()
            half_idx = len(idx) // 2  # out of memory: the same rows in two halves
            pending[:0] = [idx[:half_idx], idx[half_idx:]]
            continue
        n_batches += 1
        frame_lengths = frame_lengths.cpu()
        host = out.float().cpu().numpy() if (downsample > 1 or normalize != "none") else (
            out.to(torch.float16 if settings.dtype == "float16" else torch.float32)
            .cpu().numpy())
        if not np.isfinite(host).all():
            _overflow(settings)
        for j, i in enumerate(idx):
            n = int(frame_lengths[j])
            if n != plan.frames[i]:
                raise AssertionError(f"utterance {i}: {n} frames, expected {plan.frames[i]}")
            x = host[j, :n]
            if downsample > 1 or normalize != "none":
                x = _postprocess(x, downsample, normalize)
                if settings.dtype == "float16" and np.abs(x).max() > FLOAT16_MAX:
                    _overflow(settings)
            rows[plan.offsets[i]: plan.offsets[i + 1]] = x
        bar.update(len(idx), float(plan.samples[idx].sum()) / SAMPLE_RATE)
    model.to("cpu")
    del runner
    if device.type == "cuda":
        torch.cuda.empty_cache()
    wall = time.perf_counter() - start
    return {"device": str(device), "precision": "float16" if half else "float32",
            "batches": n_batches, "fp32_fallback_batches": fallbacks,
            "extract_seconds": round(wall, 3), "audio_seconds": round(total, 3),
            "audio_seconds_per_second": round(total / max(wall, 1e-9), 3),
            "batch_seconds": round(budget / SAMPLE_RATE, 3)}


def _overflow(settings: SslSettings) -> None:
    from trainables.errors import ConfigError

    raise ConfigError("data.ssl.dtype", f"the hidden states of {settings.model} exceed "
                      f"float16's range (|x| > {FLOAT16_MAX:g}) or are not finite; cache them "
                      f"as float32 (data.ssl.dtype: float32, twice the disk) or keep other "
                      f"layers (data.ssl.layers)")
