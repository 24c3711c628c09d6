"""Trace one training step on fake tensors and record the live bytes after every allocation.

How it works (no real memory is allocated for the traced model):
- The model is built on the meta device (modules that deepcopy layers, such as
  nn.TransformerEncoder, cannot be built inside FakeTensorMode), or on the CPU when its constructor
  needs real values; then, inside FakeTensorMode, every parameter and buffer is replaced by a fake
  CPU tensor of the same shape and dtype.
- `LiveBytes`, a TorchDispatchMode stacked above the FakeTensorMode, sees every aten op (forward,
  autograd backward, optimizer). Each new storage an op returns is counted once (views and in-place
  results share a storage) and uncounted when the storage dies (weakref.finalize), so `timeline` is
  the live bytes after each allocation, exactly what the c10 allocator holds.
- The step is the training loop's (trainables/members.py): two micro-batches (forward, cross
  entropy, backward; the gradients of the first are live during the second), grad-norm clipping,
  optimizer step, zero_grad(set_to_none=True); run twice so that the second step runs with the
  optimizer state already allocated (steady state).
- Corrections, by the device the estimate is for (`target`):
  "cpu": the fake CPU LSTM kernels report neither oneDNN's workspace (0 bytes) nor its in-call
  scratchpad, and the fake convolutions none of oneDNN's in-call reorders and scratchpad;
  trainables/memory/kernels.py takes them from the real kernel, once per shapes.
  "cuda": cuDNN's RNN reserve space (kept for the backward) and workspace (during a call), and a
  bounded convolution-workspace allowance, from the formulas of trainables/memory/cuda_terms.py;
  one real step corrects what they miss (memory/estimate.py: calibrate).
  "bare": none of these (the fake kernels as they are; bench/gpu_check measures the terms
  against it).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from trainables.memory.cuda_terms import (
    conv_workspace_bytes,
    rnn_reserve_bytes,
    rnn_workspace_bytes,
)
from trainables.memory.kernels import (
    CONV_FORWARD,
    PROBED_OPS,
    RNN_BACKWARD,
    RNN_FORWARD,
    kernel_memory,
)

TRACE_DEVICE = torch.device("cpu")  # fake CUDA needs a driver; traces use fake CPU tensors
# the device an estimate is for (the trace itself is always CPU); "bare": no device term at all
# (what bench/gpu_check compares the terms against)
TARGETS = ("cpu", "cuda", "bare")
_SCALAR = torch.ops.aten._local_scalar_dense.default


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of live storages created by the ops it sees; see the module docstring."""

    def __init__(self, target: str = "cpu") -> None:
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"target {target!r}: expected one of {TARGETS}")
        self.target = target
        self.live = 0
        self.peak = 0
        self.timeline: list[int] = []
        self.phase_peaks: dict[str, int] = {}
        self.phase = "setup"
        self.scalar_stub = False  # optimizer phase: .item() of a fake step counter -> 1
        self._sizes: dict[int, int] = {}

    def count(self, t: torch.Tensor, nbytes: int | None = None) -> None:
        st = t.untyped_storage()
        key = st._cdata
        if key in self._sizes:
            return
        n = int(st.nbytes()) if nbytes is None else nbytes
        self._sizes[key] = n
        self.live += n
        weakref.finalize(st, self._free, key)
        self.mark(self.live)

    def mark(self, live: int) -> None:
        """Record a moment holding `live` bytes (after an allocation, or inside a kernel)."""
        self.timeline.append(live)
        self.peak = max(self.peak, live)
        self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, 0), live)

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func is _SCALAR and self.scalar_stub:
            return 1.0 if args[0].dtype.is_floating_point else 1
        live0 = self.live
        out = func(*args, **kwargs)
        tensors = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if func in PROBED_OPS and self.target == "cpu":
            sizes, in_call = kernel_memory(func, args, kwargs)
            for t, n in zip(tensors, sizes):
                self.count(t, n)
            self.mark(live0 + in_call)  # the kernel's scratchpad, freed before it returns
        elif func in PROBED_OPS and self.target == "cuda":
            self._cuda_terms(func, args, kwargs, tensors)
        for t in tensors:
            self.count(t)
        return out

    def _cuda_terms(self, func, args: tuple, kwargs: dict, tensors: list) -> None:  # noqa: ANN001
        """cuDNN's RNN reserve space (the forward's workspace output, kept for the backward) and
        in-call workspace; a convolution's workspace allowance (cuda_terms.py)."""
        names = [a.name for a in func._schema.arguments]
        bound = {**dict(zip(names, args)), **kwargs}
        if func in (RNN_FORWARD, RNN_BACKWARD):
            x = bound["input"]
            batch, steps = (x.shape[0], x.shape[1]) if bound["batch_first"] else x.shape[1::-1]
            shape = (bound["mode"], steps, batch, bound["hidden_size"], x.element_size())
            if func is RNN_FORWARD:
                self.count(tensors[3], rnn_reserve_bytes(*shape))  # the fake workspace: 0 B
            for t in tensors:
                self.count(t)
            self.mark(self.live + rnn_workspace_bytes(*shape))
            return
        x, w = bound["input"], bound["weight"]
        out_shape = (tuple(tensors[0].shape) if func is CONV_FORWARD
                     else tuple(bound["grad_output"].shape))
        shapes = (tuple(x.shape), tuple(w.shape), out_shape)
        if bound["transposed"]:  # the output plays the input's part
            shapes = (out_shape, tuple(w.shape), tuple(x.shape))
        for t in tensors:
            self.count(t)
        self.mark(self.live + conv_workspace_bytes(*shapes, x.element_size()))


