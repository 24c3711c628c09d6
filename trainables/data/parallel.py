"""The process pool of a cold first run: synthetic generation, featurizing and the eGeMAPS
baseline's openSMILE extraction spread over the cores (os.cpu_count() workers).

`parallel_map(fn, items)` is `[fn(x) for x in items]`, in order, computed by worker processes;
every caller splits its work so that each item's result does not depend on the others (one
generator per utterance, featurizing batches cut where the serial path cuts them, openSMILE per
utterance), so the result is identical to the serial path's (tests/trainables/data/
test_parallel.py). The workers are forked from the calling process: they start in milliseconds
with everything it imported (a spawned or forkserver worker imports torch again, seconds of CPU
each, and re-runs an unguarded `__main__`). They only compute (numpy, scipy, openSMILE; torch on
one thread, `_worker_start`) and hand back numpy arrays; none touches what the parent's other
threads hold (Ray's sockets, the console), so forking beside the Tune driver's threads is safe
for them. `background=True` puts the workers below the trials (`_worker_start`), so work done
beside them takes only the CPU they leave idle.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

def default_workers() -> int:
    """Worker processes of a pool: one per core."""
    return max(1, os.cpu_count() or 1)


def _worker_start(background: bool, parent: int) -> None:
    """Each worker: dies with its `parent` (_die_with); torch on one thread (the parent's OpenMP
    pool does not survive the fork: a torch op on several threads would wait forever for it;
    what torch's DataLoader workers do too); in the `background`, the lowest priority it can
    take (_to_background)."""
    import sys

    _die_with(parent)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if background:
        _to_background()


def _die_with(parent: int) -> None:
    """Linux: SIGKILL for this worker when the thread that forked it ends (prctl
    PR_SET_PDEATHSIG; parallel_map's caller, alive until the pool is done). Without it, a
    driver killed with SIGKILL left its workers blocked on the pool's queue for good: a
    background worker is in a session of its own, where no terminal's signal reaches it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: no such call
        return
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(1)


def _to_background() -> None:
    """Nice 19; SCHED_IDLE where the OS has it (Linux: runs only on CPU nothing else wants); and
    a session of its own whose autogroup is at nice 19. Ray starts the trials at nice 15
    (RAY_worker_niceness), so the former nice 10 put the baseline above them; and Linux shares
    the CPU fairly between sessions (CONFIG_SCHED_AUTOGROUP) before nice or SCHED_IDLE count
    inside one, while Ray's raylet runs the trials in a session of its own: in the driver's
    session the background still took half the CPU from them (bench/cold_start.py)."""
    os.nice(19 - os.nice(0))
    if hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:  # a sandbox that forbids it: nice 19 is what is left
            pass
    autogroup = "/proc/self/autogroup"
    if os.path.exists(autogroup):
        try:
            os.setsid()  # a forked worker is no group leader: this succeeds
            with open(autogroup, "w") as handle:
                handle.write("19")
        except OSError:  # no autogroup scheduling here: nothing to leave
            pass


def parallel_map(fn: Callable[[T], R], items: Sequence[T], *, workers: int | None = None,
                 background: bool = False, done: Callable[[int], None] | None = None,
                 stop: threading.Event | None = None) -> list[R]:
    """`[fn(x) for x in items]` over `workers` processes (default: one per core; 1 or a single
    item: in this process). `fn` must be a module-level function (pickled by name); `done(k)` is
    called in this process after the k-th result (in order) arrived, e.g. for progress lines.
    Once another thread sets `stop`, the items not started are dropped and CancelledError is
    raised at the next result: background workers leave the terminal's session, so Ctrl-C
    does not reach them (an interrupted sweep's baseline, orchestrator/baseline_run.py)."""
    n = min(default_workers() if workers is None else int(workers), len(items))

    def arrived(k: int) -> None:
        if done is not None and k:
            done(k)
        if stop is not None and stop.is_set():
            raise CancelledError(f"stopped with {k} of {len(items)} items done")

    arrived(0)
    if n <= 1:
        out = []
        for k, item in enumerate(items, 1):
            out.append(fn(item))
            arrived(k)
        return out
    context: Any = multiprocessing.get_context("fork")
    results: list[R] = []
    with ProcessPoolExecutor(n, mp_context=context, initializer=_worker_start,
                             initargs=(background, os.getpid())) as pool:
        try:
            for k, result in enumerate(pool.map(fn, items), 1):
                results.append(result)
                arrived(k)
        except BaseException:  # stopped, a worker's error, Ctrl-C: the items not started are
            pool.shutdown(wait=True, cancel_futures=True)  # dropped, the running ones finish
            raise
    return results


def split(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """`items` in consecutive parts of `size` (the last one shorter)."""
    return [items[i: i + size] for i in range(0, len(items), max(1, size))]
