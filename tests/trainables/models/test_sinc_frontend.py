"""SincNet front-end: per_frame == the naive reference; shared frames line up; band-pass."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from trainables.memory import trace_step
from trainables.models.sinc_frontend import (
    LEAKY_SLOPE,
    FrameLayerNorm,
    FrameNormAct,
    SincConv,
    SincFrontend,
)

# 0.5 s of audio, fewer/shorter filters; pools 3 and shift 80 keep the maxpool off the frame grid.
SMALL = dict(sinc_filters=16, sinc_taps=101, conv_channels=[8, 8], conv_kernels=[5, 5],
             pools=[3, 3, 3], win=800, shift=80)


def perturbed(framing: str, **kwargs) -> SincFrontend:
    """A front-end whose LayerNorm affines and cut-offs are off their (uniform) initial values."""
    torch.manual_seed(0)
    front = SincFrontend(framing=framing, **{**SMALL, **kwargs})
    with torch.no_grad():
        for p in front.parameters():
            p.add_(0.1 * torch.randn_like(p) * p.abs().mean().clamp(min=1.0))
    return front


@pytest.mark.parametrize("kwargs", [{}, dict(pools=[1, 2, 3]), dict(shift=160, pools=[4, 2, 2])])
def test_per_frame_equals_naive_reference_forward_and_backward(kwargs) -> None:
    per_frame = perturbed("per_frame", **kwargs)
    naive = SincFrontend(framing="naive", **{**SMALL, **kwargs})
    naive.load_state_dict(per_frame.state_dict())  # same parameters: framing is only how it runs
    x = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    a, b = per_frame(x), naive(x)
    assert a.shape == b.shape == (2, math.ceil(8000 / naive.shift), naive.out_dim)
    assert (a - b).abs().max() <= 1e-5
    assert a.std() > 0.1  # not trivially equal
    a.square().mean().backward()
    b.square().mean().backward()
    for (name, p), q in zip(per_frame.named_parameters(), naive.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_defaults_are_the_reference_layout() -> None:
    front = SincFrontend()
    assert front.framing == "per_frame"
    assert front.n_frames(64_000) == 400  # 4 s: [B, 400, 3200] frames of 200 ms every 10 ms
    assert front.positions == [983, 326, 107] and front.out_dim == 60 * 107
    assert front.sinc.kernels().shape == (80, 1, 251)


@pytest.mark.parametrize(("shift", "samples"), [(80, 8000), (80, 4321), (162, 8000), (80, 500)])
def test_shared_gives_one_vector_per_frame(shift, samples) -> None:
    shared = perturbed("shared", shift=shift)
    per_frame = SincFrontend(framing="per_frame", **{**SMALL, "shift": shift})
    out = shared(torch.randn(3, samples))
    frames = math.ceil(samples / shift)  # one per shift, the end padded (the reference)
    assert out.shape == (3, frames, per_frame.out_dim)
    assert torch.isfinite(out).all()
    # The stride (27) does not divide these shifts: windows start at (i*shift)//27; they differ.
    if frames > 1:
        assert not torch.allclose(out[:, 0], out[:, 1])


def test_shared_frames_are_exact_windows_when_the_stride_divides_the_shift() -> None:
    shared = perturbed("shared", pools=[2, 2, 2], shift=80)  # stride 8 divides 80
    x = torch.randn(1, 4000)
    out = shared(x)  # (1, n, C*L)
    positions, channels = shared.positions[-1], 8
    window0 = out[0, 1].view(channels, positions)[:, : positions - 10]
    window1 = out[0, 0].view(channels, positions)[:, 10:]  # frame 1 starts 80/8 = 10 later
    torch.testing.assert_close(window0, window1)


def test_sinc_filter_passes_its_band_and_stops_others() -> None:
    sinc = SincConv(filters=10, taps=251)
    low = (sinc.min_low_hz + sinc.low_hz_.abs()).squeeze(1).detach()
    high = low + sinc.min_band_hz + sinc.band_hz_.abs().squeeze(1).detach()
    assert (low.diff() > 0).all() and (high - low).diff().gt(0).all()  # mel: wider bands up high
    t = torch.arange(16_000) / 16_000
    k = 5
    centre = float((low[k] + high[k]) / 2)
    tone_in = torch.sin(2 * math.pi * centre * t).view(1, 1, -1)
    tone_out = torch.sin(2 * math.pi * 100.0 * t).view(1, 1, -1)  # below band 5
    with torch.no_grad():
        gain_in = sinc(tone_in)[0, k].abs().amax()
        gain_out = sinc(tone_out)[0, k].abs().amax()
    assert gain_out < 0.05 * gain_in


def test_per_frame_equals_naive_at_the_default_size() -> None:
    defaults = dict(sinc_filters=80, sinc_taps=251, conv_channels=[60, 60], conv_kernels=[5, 5],
                    pools=[3, 3, 3], win=3200, shift=160)
    per_frame = perturbed("per_frame", **defaults)
    naive = SincFrontend(framing="naive")
    naive.load_state_dict(per_frame.state_dict())
    x = torch.randn(1, 8000, generator=torch.Generator().manual_seed(1))  # 0.5 s, 50 frames
    with torch.no_grad():
        a, b = per_frame(x), naive(x)
    assert a.shape == b.shape == (1, 50, 6420)
    # relative: the end frames are mostly padding, whose small std amplifies float rounding
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_frame_norm_act_matches_layer_norm_then_leaky_relu() -> None:
    """FrameNormAct (per_frame's LayerNorm + LeakyReLU, hand-written backward) == autograd's."""
    torch.manual_seed(0)
    norm = FrameLayerNorm(3, 20).double()
    with torch.no_grad():
        norm.gamma.add_(0.5 * torch.randn_like(norm.gamma))
        norm.beta.add_(0.5 * torch.randn_like(norm.beta))
    x = torch.randn(5, 3, 20, dtype=torch.float64, requires_grad=True)
    args = (norm.gamma, norm.beta, norm.eps, LEAKY_SLOPE)
    assert torch.autograd.gradcheck(FrameNormAct.apply, (x, *args))
    x = torch.randn(6, 3, 20, dtype=torch.float64)
    x[4:] = 0.5  # zero-variance frames (silence): torch's std backward gives them no std term
    g = torch.randn_like(x)
    wants = [x.clone().requires_grad_(), norm.gamma, norm.beta]
    want = torch.autograd.grad(F.leaky_relu(norm(wants[0]), LEAKY_SLOPE), wants, g)
    gots = [x.clone().requires_grad_(), norm.gamma, norm.beta]
    got = torch.autograd.grad(FrameNormAct.apply(gots[0], *args), gots, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("silent_from", [4000, 3000])
def test_per_frame_equals_naive_with_silent_padding(silent_from: int) -> None:
    """Zero padding makes whole frames constant (std 0, where 1 / (std + eps) = 1e6 amplifies
    rounding): per_frame's hand-written backward must still give the reference's gradients."""
    per_frame = perturbed("per_frame")
    naive = SincFrontend(framing="naive", **SMALL)
    naive.load_state_dict(per_frame.state_dict())
    x = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    x[1, silent_from:] = 0
    a, b = per_frame(x), naive(x)
    assert (a - b).abs().max() <= 1e-5
    a.square().mean().backward()
    b.square().mean().backward()
    for (name, p), q in zip(per_frame.named_parameters(), naive.parameters()):
        assert torch.isfinite(p.grad).all(), name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_per_frame_peak_memory_is_at_least_2x_below_naive() -> None:
    """The goal of `per_frame` (bench/memory.py table 1), on the fake-tensor trace of a training
    step at the reference layout: 1 s and 4 s of 16 kHz audio, batch 2."""
    for samples in (16_000, 64_000):
        peak = {f: trace_step(partial(SincFrontend, framing=f), (samples,), 2, n_classes=4).peak
                for f in ("naive", "per_frame")}
        assert peak["naive"] >= 2 * peak["per_frame"], (samples, peak)


@pytest.mark.parametrize("framing", ["naive", "per_frame", "shared"])
def test_four_seconds_give_the_reference_400_frames(framing: str) -> None:
    """Issue 13: 4 s at 16 kHz, 200 ms windows every 10 ms -> 400 frames (end padded), not 381."""
    front = SincFrontend(framing=framing, sinc_filters=4, sinc_taps=101, conv_channels=[4],
                         conv_kernels=[5], pools=[3, 3])
    x = torch.randn(1, 64_000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = front(x)
    assert out.shape[:2] == (1, 400)
    assert front.frame_lengths(torch.tensor([64_000, 8_000, 100])).tolist() == [400, 50, 1]


def test_framings_agree_with_the_end_padding() -> None:
    """naive == per_frame on the padded end frames too, and frame i of a short clip in a longer
    batch is the same as alone (the batch padding and the end padding are both zeros)."""
    per_frame = perturbed("per_frame")
    naive = SincFrontend(framing="naive", **SMALL)
    naive.load_state_dict(per_frame.state_dict())
    x = torch.randn(2, 4321, generator=torch.Generator().manual_seed(2))
    x[1, 3000:] = 0
    with torch.no_grad():
        a, b = per_frame(x, torch.tensor([4321, 3000])), naive(x, torch.tensor([4321, 3000]))
        alone = per_frame(x[1:, :3000])
    assert a.shape[1] == math.ceil(4321 / 80)
    assert (a - b).abs().max() <= 1e-5
    torch.testing.assert_close(a[1, : alone.shape[1]], alone[0], atol=1e-5, rtol=1e-5)