def _fake_like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, device=TRACE_DEVICE)


def _swap_to_fake(model: nn.Module) -> None:
    """Replace every parameter and buffer by a fake CPU tensor (call inside the fake mode)."""
    done: dict[int, torch.Tensor] = {}  # tied weights stay tied
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                if id(p) not in done:
                    done[id(p)] = nn.Parameter(_fake_like(p), requires_grad=p.requires_grad)
                module._parameters[name] = done[id(p)]
        for name, b in list(module._buffers.items()):
            if b is not None:
                if id(b) not in done:
                    done[id(b)] = _fake_like(b)
                module._buffers[name] = done[id(b)]


def build_meta(factory: Callable[[], nn.Module]) -> nn.Module:
    """Build on the meta device (no memory); fall back to the CPU for constructors that compute."""
    try:
        with torch.device("meta"):
            return factory()
    except Exception:  # noqa: BLE001 -- e.g. .item()/numpy() on a meta tensor in __init__
        return factory()


@dataclass
class Trace:
    batch: int
    peak: int
    timeline: list[int]
    phase_peaks: dict[str, int]
    params_bytes: int  # parameters and buffers of one member
    grads_bytes: int
    optimizer_bytes: int
    input_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)


def step_loss(out: Any, y: torch.Tensor) -> torch.Tensor:
    """The loss of one micro-batch: cross entropy on (B, C) logits, else the mean of the output
    (a front-end benchmarked alone); a tuple output uses its first element."""
    if isinstance(out, tuple | list):
        out = out[0]
    if out.dim() == 2:
        return F.cross_entropy(out.float(), y, reduction="none").sum() / y.shape[0]
    return out.float().mean()


def make_optimizer(model: nn.Module, optimizer: str) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=0.01)
    raise ValueError(f"unknown optimizer {optimizer!r}; valid: adamw, sgd")


def make_inputs(
    input_shape: tuple[int, ...], batch: int, n_classes: int, device: torch.device, real: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, lengths, y) of a batch at the longest input (every length = the full length)."""
    shape = (batch, *input_shape)
    x = torch.randn(shape, device=device) if real else torch.empty(shape, device=device)
    lengths = torch.full((batch,), input_shape[0], dtype=torch.long, device=device)
    y = torch.arange(batch, device=device) % max(1, n_classes)
    return x, lengths, y


def run_steps(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    amp_dtype: torch.dtype | None,
    grad_clip: float = 1.0,
    steps: int = 2,
    micro: int = 2,
    on_phase: Callable[[str], None] | None = None,
) -> None:
    """The training loop's step (see the module docstring), shared by the trace and the measure."""
    x, lengths, y = inputs
    phase = on_phase or (lambda _name: None)
    for _ in range(steps):
        phase("forward_backward")
        for _ in range(micro):
            with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = model(x, lengths)
            loss = step_loss(out, y)
            del out
            loss.backward()
            del loss
        phase("optimizer")
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)


@contextmanager
def _tracing(target: str) -> Iterator[tuple[FakeTensorMode, LiveBytes]]:
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    live = LiveBytes(target)
    with fake, live:
        yield fake, live


def _storage_bytes(tensors: list[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[st._cdata] = int(st.nbytes())
    return sum(seen.values())


def trace_step(
    factory: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    batch: int,
    *,
    n_classes: int,
    optimizer: str = "adamw",
    amp: bool = False,
    target: str = "cpu",
) -> Trace:
    """Trace two steady training steps at `batch` on fake tensors, with the corrections of the
    device `target` ("cpu" or "cuda"); see the module docstring."""
    model = build_meta(factory)
    model.train()
    with _tracing(target) as (_fake, live):
        _swap_to_fake(model)
        params_bytes = _storage_bytes([*model.parameters(), *model.buffers()])
        inputs = make_inputs(input_shape, batch, n_classes, TRACE_DEVICE, real=False)
        input_bytes = _storage_bytes(list(inputs))
        opt = make_optimizer(model, optimizer)

        def on_phase(name: str) -> None:
            live.phase = name
            live.scalar_stub = name == "optimizer"

        amp_dtype = torch.bfloat16 if amp else None
        run_steps(model, opt, inputs, amp_dtype=amp_dtype, on_phase=on_phase)
        grads_bytes = _storage_bytes([p for p in model.parameters() if p.requires_grad])
        state = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        optimizer_bytes = _storage_bytes(state)
    return Trace(
        batch=batch,
        peak=live.peak,
        timeline=live.timeline,
        phase_peaks=dict(live.phase_peaks),
        params_bytes=params_bytes,
        grads_bytes=grads_bytes,
        optimizer_bytes=optimizer_bytes,
        input_bytes=input_bytes,
    )
