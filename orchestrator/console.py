"""A compact live view of a sweep: one line per finished trial plus a status line. A trial's
status is store/schema.py's trial_status, so the console shows what the store records.

Replaces Ray Tune's default wall of logs (`--verbose` brings those back).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ray.tune import Callback

from orchestrator.store import schema
from orchestrator.store.rows import error_text
from trainables import names


class ConsoleCallback(Callback):
    """Counts running / done / pruned / failed trials, tracks the best, prints an ETA."""

    def __init__(
        self, *, total: int, already: int, mode: str = "max", stream: TextIO | None = None
    ) -> None:
        self.total = total
        self.already = already
        self.sign = 1.0 if mode == "max" else -1.0
        self.stream = stream  # None: sys.stdout at print time (Tune pickles callbacks)
        self.started = time.monotonic()
        self.running: set[str] = set()
        self.last: dict[str, dict[str, Any]] = {}
        self.finished = 0
        self.failed = 0
        self.pruned = 0
        self.best: tuple[float, str, dict[str, Any]] | None = None

    def _say(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def _params(self, config: dict[str, Any]) -> dict[str, Any]:
        return {
            key.removeprefix(schema.OPTUNA_PARAMS_PREFIX): value
            for key, value in config.items()
            if key.startswith(schema.OPTUNA_PARAMS_PREFIX)
        }

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        self.last[trial.trial_id] = result

    def _finish(self, trial: Any, status: str) -> None:
        self.running.discard(trial.trial_id)
        self.finished += 1
        result = self.last.pop(trial.trial_id, {})
        objective = result.get(names.OBJECTIVE)
        params = self._params(trial.config)
        if objective is not None and status not in schema.FAILED_STATUSES:
            if self.best is None or self.sign * objective > self.sign * self.best[0]:
                self.best = (float(objective), trial.trial_id, params)
        shown = "-" if objective is None else f"{objective:.3f}"
        done = self.already + self.finished
        runtime = schema.report_json(result, names.RUNTIME_JSON, {})
        micro = runtime.get("micro_batch")
        self._say(
            f"[{done}/{self.total}] {trial.trial_id} {status:<9} objective={shown} "
            f"epochs={result.get(names.EPOCH, 0)} micro_batch={micro} {_short(params)}"
        )
        self._status()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        status = schema.trial_status(self.last.get(trial.trial_id, {}))  # as the store records
        self.pruned += status == schema.PRUNED
        self._finish(trial, status)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed += 1
        self._finish(trial, schema.trial_status(self.last.get(trial.trial_id, {}),
                                                error_text(trial)))

    def _status(self) -> None:
        elapsed = time.monotonic() - self.started
        todo = self.total - self.already - self.finished
        eta = elapsed / self.finished * todo if self.finished else float("nan")
        best = "-" if self.best is None else f"{self.best[0]:.3f} ({self.best[1]})"
        self._say(
            f"    running={len(self.running)} done={self.finished - self.failed - self.pruned} "
            f"pruned={self.pruned} failed={self.failed} best={best} "
            f"elapsed={elapsed:.0f}s eta={eta:.0f}s"
        )

    def close(self) -> None:
        if self.best is not None:
            self._say(f"best objective {self.best[0]:.4f}: trial {self.best[1]} {self.best[2]}")


def _short(params: dict[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key.split('.')[-1]}={shown}")
    return " ".join(parts)
