"""The driver-side Ray Tune callback that records every trial in the store when it ends: the
epoch rows are buffered from each tune.report (`on_trial_result`) and written, with the trial and
member rows, when the trial completes or fails (`_write` -> ResultStore.write_trial).

A result file that cannot be written (disk full, read-only: files.StoreWriteError) stops the
sweep: every later trial would be trained and lost the same way. `write_error` keeps the first
one, `WriteFailureStop` (a Tune stopper) ends the run, and the runner raises it after fit()."""

from __future__ import annotations

import errno
import logging
import os
import re
import time

from ray.tune import Callback, Stopper

from orchestrator.store.files import StoreWriteError
from orchestrator.store.lock import SweepLock, SweepLockLostError
from orchestrator.store.result_store import ResultStore
from orchestrator.store.rows import (
    TrialBuffer,
    checkpoint_path,
    reported_error,
    trial_error,
    trial_gpus,
    trial_rows,
)
from trainables.errors import SersweepError

log = logging.getLogger(__name__)


class StoreCallback(Callback):
    """Driver-side Ray Tune callback: buffers each trial's reports, writes its files at the end.

    The status is schema.trial_status (the console shows the same). `extra` is merged into every
    trial row
    (e.g. {"teacher_sweep": ..., "teacher_trial": ...}); `classes`, the class names, go with
    each member's confusion matrix."""

    def __init__(
        self,
        store: ResultStore,
        param_keys: list[str],
        metric: str,
        mode: str,
        extra: dict | None = None,
        classes: list[str] | None = None,
    ) -> None:
        self.store = store
        self.param_keys = list(param_keys)
        self.metric = metric
        self.mode = mode
        self.extra = dict(extra or {})
        self.classes = None if classes is None else [str(c) for c in classes]
        self.buffers: dict[str, TrialBuffer] = {}
        # the first trial not written: StoreWriteError (the disk) or SweepLockLostError (another
        # driver holds the sweep now): either ends the run (WriteFailureStop)
        # an OSError: Tune's checkpoint disk filled (runner.run turns it into its one line)
        self.write_error: SersweepError | OSError | None = None

    def _buffer(self, trial) -> TrialBuffer:
        if trial.trial_id not in self.buffers:
            self.buffers[trial.trial_id] = TrialBuffer(started_at=time.time())
        return self.buffers[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._buffer(trial)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self._buffer(trial).add(result)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        # a trial that reported its own failure (names.ERROR_REASON) ended "complete" for Tune
        self._write(trial, *reported_error(self._buffer(trial).last))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        error, traceback = trial_error(trial)
        if _DISK_FULL.search(traceback or error or ""):
            # Not the trial's failure: Tune could not write its checkpoint (Tune's folder, ~85 %
            # of a sweep's bytes, fills first). Record nothing, so the same command trains it
            # again once there is space, and stop the run as a store write failure does.
            self.buffers.pop(trial.trial_id, None)
            log.error("trial %s not recorded: the disk under Tune's checkpoints is full",
                      trial.trial_id)
            self.write_error = self.write_error or OSError(errno.ENOSPC,
                                                           os.strerror(errno.ENOSPC))
            return
        self._write(trial, error, traceback)

    def _write(self, trial, error: str | None, error_traceback: str | None) -> None:
        buffer = self.buffers.pop(trial.trial_id, None) or TrialBuffer(started_at=time.time())
        row, epochs, members = trial_rows(
            trial_id=trial.trial_id,
            config=trial.config,
            buffer=buffer,
            param_keys=self.param_keys,
            metric=self.metric,
            mode=self.mode,
            status=None,
            error=error,
            error_traceback=error_traceback,
            trial_gpus=trial_gpus(trial),
            checkpoint_path=checkpoint_path(trial),
            classes=self.classes,
        )
        row.update(self.extra)
        try:
            self.store.write_trial(row, epochs, members)
        except SweepLockLostError as exc:  # fenced out: WriteFailureStop ends the sweep
            self.write_error = self.write_error or exc
        except StoreWriteError as exc:  # the disk: WriteFailureStop ends the sweep
            log.error("trial %s not recorded: %s", trial.trial_id, exc)
            self.write_error = self.write_error or exc
        except Exception:  # never take the sweep down; the console still shows the trial
            log.exception("could not record trial %s in %s", trial.trial_id, self.store.sweep_dir)


# a full disk or quota in a trial's error text (OSError's errno 28 / 122, or their strerror)
_DISK_FULL = re.compile(r"\[Errno (28|122)\]|No space left on device|Disk quota exceeded")


class WriteFailureStop(Stopper):
    """Stops the whole run once `callback` could not write a trial (its `write_error`), or, with
    `lock`, at once when the driver's lease is no longer valid (lost or expired: SweepLock.valid,
    no disk access), so a driver that lost its lease launches nothing more."""

    def __init__(self, callback: StoreCallback, lock: SweepLock | None = None) -> None:
        self.callback = callback
        self.lock = lock

    def __getstate__(self) -> dict:
        # Tune pickles its run config into the experiment folder (for Tuner.restore, which the
        # runner never uses): the lock's heartbeat thread stays with the live object
        return {**self.__dict__, "lock": None}

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False  # no trial stops on its own result

    def stop_all(self) -> bool:
        return self.callback.write_error is not None or (
            self.lock is not None and not self.lock.valid())
