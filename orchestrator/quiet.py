"""What Ray, Tune and torch print on their own: silenced unless `--verbose`.

Set as environment defaults (a value the user exported wins) before Ray is first imported, because
Ray reads them at import (`RAY_LOGGER_LEVEL`: the default `logging_level` of ray.init, so its token
WARNING and "Started a local Ray instance" go) or at first use:
- TUNE_PRINT_ALL_TRIAL_ERRORS=0: Tune logs each failed attempt's traceback; the console prints one
  line per failure instead (the traceback is in the store, `error_traceback`).
- KINETO_LOG_LEVEL=99: torch's profiler (Kineto, used by the memory estimate) prints
  `USDT ... profiler_start/stop` and `ERROR ... gpuGetDeviceCount failed with code 35` to stderr
  from C++ whatever Python's logging says; 99 is above its highest level.
Tune's own status tables are off by RunConfig(verbose=0) (runner.build_tuner) and
RAY_AIR_NEW_OUTPUT=0 (cluster.ray_init); "Wrote the latest version ..." is an INFO of the `ray`
logger, below RAY_LOGGER_LEVEL.
Python warnings Ray raises with `warnings.warn` pass by the `ray` logger: QUIET_WARNINGS filters
them (OptunaSearch's "Define-by-run function ... took N seconds": the memory planner runs inside
the define-by-run function on purpose, orchestrator/search.py).
One Tune warning matters to the user: no trial can start because the cluster lacks what a trial
asks for. It is rewritten into one plain line (`waiting: ...`, `WaitingLine`), once per message.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

QUIET_ENV = {
    "RAY_LOGGER_LEVEL": "error",
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",
    "KINETO_LOG_LEVEL": "99",
}


QUIET_WARNINGS = (r"Define-by-run function passed in the `space` argument took",)
WAITING_LOGGER = "ray.tune.execution.insufficient_resources_manager"
_ASKED = re.compile(r"You asked for (?P<cpus>[\d.]+) CPUs and (?P<gpus>[\d.]+) GPUs per trial, "
                    r"but the cluster only has (?P<ccpus>[\d.]+) CPUs and (?P<cgpus>[\d.]+) GPUs")
_WAITED = re.compile(r"within the last (?P<seconds>\d+) seconds")


def waiting_line(message: str) -> str:
    """Tune's insufficient-resources warning as one plain line."""
    asked, waited = _ASKED.search(message), _WAITED.search(message)
    line = "waiting: no trial has started" + (f" for {waited['seconds']} s" if waited else "")
    if asked:
        line += (f"; a trial asks for {asked['cpus']} CPUs and {asked['gpus']} GPUs, the cluster "
                 f"has {asked['ccpus']} CPUs and {asked['cgpus']} GPUs")
    return line + (" (lower resources.cpus_per_trial / gpus_per_trial, or add nodes; ignore "
                   "this while a cluster autoscales)")


class WaitingLine(logging.Handler):
    """Prints `waiting_line` of each distinct warning once (to stderr: it is a warning)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        line = waiting_line(record.getMessage())
        if line not in self.seen:
            self.seen.add(line)
            print(line, file=sys.stderr, flush=True)


def quiet_logs(verbose: bool) -> None:
    """Silence Ray / Tune / torch chatter for this process unless `verbose`."""
    if verbose:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    # Ray imported already (a test, an embedding program): ray.init resets the `ray` logger's
    # level from the default it bound at import, so set it again after ray.init too.
    logging.getLogger("ray").setLevel(logging.ERROR)
    waiting = logging.getLogger(WAITING_LOGGER)  # below `ray` (ERROR): its warning, rewritten
    waiting.setLevel(logging.WARNING)
    waiting.propagate = False
    if not any(isinstance(h, WaitingLine) for h in waiting.handlers):
        waiting.addHandler(WaitingLine())
