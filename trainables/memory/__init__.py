"""Memory of a training step: estimated on fake tensors, measured for real, turned into a
micro-batch, and the out-of-memory retry.

- estimate.py  the fake-tensor estimate (`estimate_step_memory`, `estimate_trial_memory`) and its
               calibration against a measured peak
- trace.py     the traced training step itself (FakeTensorMode + a dispatch mode counting bytes)
- rnn.py       what the fake LSTM kernels do not report (oneDNN workspace, scratchpad)
- measure.py   the same step measured for real, in a fresh subprocess
- plan.py      the micro-batch and accumulation that fit a budget (`plan_micro_batch`)
- oom.py       `is_oom` and `retry_on_oom`, the one halve-and-redo loop (training and evaluation)
"""

from __future__ import annotations

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
from trainables.memory.measure import measure_in_process, measure_step_peak, measure_step_peaks
from trainables.memory.oom import is_oom, retry_on_oom
from trainables.memory.plan import (
    MemoryPlan,
    choose_micro_batch,
    estimate_as_run,
    plan_for_shape,
    plan_micro_batch,
)
from trainables.memory.rnn import RNN_OPS, rnn_memory
from trainables.memory.trace import (
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
    "RNN_OPS", "TRACE_BATCHES", "TRACE_DEVICE", "LiveBytes", "MemoryEstimate", "MemoryPlan",
    "Trace", "build_meta", "calibrate", "choose_micro_batch", "estimate_as_run",
    "estimate_module_memory",
    "estimate_step_memory", "estimate_trial_memory", "fit_traces", "is_oom", "make_inputs",
    "make_optimizer", "measure_in_process", "measure_step_peak", "measure_step_peaks",
    "plan_for_shape", "plan_micro_batch", "retry_on_oom", "rnn_memory", "run_steps", "step_loss",
    "trace_step", "upper_envelope", "with_frozen_model",
]
