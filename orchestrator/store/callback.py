"""The driver-side Ray Tune callback that records every trial in the store when it ends: the
epoch rows are buffered from each tune.report (`on_trial_result`) and written, with the trial and
member rows, when the trial completes or fails (`_write` -> ResultStore.write_trial)."""

from __future__ import annotations

import logging
import time

from ray.tune import Callback

from orchestrator.store.result_store import ResultStore
from orchestrator.store.rows import (
    TrialBuffer,
    checkpoint_path,
    reported_error,
    trial_error,
    trial_gpus,
    trial_rows,
)

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
        self._write(trial, *trial_error(trial))

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
        except Exception:  # never take the sweep down; the console still shows the trial
            log.exception("could not record trial %s in %s", trial.trial_id, self.store.sweep_dir)

