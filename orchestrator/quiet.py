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
"""

from __future__ import annotations

import logging
import os

QUIET_ENV = {
    "RAY_LOGGER_LEVEL": "error",
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",
    "KINETO_LOG_LEVEL": "99",
}


def quiet_logs(verbose: bool) -> None:
    """Silence Ray / Tune / torch chatter for this process unless `verbose`."""
    if verbose:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    # Ray imported already (a test, an embedding program): ray.init resets the `ray` logger's
    # level from the default it bound at import, so set it again after ray.init too.
    logging.getLogger("ray").setLevel(logging.ERROR)
