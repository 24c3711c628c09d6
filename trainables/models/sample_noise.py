"""Training noise that does not depend on the micro-batch: per-sample dropout and ghost BatchNorm.

The planner may split a logical batch into micro-batches of any size (gradient accumulation). Two
things made a config's numbers depend on that size: dropout masks drawn per micro-chunk from the
global RNG, and BatchNorm statistics taken over the micro-chunk. Inside `sample_noise(...)` (the
trainer enters it around each micro-chunk's forward, trainables/members.py):

- `SampleDropout` draws each element's keep decision from a counter-based hash of (the logical
  step's seed, the dropout call's index within the forward, the sample's position in the logical
  batch, the element's index within the sample): the same mask for a sample whatever chunk it is
  in. The step seed comes from the member's RNG (one draw per logical step), so it is the member's
  seed alone that decides the masks. `build_model` puts it in place of every nn.Dropout, and
  `SampleEncoderLayer` applies it to the attention weights too.
- BatchNorm (trainables/models/masked_norm.py) normalizes over ghost batches of `norm_batch`
  consecutive samples of the logical batch (`train.norm_batch`), and the trainer cuts micro-chunks
  on ghost-batch boundaries (batching.micro_chunks), so the statistics never depend on memory. A
  micro-batch below `norm_batch` cannot keep that promise (a ghost batch would be split): the
  trainer says so once (`ghost_split_warning`).

Outside the context (evaluation, the memory estimator's traces, a model called directly) dropout is
plain nn.Dropout and BatchNorm normalizes over the whole batch, as before.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_M32 = 0xFFFFFFFF


@dataclass
class _Noise:
    seed: int
    start: int  # position of the chunk's first sample in the logical batch
    norm_batch: int
    calls: int = 0  # dropout calls so far in this chunk's forward


_ACTIVE: list[_Noise] = []


@contextlib.contextmanager
def sample_noise(seed: int, start: int, norm_batch: int) -> Iterator[None]:
    """Per-sample dropout and ghost BatchNorm for one micro-chunk whose first sample is at
    `start` in the logical batch (see the module docstring)."""
    _ACTIVE.append(_Noise(int(seed) & _M32, int(start), max(1, int(norm_batch))))
    try:
        yield
    finally:
        _ACTIVE.pop()


def active_norm_batch() -> int | None:
    """The ghost-batch size inside `sample_noise`, else None (normalize over the whole batch)."""
    return _ACTIVE[-1].norm_batch if _ACTIVE else None


def ghost_groups(n: int, norm_batch: int) -> list[int]:
    """Sizes of the ghost batches of `n` consecutive samples: `norm_batch` each, a trailing group
    of one merged into the one before (BatchNorm needs two values per channel)."""
    sizes = [norm_batch] * (n // norm_batch) + ([n % norm_batch] if n % norm_batch else [])
    if len(sizes) > 1 and sizes[-1] == 1:
        sizes[-2:] = [sizes[-2] + 1]
    return sizes


def _mix(h: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32-like) on int64 tensors holding values in [0, 2^32)."""
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & _M32
    h = h ^ (h >> 15)
    h = (h * 0x2C1B3C6D) & _M32  # constants below 2^31: no int64 overflow
    return h ^ (h >> 16)


def sample_uniform(shape: torch.Size, seed: int, call: int, positions: torch.Tensor
                   ) -> torch.Tensor:
    """Uniforms in [0, 1) of `shape` (positions.numel(), ...): element (b, j...) depends only on
    (seed, call, positions[b], j's flat index within a sample). float32 on positions' device."""
    per_sample = math.prod(shape[1:])
    device = positions.device
    key = _mix(torch.tensor((seed ^ (call * 0x9E3779B9)) & _M32, device=device))
    h = _mix((key + positions.to(torch.int64) * 0x632BE5AB) & _M32)  # (B,)
    element = torch.arange(per_sample, device=device, dtype=torch.int64)
    h = _mix((h[:, None] ^ element[None, :]) & _M32)  # (B, per_sample)
    h = _mix((h + 0x5851F42D) & _M32)
    return ((h >> 8).to(torch.float32) * (1.0 / (1 << 24))).view(shape)


class SampleDropout(nn.Dropout):
    """nn.Dropout whose masks, inside `sample_noise`, are drawn per sample (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or not _ACTIVE:
            return super().forward(x)
        noise = _ACTIVE[-1]
        call = noise.calls
        noise.calls += 1
        if self.p >= 1.0:
            return x * 0
        positions = torch.arange(noise.start, noise.start + x.shape[0], device=x.device)
        keep = sample_uniform(x.shape, noise.seed, call, positions) >= self.p
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


def per_sample_dropout(model: nn.Module) -> nn.Module:
    """`model` with every nn.Dropout replaced by a SampleDropout of the same p (in place)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, SampleDropout(child.p))
    return model


class SampleEncoderLayer(nn.TransformerEncoderLayer):
    """nn.TransformerEncoderLayer (same parameters and state_dict keys) whose attention dropout,
    inside `sample_noise`, is a SampleDropout on the attention weights (nn.MultiheadAttention draws
    it from the global RNG over the whole chunk)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.attention_dropout = SampleDropout(self.self_attn.dropout)

    def _sa_block(self, x: torch.Tensor, attn_mask: torch.Tensor | None,
                  key_padding_mask: torch.Tensor | None, is_causal: bool = False) -> torch.Tensor:
        attn = self.self_attn
        if not self.training or attn.dropout == 0.0 or not _ACTIVE or attn_mask is not None:
            return super()._sa_block(x, attn_mask, key_padding_mask, is_causal)
        batch, steps, dim = x.shape
        heads = attn.num_heads
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, steps, heads, dim // heads).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(dim // heads)  # (B, H, T, T)
        if key_padding_mask is not None:
            if key_padding_mask.dtype == torch.bool:
                scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
            else:  # the layer's canonical additive mask (0 / -inf)
                scores = scores + key_padding_mask[:, None, None, :].to(scores.dtype)
        weights = self.attention_dropout(scores.softmax(dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(batch, steps, dim)
        return self.dropout1(attn.out_proj(out))


def ghost_split_warning(model: nn.Module, micro_batch: int, norm_batch: int) -> str | None:
    """One line when `model` has BatchNorm and `micro_batch` < `norm_batch`: a ghost batch is then
    split across micro-batches, and its numbers depend on the micro-batch; else None."""
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if not has_bn or micro_batch >= norm_batch:
        return None
    return (f"micro-batch {micro_batch} < train.norm_batch {norm_batch} with BatchNorm: the "
            f"ghost batches are split, so this trial's numbers depend on its micro-batch")
