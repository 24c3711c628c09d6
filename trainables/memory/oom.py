"""Out-of-memory errors: recognising one (`is_oom`) and the ONE retry loop that halves the
micro-batch and redoes the work (`retry_on_oom`), used by training (members.py, phase "train")
and by evaluation (member_eval.py, phase "eval")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import torch

T = TypeVar("T")


class Halvable(Protocol):
    """What the retry needs of a micro-batch (trainables/batching.py: MicroBatch)."""

    size: int

    def halve(self, exc: BaseException, *, member: int, epoch: int, phase: str) -> None: ...


def is_oom(exc: BaseException) -> bool:
    """True when `exc` is an out-of-memory error from torch (CUDA or CPU allocator)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    if isinstance(exc, RuntimeError) and exc.args and isinstance(exc.args[0], str):
        text = exc.args[0]
        return "out of memory" in text.lower() or "DefaultCPUAllocator: can't allocate" in text
    return False


def retry_on_oom(
    attempt: Callable[[int], T],
    micro: Halvable,
    *,
    member: int,
    epoch: int,
    phase: str,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """`attempt(micro.size)`; on an out-of-memory error halve `micro` (recorded in its events;
    TrainingError at size 1), call `before_retry` (e.g. drop the partial gradients, empty the
    CUDA cache) and attempt again. Any other error propagates unchanged."""
    while True:
        try:
            return attempt(micro.size)
        except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError
            if not is_oom(exc):
                raise
            err = exc
        # outside the except block, so the failed attempt's tensors (held by the traceback's
        # frames) can be freed before the retry
        micro.halve(err, member=member, epoch=epoch, phase=phase)
        del err
        if before_retry is not None:
            before_retry()
