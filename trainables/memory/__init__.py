"""Memory of a training step: estimated on fake tensors, measured for real, turned into a
micro-batch, and the out-of-memory retry.

- estimate.py  the fake-tensor estimate (`estimate_step_memory`, `estimate_trial_memory`) and its
               calibration against a measured peak
- trace.py     the traced training step itself (FakeTensorMode + a dispatch mode counting bytes)
- kernels.py   what the fake CPU kernels do not report (oneDNN's LSTM workspace, the LSTM and
               convolution scratch), from the real kernel (CPU targets)
- cuda_terms.py  cuDNN's RNN reserve space and workspace, a convolution-workspace allowance
               (CUDA targets)
- measure.py   the same step measured for real, in a fresh subprocess
- plan.py      the micro-batch and accumulation that fit a budget (`plan_micro_batch`)
- oom.py       `is_oom` and `retry_on_oom`, the one halve-and-redo loop (training and evaluation)
"""

from __future__ import annotations

from trainables.memory.cuda_terms import (
    conv_workspace_bytes,
    rnn_reserve_bytes,
    rnn_workspace_bytes,
)
from trainables.memory.estimate import (
    TRACE_BATCHES,
    MemoryEstimate,
    calibrate,
    estimate_module_memory,
    estimate_step_memory,
    estimate_trial_memory,
    fit_traces,
    upper_envelope,
    with_frozen_model,
)
from trainables.memory.kernels import PROBED_OPS, kernel_memory
from trainables.memory.measure import measure_in_process, measure_step_peak, measure_step_peaks
from trainables.memory.oom import is_oom, retry_on_oom
from trainables.memory.plan import (
    MemoryPlan,
    choose_micro_batch,
    estimate_as_run,
    estimate_for_shape,
    plan_for_shape,
    plan_micro_batch,
)
from trainables.memory.trace import (
    TARGETS,
    TRACE_DEVICE,
    LiveBytes,
    Trace,
    build_meta,
    make_inputs,
    make_optimizer,
    run_steps,
    step_loss,
    trace_step,
)

__all__ = [
    "PROBED_OPS", "TARGETS", "TRACE_BATCHES", "TRACE_DEVICE", "LiveBytes", "MemoryEstimate",
    "MemoryPlan", "Trace", "build_meta", "calibrate", "choose_micro_batch", "conv_workspace_bytes",
    "estimate_as_run", "estimate_for_shape", "estimate_module_memory", "estimate_step_memory",
    "estimate_trial_memory",
    "fit_traces", "is_oom", "kernel_memory", "make_inputs", "make_optimizer",
    "measure_in_process", "measure_step_peak", "measure_step_peaks", "plan_for_shape",
    "plan_micro_batch", "retry_on_oom", "rnn_reserve_bytes", "rnn_workspace_bytes", "run_steps",
    "step_loss",
    "trace_step", "upper_envelope", "with_frozen_model",
]
