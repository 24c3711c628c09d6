"""What the fake CPU kernels do not report, taken from the real kernel (CPU targets only).

Two kinds of kernel allocate more through the c10 allocator than the fake (meta) kernels show:
- nn.LSTM runs aten.mkldnn_rnn_layer (one layer and direction) in training and its backward
  aten.mkldnn_rnn_layer_backward. The fake forward returns the workspace with 0 bytes, while the
  real one returns a workspace (gates and states of every time step, several times the layer's
  output, saved for backward); both real kernels also allocate a scratchpad for the duration of
  the call. Measured on a CNN+BiLSTM (T=4000 steps, H=64, b=2): a fake trace without these is
  12 % low at the peak.
- Convolutions (aten.convolution, aten.convolution_backward) run oneDNN, which computes in its
  own blocked layout: the destination (or the gradient of the input) in that layout, the weights
  reordered into it, and a scratchpad, all freed before the call returns. Measured on
  vggish_lstm at 4 s (a peak inside the backward of its first convolution): the transient is
  about the size of the convolution's output, or of its weights when those are larger (9 MiB for
  a 512x512x3x3 kernel), and a fake trace without it is 5.3 % low at the peak.

oneDNN page-aligns, pads channels to its block size and picks layouts and scratchpads per ISA and
shape, so there is no portable formula. Instead `kernel_memory` runs the REAL kernel once per
distinct argument shapes on zero inputs (for the RNN backward, after a real forward that provides
the workspace) under the torch profiler's memory events, and returns each output's bytes and the
in-call peak above the bytes live before the call. Cached per shapes; the cost is one call of the
kernel at the traced shapes (the trace's batches are small) on the CPU. A CUDA target uses the
cuDNN terms of trainables/memory/cuda_terms.py instead.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch._subclasses.fake_tensor import unset_fake_temporarily

RNN_FORWARD = torch.ops.aten.mkldnn_rnn_layer.default
RNN_BACKWARD = torch.ops.aten.mkldnn_rnn_layer_backward.default
RNN_OPS = (RNN_FORWARD, RNN_BACKWARD)
CONV_FORWARD = torch.ops.aten.convolution.default
CONV_BACKWARD = torch.ops.aten.convolution_backward.default
CONV_OPS = (CONV_FORWARD, CONV_BACKWARD)
PROBED_OPS = RNN_OPS + CONV_OPS  # the ops whose real CPU kernel `kernel_memory` runs
_FORWARD_ARGS = [a.name for a in RNN_FORWARD._schema.arguments]
_BACKWARD_TO_FORWARD = {"weight1": "weight0", "weight2": "weight1", "weight3": "weight2",
                        "weight4": "weight3", "cx_tmp": "cx_"}


def _freeze(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ("T", tuple(value.shape), value.dtype)
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _real(frozen: Any) -> Any:
    if isinstance(frozen, tuple) and frozen and frozen[0] == "T":
        return torch.zeros(frozen[1], dtype=frozen[2])
    return list(frozen) if isinstance(frozen, tuple) else frozen


def kernel_memory(func: Any, args: tuple, kwargs: dict) -> tuple[list[int], int]:
    """(bytes of each tensor output, in-call peak bytes above the live bytes before the call) of
    the real CPU kernel `func` (one of PROBED_OPS) called with arguments of these shapes."""
    names = [a.name for a in func._schema.arguments]
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return _probe(func, tuple((k, _freeze(v)) for k, v in bound.items()))


def _bytes(out: Any) -> list[int]:
    outs = out if isinstance(out, tuple | list) else (out,)
    return [int(t.untyped_storage().nbytes()) if isinstance(t, torch.Tensor) else 0 for t in outs]


@lru_cache(maxsize=1024)
def _probe(func: Any, frozen: tuple) -> tuple[list[int], int]:
    from torch.profiler import ProfilerActivity, profile

    # the RNN kernel returns a workspace only in grad mode (its backward runs without); inputs
    # need no grad, so no graph is recorded
    with unset_fake_temporarily(), torch.enable_grad():
        bound = {k: _real(v) for k, v in frozen}
        if func is RNN_BACKWARD:  # a real forward provides the workspace the backward reads
            to_backward = {v: k for k, v in _BACKWARD_TO_FORWARD.items()}
            fwd = {k: bound[to_backward.get(k, k)] for k in _FORWARD_ARGS}
            fwd["train"] = True
            output, hy, cy, workspace = RNN_FORWARD(**fwd)
            bound.update(output=output, hy_=hy, cy_=cy, workspace=workspace)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = func(**bound)
        sizes = _bytes(out)
    return sizes, profiled_peak(prof)


def profiled_peak(prof: Any) -> int:
    """The most bytes live at once among the allocations a CPU `torch.profiler.profile(...,
    profile_memory=True)` recorded (its "[memory]" events, replayed in time order)."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return int(peak)
