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
Tune's warning that no trial can start for lack of resources goes too: the console says it
once, when Ray has not placed a waiting trial (orchestrator/console.py: waiting_line).
"""

from __future__ import annotations

import logging
import os
import warnings

QUIET_ENV = {
    "RAY_LOGGER_LEVEL": "error",
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",
    "KINETO_LOG_LEVEL": "99",
}


QUIET_WARNINGS = (r"Define-by-run function passed in the `space` argument took",)


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
