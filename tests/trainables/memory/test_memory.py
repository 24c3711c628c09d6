"""The fake-tensor peak-memory estimate against real measured peaks, and the micro-batch plan."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trainables.data.base import Fold, PreparedData
from trainables.errors import DoesNotFitError
from trainables.memory import (
    MemoryEstimate,
    calibrate,
    choose_micro_batch,
    estimate_module_memory,
    estimate_step_memory,
    estimate_trial_memory,
    is_oom,
    measure_step_peaks,
    plan_micro_batch,
    trace_step,
    upper_envelope,
)

HERE = Path(__file__).resolve()


class ConvLstm(nn.Module):
    """A small CNN + 2-layer BiLSTM on raw audio: exercises the oneDNN LSTM correction."""

    def __init__(self, channels: int = 8, hidden: int = 16, n_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, channels, 9, stride=4)
        self.lstm = nn.LSTM(channels, hidden, 2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.conv(x[:, None]).transpose(1, 2))
        return self.out(h.mean(1))


class FrameTransformer(nn.Module):
    """nn.TransformerEncoder deep-copies its layer: cannot be built inside FakeTensorMode."""

    def __init__(self, n_features: int = 8, d_model: int = 16, n_classes: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(n_features, d_model)
        layer = nn.TransformerEncoderLayer(d_model, 2, 32, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.bn = nn.BatchNorm1d(d_model)
        self.out = nn.Linear(d_model, n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.out(self.bn(self.enc(self.inp(x)).amax(1)))


def _spec(name: str, shape: tuple[int, ...]) -> dict:
    return {"factory": f"{HERE}:{name}", "input_shape": list(shape), "n_classes": 4}


def test_is_oom_on_a_real_allocation_failure() -> None:
    with pytest.raises(RuntimeError) as info:
        torch.empty(2**52, dtype=torch.uint8)  # 4 PiB
    assert is_oom(info.value)
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))


@pytest.mark.parametrize(
    ("name", "shape"), [("ConvLstm", (3000,)), ("FrameTransformer", (120, 8))]
)
def test_estimate_matches_measured_peak(name: str, shape: tuple[int, ...]) -> None:
    factory = globals()[name]
    est = estimate_module_memory(factory, shape, n_classes=4)
    measured = measure_step_peaks(_spec(name, shape), [3, 6])
    for b, real in zip((3, 6), measured):
        assert abs(est.peak(b) - real) / real < 0.05, (b, est.peak(b), real)
    # the breakdown is the module's own: params, grads (same size), AdamW (2 x params)
    n_params = sum(p.numel() for p in factory().parameters())
    assert est.grads_bytes == 4 * n_params
    assert est.optimizer_bytes >= 2 * est.grads_bytes
    assert est.per_sample_bytes > 0 and est.fixed_bytes > est.params_bytes


def test_peak_is_linear_in_batch_size() -> None:
    est = estimate_module_memory(FrameTransformer, (60, 8), n_classes=4)
    for b in (3, 7, 16):  # the fit from b = 2, 4 predicts the traces at other batch sizes
        assert est.peak(b) == trace_step(FrameTransformer, (60, 8), b, n_classes=4).peak
    assert est.peak(16) == est.fixed_bytes + 16 * est.per_sample_bytes
    # oneDNN page-aligns the LSTM workspace: linear to within a fraction of a percent
    lstm = estimate_module_memory(ConvLstm, (2000,), n_classes=4)
    for b in (1, 9):
        traced = trace_step(ConvLstm, (2000,), b, n_classes=4).peak
        assert abs(lstm.peak(b) - traced) / traced < 0.02


def test_upper_envelope_is_the_maximum_of_the_lines() -> None:
    rng = np.random.default_rng(0)
    lines = [(int(a), int(s)) for a, s in rng.integers(0, 1000, size=(200, 2))]
    hull = upper_envelope(lines)
    for b in range(1, 60):
        assert max(a + s * b for a, s in hull) == max(a + s * b for a, s in lines)
    assert len(hull) < len(lines)


def _estimate(fixed: int, per_sample: int) -> MemoryEstimate:
    return MemoryEstimate(fixed, per_sample, 0, 0, 0, per_sample)


@pytest.mark.parametrize("logical", [1, 7, 32, 33])
def test_choose_micro_batch_is_the_chunk_the_step_trains_with_minimal_accumulation(
    logical: int,
) -> None:
    from trainables.batching import micro_chunks

    est = _estimate(1000, 100)
    for budget in (1100, 1150, 1500, 2999, 4100, 10_000):
        largest = max(b for b in range(1, logical + 1) if est.peak(b) <= budget)
        micro, acc = choose_micro_batch(est, budget, logical)
        assert 1 <= micro <= largest and est.peak(micro) <= budget
        assert acc == math.ceil(logical / largest)  # the fewest chunks that fit
        # the planned micro-batch is the largest chunk the step trains, in `acc` chunks
        chunks = micro_chunks(torch.arange(logical), micro)
        assert len(chunks) == acc and max(len(c) for c in chunks) == micro
    assert choose_micro_batch(est, 1099, logical) == (0, 0)


def test_planned_micro_batch_is_not_the_largest_fit_when_the_chunks_are_smaller() -> None:
    est = _estimate(1000, 100)  # at most 31 fit in 4100 bytes
    assert choose_micro_batch(est, 4100, 32) == (16, 2)  # 2 chunks of 16, not "31, accum 2"


def test_members_add_their_parameters_and_optimizer_state() -> None:
    one = estimate_module_memory(FrameTransformer, (50, 8), n_classes=4)
    ten = one.with_members(10)
    extra = 9 * (one.params_bytes + one.optimizer_bytes)
    assert ten.fixed_bytes - one.fixed_bytes == extra
    assert ten.peak(5) - one.peak(5) == extra and ten.per_sample_bytes == one.per_sample_bytes


def _data(shape: tuple[int, ...], n: int = 12, folds: int = 2) -> PreparedData:
    idx = np.arange(n)
    return PreparedData(
        features=torch.zeros((n, *shape)),
        lengths=torch.full((n,), shape[0], dtype=torch.long),
        labels=torch.arange(n) % 4,
        classes=["neu", "hap", "sad", "ang"],
        ids=[str(i) for i in idx], speakers=["s"] * n, sessions=["x"] * n,
        folds=[Fold(f"f{k}", idx[:6], idx[6:9], idx[9:]) for k in range(folds)],
        feature_kind="logmel" if len(shape) == 2 else "raw",
        frame_rate=100.0,
    )


TINY_TRANSFORMER = {"name": "transformer", "layers": 1, "d_model": 16, "heads": 2, "ff_dim": 32}


def test_planned_micro_batch_fits_and_the_next_one_does_not() -> None:
    data = _data((80, 16))
    config = {"model": TINY_TRANSFORMER, "train": {"batch_size": 32, "seeds": [0]}}
    est = estimate_step_memory(TINY_TRANSFORMER, n_features=16, n_classes=4, input_shape=(80, 16))
    # a budget halfway between the estimated peaks at 5 and 6, with both members' state
    budget = est.with_members(2).peak(5) + est.per_sample_bytes // 2
    plan = plan_micro_batch(config, data, budget)
    assert (plan.micro_batch, plan.accumulation) == (5, 7)
    assert plan.estimated_peak <= budget and plan.estimate.n_members == 2
    spec = {"model_cfg": TINY_TRANSFORMER, "n_features": 16, "n_classes": 4,
            "input_shape": [80, 16]}
    at5, at6 = measure_step_peaks(spec, [5, 6])
    others = plan.estimate.other_members_bytes
    assert at5 + others <= budget < at6 + others


def test_a_distillation_teacher_counts_once_per_member() -> None:
    data = _data((80, 16))
    student = {"model": TINY_TRANSFORMER, "train": {"batch_size": 32, "seeds": [0]}}
    teacher_model = {**TINY_TRANSFORMER, "d_model": 32, "layers": 2}
    with_teacher = {**student, "distill": {"teacher_model": teacher_model}}
    kwargs = {"n_features": 16, "n_classes": 4, "input_shape": (80, 16), "n_members": 2}
    alone = estimate_trial_memory(student, **kwargs)
    both = estimate_trial_memory(with_teacher, **kwargs)
    teacher = estimate_step_memory(teacher_model, n_features=16, n_classes=4, input_shape=(80, 16))
    for b in (1, 8, 32):
        added = teacher.params_bytes * 2 + teacher.activation_bytes_per_sample * b
        assert both.peak(b) == alone.peak(b) + added
    budget = alone.peak(20)
    assert plan_micro_batch(with_teacher, data, budget).micro_batch < (
        plan_micro_batch(student, data, budget).micro_batch
    )


def test_batch_of_one_that_does_not_fit_raises() -> None:
    config = {"model": TINY_TRANSFORMER, "train": {"batch_size": 8, "seeds": [0, 1]}}
    with pytest.raises(DoesNotFitError, match="does not fit the memory budget"):
        plan_micro_batch(config, _data((80, 16)), 100_000)


def test_calibrate_moves_the_estimate_onto_measurements() -> None:
    est = estimate_module_memory(FrameTransformer, (50, 8), n_classes=4).with_members(3)
    shifted = calibrate(est, {4: est.with_members(1).peak(4) + 10_000_000})
    assert shifted.peak(4) == est.peak(4) + 10_000_000 and shifted.n_members == 3
    refit = calibrate(est, {2: 5_000_000, 6: 9_000_000})
    assert refit.with_members(1).peak(4) == 7_000_000


@pytest.mark.gpu
def test_estimate_calibrated_against_cuda_max_memory_allocated() -> None:
    spec = {"model_cfg": TINY_TRANSFORMER, "n_features": 16, "n_classes": 4,
            "input_shape": [200, 16]}
    est = estimate_step_memory(TINY_TRANSFORMER, n_features=16, n_classes=4, input_shape=(200, 16))
    real4, real8, real16 = measure_step_peaks(spec, [4, 8, 16], device="cuda")
    raw_error = abs(est.peak(8) - real8) / real8
    cal = calibrate(est, {4: real4, 8: real8})
    assert abs(cal.peak(16) - real16) / real16 < 0.05, (raw_error, cal.peak(16), real16)


FAMILIES = {
    "cnn_lstm": ({"name": "cnn_lstm", "channels": [8, 16], "kernel_sizes": [16, 8],
                  "strides": [4, 4], "lstm_hidden": 16}, 1, (4000,)),
    "sincnet": ({"name": "sincnet", "sinc_filters": 8, "sinc_taps": 31, "conv_channels": [8, 8],
                 "win": 400, "shift": 80, "seq_hidden": 16}, 1, (4000,)),
    "transformer": (
        {"name": "transformer", "d_model": 32, "heads": 2, "ff_dim": 64}, 16, (50, 16)
    ),
    "resnet_lstm": ({"name": "resnet_lstm", "channels": [4, 8], "lstm_hidden": 16}, 16, (50, 16)),
    "vggish_lstm": ({"name": "vggish_lstm", "width": 0.25, "lstm_hidden": 16}, 64, (96, 64)),
    # (T, L, D): 13 hidden states of width 96
    "ssl_head": ({"name": "ssl_head", "proj_dim": 64, "head_hidden": [32]}, 96, (60, 13, 96)),
}


def _registered() -> list[str]:
    from trainables.models import MODELS

    return sorted(MODELS)


@pytest.mark.slow
@pytest.mark.parametrize("family", _registered())
def test_every_family_estimate_within_10_percent_of_measured(family: str) -> None:
    assert family in FAMILIES, f"add a tiny config for the new family {family!r} to FAMILIES"
    cfg, n_features, shape = FAMILIES[family]
    est = estimate_step_memory(cfg, n_features=n_features, n_classes=4, input_shape=shape)
    spec = {"model_cfg": cfg, "n_features": n_features, "n_classes": 4, "input_shape": list(shape)}
    for b, real in zip((2, 5), measure_step_peaks(spec, [2, 5])):
        assert abs(est.peak(b) - real) / real < 0.10, (family, b, est.peak(b), real)


def test_partial_factories_and_meta_build_work() -> None:
    est = estimate_module_memory(partial(ConvLstm, channels=4, hidden=8), (800,), n_classes=4)
    assert est.params_bytes == 4 * sum(p.numel() for p in ConvLstm(4, 8).parameters())
