"""Peak-memory estimate of one training step, and the out-of-memory check."""

from __future__ import annotations

import torch


def is_oom(exc: BaseException) -> bool:
    """True when `exc` is an out-of-memory error from torch (CUDA or CPU allocator)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    if isinstance(exc, RuntimeError) and exc.args and isinstance(exc.args[0], str):
        text = exc.args[0]
        return "out of memory" in text.lower() or "DefaultCPUAllocator: can't allocate" in text
    return False
