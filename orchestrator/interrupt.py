"""Ctrl-C and SIGTERM (a scheduler: SLURM, Kubernetes) during a sweep: stop cleanly, exit 130 /
143, and say that the same command continues the sweep.

While Tune runs (`stop_on_signals`), the first SIGINT or SIGTERM only sets `SignalStop.signum`.
Tune asks its stopper's `stop_all()` at every step of its loop, so it then stops every trial,
writes its experiment state and fit() returns: trials already recorded are untouched, and a
trial that was running leaves no trials row (rows are written when a trial ends), so the next run
replaces it (store/result_store.py: repair; docs/design.md, "Resume"). Tune's own SIGINT handler
is off (TUNE_DISABLE_SIGINT_HANDLER): it would print `Tuner.restore(...)` advice, which is wrong
here (resume reads the store). A second signal gets the handler that was there before (a
KeyboardInterrupt; Ray's SIGTERM teardown). Outside fit() (data preparation), SIGINT is Python's
KeyboardInterrupt and SIGTERM raises `Interrupted` (`sigterm_raises`); nothing is recorded then.

A signal to the driver's whole process group reaches the driver alone: the private Ray's
processes run in a session of their own (cluster.py `_signals_reach_the_driver_first`). A GCS of
the private Ray that dies anyway (killed on its own, out of memory) would leave the driver
waiting for it for a minute and then exit 1 without a word: `gcs_watch` ends the sweep within a
second instead, with the continue line (exit 128 + the signal that killed the GCS, else 1).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ray.tune import Stopper

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, as shells report
_TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"


class Interrupted(BaseException):  # noqa: N818 -- like KeyboardInterrupt, not an error
    """SIGTERM outside Tune's loop (BaseException: no `except Exception` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalStop(Stopper):
    """Stops the whole experiment once the driver got SIGINT / SIGTERM (`signum` set)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False  # no trial stops on its own result

    def stop_all(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_on_signals(stop: SignalStop) -> Iterator[None]:
    """Around tuner.fit(): the first SIGINT / SIGTERM sets `stop.signum` (see the module
    docstring); the previous handlers are back afterwards, and after the first signal."""
    watched = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.getsignal(signum) for signum in watched}
    tune_env = os.environ.get(_TUNE_SIGINT_ENV)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def on_signal(signum: int, frame: Any) -> None:
        stop.signum = signum
        restore()

    os.environ[_TUNE_SIGINT_ENV] = "1"  # read by tune.run when fit() starts
    for signum in watched:
        signal.signal(signum, on_signal)
    try:
        yield
    finally:
        restore()
        if tune_env is None:
            os.environ.pop(_TUNE_SIGINT_ENV, None)
        else:
            os.environ[_TUNE_SIGINT_ENV] = tune_env


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within: SIGTERM raises `Interrupted` (SIGINT already raises KeyboardInterrupt)."""

    def on_sigterm(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def same_command(argv: list[str] | None = None) -> str:
    """The command line this process was started with, to paste again (`python sweep.py ...`
    or `sersweep ...`)."""
    argv = list(sys.argv if argv is None else argv)
    program = argv[0] if argv else "sweep.py"
    head = ["python", program] if program.endswith(".py") else [os.path.basename(program)]
    return shlex.join(head + argv[1:])


def interrupted_line(signum: int, recorded: int, total: int, sweep_dir: str) -> str:
    """The one line printed after an interrupted run."""
    name = signal.Signals(signum).name
    return (f"interrupted ({name}): {recorded} of {total} trials recorded in {sweep_dir}; "
            f"the same command continues the sweep: {same_command()}")


GCS_POLL_S = 0.5


def _private_gcs_process() -> Any:
    """The Popen of the GCS this driver started (a private Ray), else None (joined a cluster)."""
    from ray._private import ray_constants, worker

    node = worker._global_node
    infos = getattr(node, "all_processes", {}).get(ray_constants.PROCESS_TYPE_GCS_SERVER)
    return infos[0].process if infos else None


def lost_ray_line(returncode: int, recorded: int, total: int, sweep_dir: str) -> str:
    """The one line printed when the private Ray's GCS exited under the driver."""
    how = (f"killed by {signal.Signals(-returncode).name}" if returncode < 0
           else f"exit status {returncode}")
    return (f"stopped: the private Ray's GCS exited under the driver ({how}); {recorded} of "
            f"{total} trials recorded in {sweep_dir}; the same command continues the sweep: "
            f"{same_command()}")


@contextlib.contextmanager
def gcs_watch(recorded: Callable[[], int], total: int, sweep_dir: str) -> Iterator[None]:
    """Within: a daemon thread polls the private Ray's GCS process; when it exits, the driver
    prints `lost_ray_line` and exits at once (128 + signal, else 1): Tune cannot stop its trials
    without a GCS, and what is recorded is already in the store. Nothing when Ray was joined."""
    process = _private_gcs_process()
    if process is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(GCS_POLL_S):
            code = process.poll()
            if code is None:
                continue
            if done.is_set():  # the run ended meanwhile: Ray's own shutdown
                return
            print(lost_ray_line(code, recorded(), total, sweep_dir), file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(128 - code if code < 0 else 1)

    thread = threading.Thread(target=watch, name="sersweep-gcs-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
