"""The CUDA-side memory a fake CPU trace cannot see, from formulas (CUDA targets only).

The trace runs on fake CPU tensors, so it sees the CPU kernels' ops. On a GPU the same layers run
cuDNN, which allocates through PyTorch's caching allocator (counted by max_memory_allocated):
- RNN (aten/src/ATen/native/cudnn/RNN.cpp, `_cudnn_rnn`): a RESERVE space, written by the forward
  and kept for the backward (cudnnGetRNNTrainingReserveSize / cudnnGetRNNTempSpaceSizes), and a
  WORKSPACE, live during the forward and backward calls only. NVIDIA does not document how either
  is sized. The formulas here are those of MIOpen, AMD's open implementation of the same API
  (src/rnn.cpp, RNNDescriptor::GetReserveSize and GetWorkspaceSize), per layer and direction, for
  T steps, batch B, hidden size H and element size e:
      workspace = scale * T * B * H * e        scale: LSTM 6, GRU 4, RNN 1
      reserve   = 2 * scale * T * B * H * e    (LSTM: scale * T * B * H * e + T * B * H * e)
  so an LSTM layer keeps 7 T B H e and needs 6 T B H e more while a call runs. A published cuDNN
  figure of one shape (pytorch/pytorch#2895: reserve 864,000,000 B for GRU vs 736,000,000 B for
  LSTM, ratio 1.17) orders the two the same way (MIOpen: 8 / 7 = 1.14).
- Convolution: cuDNN's algorithms need a workspace of their own; the GEMM algorithm "expresses the
  convolution as an explicit matrix product" and stores the unfolded input (cuDNN API reference,
  cudnnConvolutionFwdAlgo_t): N * C_in * prod(kernel) * prod(output positions) * e bytes. Other
  algorithms need less or (FFT) more, so the allowance is that matrix, bounded by
  DEFAULT_CONV_WORKSPACE_CAP (1 GiB). PyTorch caps cuDNN's convolution workspace per
  allocation with the environment variable CUDNN_CONV_WSCAP_DBG (MiB; docs: "CUDA environment
  variables"), so `CUDNN_CONV_WSCAP_DBG=1024` on the GPU nodes makes the bound hold there.
None of this is measured yet: bench/gpu_check part "terms" measures each against a real CUDA step
(docs/gpu.md, "CUDA terms of the estimate").
"""

from __future__ import annotations

import math

DEFAULT_CONV_WORKSPACE_CAP = 2**30
# MIOpen's workspaceScale per RNN mode (aten.mkldnn_rnn_layer's `mode`: ideep's rnn_kind, the
# same numbering as miopenRNNMode_t and cudnnRNNMode_t)
RNN_WORKSPACE_SCALE = {0: 1, 1: 1, 2: 6, 3: 4}  # RNN_RELU, RNN_TANH, LSTM, GRU
LSTM_MODE = 2


def rnn_workspace_bytes(mode: int, steps: int, batch: int, hidden: int, element_bytes: int) -> int:
    """cuDNN RNN workspace of one layer and direction (MIOpen GetWorkspaceSize)."""
    return RNN_WORKSPACE_SCALE[mode] * steps * batch * hidden * element_bytes


def rnn_reserve_bytes(mode: int, steps: int, batch: int, hidden: int, element_bytes: int) -> int:
    """cuDNN RNN reserve space of one layer and direction (MIOpen GetReserveSize): what the
    forward keeps for the backward."""
    scale = RNN_WORKSPACE_SCALE[mode]
    units = scale + 1 if mode == LSTM_MODE else 2 * scale
    return units * steps * batch * hidden * element_bytes


def conv_workspace_bytes(
    input_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    element_bytes: int,
    cap: int = DEFAULT_CONV_WORKSPACE_CAP,
) -> int:
    """The convolution-workspace allowance: the GEMM algorithm's unfolded input, N * C_in *
    prod(kernel) * prod(output positions) * e, at most `cap` bytes. Shapes are (N, C, *spatial)
    for input and output and (C_out, C_in / groups, *kernel) for the weight (a transposed
    convolution's output plays the input's part: pass its shapes swapped)."""
    n, c_in = input_shape[0], input_shape[1]
    unfolded = n * c_in * math.prod(weight_shape[2:]) * math.prod(output_shape[2:])
    return min(int(cap), unfolded * element_bytes)
