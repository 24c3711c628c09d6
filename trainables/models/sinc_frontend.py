"""The SincNet front-end (Ravanelli & Bengio, 2018) over 200 ms windows with a 10 ms shift.

Per frame (the reference): sinc band-pass conv -> |.| -> maxpool -> LayerNorm -> LeakyReLU, then
[conv -> maxpool -> LayerNorm -> LeakyReLU] per entry of `conv_channels`, flattened to one vector.

`SincFrontend(framing=...)` computes it three ways, (B, S) -> (B, n_frames, D) with the same D:
- "naive":     unfold into (B*n, 1, win) frames and run everything per frame: the reference code.
- "per_frame": exactly the same function. The sinc conv, |.| and a stride-1 maxpool run ONCE over
               the whole waveform (frame i's valid conv output is the whole conv at [i*shift,
               i*shift + win - taps + 1)); frames are cut from that, then the per-frame ops
               (LayerNorm over each frame, the later convs) stay per frame. Saves the two
               largest per-frame tensors (conv output and |.|, each B*n*C*(win-taps+1)) and
               the redundant conv work. Each LayerNorm + LeakyReLU runs as one autograd
               function (FrameNormAct) that keeps only its input for backward.
- "shared":    a different model: everything runs once over the whole waveform, normalised per time
               step over channels (no frame statistics), and each frame's window of the final map
               (start (i*shift) // stride, rounded down when the stride does not divide the
               shift) is flattened. Activations scale with S instead of n_frames * win.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainables.errors import ConfigError
from trainables.models.param_checks import check_choice, check_int, check_int_list
from trainables.models.pooling import conv_lengths, length_mask

FRAMINGS = ("per_frame", "shared", "naive")
LEAKY_SLOPE = 0.2  # SincNet's leaky_relu


def _to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


class SincConv(nn.Module):
    """Learnable band-pass filters: each is (high cut - low cut) parametrised, Hamming-windowed.

    Cut-offs start evenly spaced on the mel scale, as SincConv_fast in the SincNet repository.
    """

    def __init__(
        self, filters: int, taps: int, sample_rate: int = 16_000,
        min_low_hz: float = 50.0, min_band_hz: float = 50.0,
    ) -> None:
        super().__init__()
        self.taps, self.sample_rate = taps, sample_rate
        self.min_low_hz, self.min_band_hz = min_low_hz, min_band_hz
        high = sample_rate / 2 - (min_low_hz + min_band_hz)
        mel = torch.linspace(_to_mel(30.0), _to_mel(high), filters + 1)
        hz = 700.0 * (10 ** (mel / 2595.0) - 1)
        self.low_hz_ = nn.Parameter(hz[:-1].view(-1, 1))  # (C, 1)
        self.band_hz_ = nn.Parameter(hz.diff().view(-1, 1))  # (C, 1)
        half = taps // 2
        n_lin = torch.linspace(0, taps / 2 - 1, steps=half)
        self.register_buffer("window", 0.54 - 0.46 * torch.cos(2 * math.pi * n_lin / taps), False)
        n = torch.arange(-half, 0, dtype=torch.float32)  # left half of the symmetric filter
        self.register_buffer("n", 2 * math.pi * n.view(1, -1) / sample_rate, False)  # (1, K//2)

    def kernels(self) -> torch.Tensor:
        """(C, 1, K) band-pass filters, each scaled to unit peak gain."""
        low = self.min_low_hz + self.low_hz_.abs()  # (C, 1)
        high = (low + self.min_band_hz + self.band_hz_.abs()).clamp(
            self.min_low_hz, self.sample_rate / 2
        )
        band = (high - low)[:, 0]  # (C,)
        left = ((torch.sin(high @ self.n) - torch.sin(low @ self.n)) / (self.n / 2)) * self.window
        centre = 2 * band.view(-1, 1)
        band_pass = torch.cat([left, centre, left.flip(1)], dim=1)  # (C, K)
        return (band_pass / (2 * band[:, None])).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.kernels())  # (B, 1, S) -> (B, C, S - K + 1)


class FrameLayerNorm(nn.Module):
    """SincNet's LayerNorm: each channel normalised over the positions of its frame (unbiased std,
    eps added to the std), with an elementwise affine of shape (C, L). Needs whole frames."""

    def __init__(self, channels: int, positions: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels, positions))
        self.beta = nn.Parameter(torch.zeros(channels, positions))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, L)
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.gamma * (x - mean) / (std + self.eps) + self.beta


class FrameNormAct(torch.autograd.Function):
    """leaky_relu(FrameLayerNorm(x)), the same values, with a hand-written backward.

    Why: under autograd, FrameLayerNorm + leaky_relu keep four per-frame copies for backward
    (x, x - mean, gamma * (x - mean), the pre-activation) and the division's backward makes three
    more temporaries; at 4 s the first block's copies are B * 381 * 80 * 983 floats (114 MiB per
    sample) each. This keeps x and the (N, C, 1) statistics, recomputes the normalised frames in
    backward (a few elementwise passes), and works in place. Measured (bench/memory.py table 1,
    4 s, batch 1-8): `per_frame` went from 1.75-1.79x to 2.56-2.64x below `naive`, and is no
    slower. Checkpointing the block instead (torch.utils.checkpoint) reached only ~1.9x at
    batch >= 2: the recomputed graph, rebuilt in backward, is just as large.
    """

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float, slope: float
    ) -> torch.Tensor:  # x (N, C, L), gamma and beta (C, L)
        mean = x.mean(-1, keepdim=True)  # (N, C, 1)
        std = x.std(-1, keepdim=True)  # (N, C, 1), unbiased
        z = (gamma * (x - mean)).div_(std + eps).add_(beta)  # FrameLayerNorm's ops, in order
        ctx.save_for_backward(x, mean, std, gamma, beta)
        ctx.eps, ctx.slope = eps, slope
        return F.leaky_relu_(z, slope)  # (N, C, L)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # g (N, C, L)
        # The chain rule through FrameLayerNorm's ops, in autograd's order (so that rounding
        # matches the reference, which matters where std = 0: there 1 / (std + eps) = 1e6).
        x, mean, std, gamma, beta = ctx.saved_tensors
        s = std + ctx.eps  # (N, C, 1)
        z = (gamma * (x - mean)).div_(s).add_(beta)  # the forward's pre-activation, recomputed
        dz = z.gt_(0).mul_(1 - ctx.slope).add_(ctx.slope).mul_(g)  # g * leaky_relu'(z), in z
        dbeta = dz.sum(0)  # (C, L)
        xc = x - mean  # (N, C, L)
        du = dz.div_(s)  # d loss / d (gamma * xc), in z
        dgamma = (du * xc).sum(0)  # (C, L)
        dxc = du.mul_(gamma)  # d loss / d xc, in z
        # std = sqrt(sum(xc^2) / (L - 1)): d loss / d std = -sum(dxc * xc) / s, and
        # d std / dx = xc / ((L - 1) * std), 0 where std = 0 (as torch's std backward).
        dstd = (dxc * xc).sum(-1, keepdim=True).div_(s).neg_()  # (N, C, 1)
        coef = dstd.div_((x.shape[-1] - 1) * std).masked_fill_(std == 0, 0.0)  # (N, C, 1)
        dx = dxc.sub_(dxc.sum(-1, keepdim=True) / x.shape[-1]).addcmul_(xc, coef)  # mean's part
        return dx, dgamma, dbeta, None, None


class StepLayerNorm(nn.LayerNorm):
    """LayerNorm over channels at each time step: (B, C, T) -> (B, C, T), no frame statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class SincFrontend(nn.Module):
    """(B, S) -> (B, n_frames, D), n_frames = ceil(S / shift), D = C_last * L_last.

    Defaults are SincNet's TIMIT configuration: 80 sinc filters of 251 taps, convs 60x5 and 60x5,
    maxpool 3 after each; 3200-sample (200 ms) frames every 160 samples: (B, 400, 6420) at 4 s.
    Framing as the research's reference: one frame starts every `shift` samples of the clip
    (4 s / 10 ms = 400 frames) and the end is zero-padded so the last frames are whole
    (`padded_samples`); taking only the frames that fit wholly gave 381.
    """

    def __init__(
        self,
        *,
        framing: str = "per_frame",
        sinc_filters: int = 80,
        sinc_taps: int = 251,
        conv_channels: list[int] = [60, 60],  # noqa: B006 -- YAML-friendly, never mutated
        conv_kernels: list[int] = [5, 5],  # noqa: B006
        pools: list[int] = [3, 3, 3],  # noqa: B006
        win: int = 3200,
        shift: int = 160,
        sample_rate: int = 16_000,
    ) -> None:
        super().__init__()
        self.framing = check_choice("model.framing", framing, FRAMINGS)
        check_int("model.sinc_filters", sinc_filters)
        check_int("model.sinc_taps", sinc_taps)
        if sinc_taps % 2 == 0:
            raise ConfigError("model.sinc_taps", f"sinc_taps must be odd, but got {sinc_taps}")
        conv_channels = check_int_list("model.conv_channels", conv_channels, allow_empty=True)
        n = len(conv_channels)
        self.kernels = [sinc_taps, *check_int_list("model.conv_kernels", conv_kernels, length=n)]
        self.pools = check_int_list("model.pools", pools, length=n + 1)
        self.win, self.shift = check_int("model.win", win), check_int("model.shift", shift)
        channels = [sinc_filters, *conv_channels]
        # Positions per frame after each block: conv (valid) then maxpool (floor).
        self.positions, length = [], win
        for k, p in zip(self.kernels, self.pools):
            length = (length - k + 1) // p
            if length < 1:
                raise ConfigError(
                    "model.win", f"a frame of win={win} samples is too short for kernels "
                    f"{self.kernels} and pools {self.pools} (no output left)"
                )
            self.positions.append(length)
        self.stride = math.prod(self.pools)  # samples per position of the final map
        self.out_dim = channels[-1] * self.positions[-1]
        self.sinc = SincConv(sinc_filters, sinc_taps, sample_rate)
        self.convs = nn.ModuleList(
            nn.Conv1d(c_in, c_out, k)
            for c_in, c_out, k in zip(channels, channels[1:], conv_kernels)
        )
        self.norms = nn.ModuleList(
            StepLayerNorm(c) if framing == "shared" else FrameLayerNorm(c, length)
            for c, length in zip(channels, self.positions)
        )

    def n_frames(self, samples: int) -> int:
        """Frames of a clip of `samples`: one starting every `shift` samples (at least 1)."""
        return max(1, -(-samples // self.shift))

    def padded_samples(self, samples: int) -> int:
        """The length the end zero-padding gives a clip of `samples`: its last frame is whole."""
        return (self.n_frames(samples) - 1) * self.shift + self.win

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames starting inside the valid samples, ceil(lengths / shift) (at least 1)."""
        frames = torch.div(lengths + self.shift - 1, self.shift, rounding_mode="floor")
        return frames.clamp(min=1)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """x (B, S) -> (B, n_frames, D); hiddens = each block's output mean-pooled -> (B, C_i)."""
        batch, n = x.shape[0], self.n_frames(x.shape[1])
        if lengths is None:
            lengths = torch.full((batch,), x.shape[1], device=x.device, dtype=torch.long)
        # the reference's end padding (a static shape: n frames, the last one whole)
        x = F.pad(x, (0, self.padded_samples(x.shape[1]) - x.shape[1]))
        if self.framing == "shared":
            return self._shared(x, lengths, n, return_hidden)
        frames = self._naive_first(x, n) if self.framing == "naive" else self._cut_first(x, n)
        mask = length_mask(self.frame_lengths(lengths), n)[:, :, None].to(x.dtype)  # (B, n, 1)
        hiddens = []
        h = frames  # (B*n, C0, L0) pooled |sinc conv| of each frame
        for i, norm in enumerate(self.norms):
            if i > 0:
                h = F.max_pool1d(self.convs[i - 1](h), self.pools[i])  # (B*n, C_i, L_i)
            if self.framing == "naive":  # the reference: autograd keeps 4 copies per block
                h = F.leaky_relu(norm(h), LEAKY_SLOPE)
            else:  # same values, keeps only h for backward (see FrameNormAct)
                h = FrameNormAct.apply(h, norm.gamma, norm.beta, norm.eps, LEAKY_SLOPE)
            if return_hidden:  # mean over positions, then over the valid frames
                per_frame = h.mean(2).view(batch, n, -1)  # (B, n, C_i)
                hiddens.append((per_frame * mask).sum(1) / mask.sum(1))
        out = h.reshape(batch, n, -1)  # (B, n, C_last * L_last)
        return (out, hiddens) if return_hidden else out

    def _naive_first(self, x: torch.Tensor, n: int) -> torch.Tensor:
        frames = x.unfold(1, self.win, self.shift)[:, :n]  # (B, n, win)
        h = self.sinc(frames.reshape(-1, 1, self.win)).abs()  # (B*n, C0, win - K + 1)
        return F.max_pool1d(h, self.pools[0])  # (B*n, C0, L0)

    def _cut_first(self, x: torch.Tensor, n: int) -> torch.Tensor:
        h = self.sinc(x[:, None, :]).abs()  # (B, C0, S - K + 1), once over the whole waveform
        p, positions = self.pools[0], self.positions[0]
        # maxpool(kernel p, stride p) of frame i at position j = max h[i*shift + p*j + (0..p-1)]:
        # a stride-1 maxpool over the whole waveform, then every p-th value of each frame.
        if p > 1:
            h = F.max_pool1d(h, p, stride=1)  # (B, C0, S - K + 2 - p)
        span = p * (positions - 1) + 1
        frames = h.unfold(2, span, self.shift)[:, :, :n, ::p]  # (B, C0, n, L0), a strided view
        return frames.transpose(1, 2).reshape(-1, h.shape[1], positions)  # (B*n, C0, L0)

    def _shared(
        self, x: torch.Tensor, lengths: torch.Tensor, n: int, return_hidden: bool
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        batch = x.shape[0]
        h = self.sinc(x[:, None, :]).abs()  # (B, C0, S - K + 1)
        hiddens = []
        for i, norm in enumerate(self.norms):
            if i > 0:
                h = self.convs[i - 1](h)
            h = F.leaky_relu(norm(F.max_pool1d(h, self.pools[i])), LEAKY_SLOPE)  # (B, C_i, M_i)
            lengths = conv_lengths(lengths, self.kernels[i])
            lengths = conv_lengths(lengths, self.pools[i], self.pools[i])
            if return_hidden:
                mask = length_mask(lengths, h.shape[2])[:, None, :].to(h.dtype)  # (B, 1, M_i)
                hiddens.append((h * mask).sum(2) / mask.sum(2))
        # Frame i reads the final map's positions [(i*shift)//stride, ... + L_last): its window.
        start = torch.arange(n, device=x.device) * self.shift // self.stride  # (n,)
        index = start[:, None] + torch.arange(self.positions[-1], device=x.device)  # (n, L)
        out = h[:, :, index].transpose(1, 2).reshape(batch, n, -1)  # (B, n, C_last * L_last)
        return (out, hiddens) if return_hidden else out
