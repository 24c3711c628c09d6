"""The trackers researchers already use, through Ray Tune's own callbacks (`search.loggers`), and
what Tune writes beside the store only when asked.

`search.loggers: [tensorboard, mlflow, wandb]` adds, for every trial, its sampled params and every
epoch's metrics (the numbers of the trial's report: `val_uar_mean`, `val_uar_std`, `test_uar_mean`,
the loss, ... at step = epoch):
- tensorboard: Tune's TBXLoggerCallback, event files in each trial's Tune folder,
  `<results>/<sweep>/_tune/run-*/<trial_id>/events.out.tfevents.*`
  (`tensorboard --logdir results/<sweep>/_tune`);
- mlflow: Ray's MLflowLoggerCallback, one MLflow experiment named after the sweep, one run per
  trial (run name = trial id, tag `sweep`), at `MLFLOW_TRACKING_URI` when set, else
  `sqlite:///<results>/<sweep>/mlflow.db` (`mlflow ui --backend-store-uri sqlite:///...`);
  needs `pip install mlflow` (or mlflow-skinny);
- wandb: Ray's WandbLoggerCallback, W&B project = the sweep's name, one run per trial (its own
  environment decides where: `wandb login`, or `WANDB_MODE=offline`); needs `pip install wandb`.

Tune's own CSV / JSON / TensorBoard loggers (on by default in Tune) are off unless asked
(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1, a value the user exported wins): sersweep never reads them,
the store holds every number (issue 25: ~7 % of the driver's CPU). Without them a trial's Tune
folder holds its checkpoints only: no params.json (a trial's config is in the store,
`config_json`, what orchestrator/teacher.py reads first), progress.csv, result.json or event file;
`TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0` brings them back.

Less bookkeeping (issue 25.3): `CheckpointConfig(num_to_keep=1)` made Tune force a snapshot of the
whole experiment state (every trial's state, ~52 KB per trial) after EVERY trial checkpoint, i.e.
every epoch of every trial: a per-trial cost growing with the sweep, for a file sersweep never
reads (a resume starts from the store, runner.py). Instead Tune keeps every checkpoint
(`num_to_keep=None`: no forced snapshot) and `LatestCheckpointOnly` deletes a trial's previous
checkpoint once a newer one is registered, so a trial still holds exactly its latest checkpoint:
the one a retry after a lost worker or node restores, and the one the store's `checkpoint_path`
names (a distillation teacher's). The periodic snapshot is every TUNE_GLOBAL_CHECKPOINT_S = 300 s
(Tune's "auto" is 10 s and more) and at the end of each Tuner.
The snapshot is also when Tune copies the files its loggers wrote on the driver (a staging folder
under /tmp/ray/session_*) to `<results>/<sweep>/_tune`: with `tensorboard` in search.loggers the
period is Tune's "auto" (about every 10 s) so TensorBoard follows the sweep live; with Tune's own
loggers asked for (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0) the checkpointing is Tune's as before
(num_to_keep=1: a snapshot, and so a copy, after every trial checkpoint), for tools that read
result.json while a trial runs.

Ray's usage statistics off, nothing counted for them (issue 25.3): every Tuner.fit() counts the
user's callbacks for Ray's usage statistics (ray/air/_internal/usage.py, `tag_callbacks`) by
importing Tune's MLflow, W&B, Comet and Aim integrations, and so mlflow itself where it is
installed: about 2 CPU-s of the driver, the biggest single item of its own work in a short sweep,
also when the statistics are off (RAY_USAGE_STATS_ENABLED=0, what orchestrator/cluster.py sets
unless the user exported otherwise), when the count is never sent. `skip_unsent_usage_count`
skips the count then; with the statistics on, Tune counts as before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

LOGGERS = ("tensorboard", "mlflow", "wandb")
TUNE_FILES_ENV = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "TUNE_GLOBAL_CHECKPOINT_S": "300"}
MLFLOW_DB = "mlflow.db"


def quiet_tune_files() -> None:
    """Tune's default CSV / JSON / TensorBoard loggers off and its experiment snapshot every
    300 s (both read when a Tuner is fit; a value the user exported wins)."""
    for key, value in TUNE_FILES_ENV.items():
        os.environ.setdefault(key, value)


def skip_unsent_usage_count() -> None:
    """With Ray's usage statistics off, Tune's count of the callbacks for them is skipped (it
    imports mlflow; see the module docstring)."""
    from ray._common.usage.usage_lib import usage_stats_enabled
    from ray.air._internal import usage

    if not usage_stats_enabled():
        usage.tag_callbacks = _no_usage_count


def _no_usage_count(callbacks: Any) -> bool:
    """`ray.air._internal.usage.tag_callbacks` when nothing is sent: records nothing."""
    return False


def checkpointing() -> tuple[Any, Any]:
    """(Tune's CheckpointConfig, the callback that keeps each trial's latest checkpoint only)."""
    from ray import tune

    if os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS") == "0":  # Tune's files, promptly
        return tune.CheckpointConfig(num_to_keep=1), tune.Callback()

    class LatestCheckpointOnly(tune.Callback):
        """Deletes a trial's previous checkpoint when Tune reports a newer one (Tune itself
        keeps all: num_to_keep=None, which forces no experiment snapshot)."""

        def __init__(self) -> None:
            self.latest: dict[str, Any] = {}  # trial id -> its newest tune.Checkpoint

        def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                          **info: Any) -> None:
            previous = self.latest.get(trial.trial_id)
            self.latest[trial.trial_id] = checkpoint
            if previous is not None and previous.path != checkpoint.path:
                try:
                    previous.filesystem.delete_dir(previous.path)
                except OSError:  # gone already, or a store that refuses: only disk is lost
                    pass

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            self.latest.pop(trial.trial_id, None)

        on_trial_error = on_trial_complete

        def get_state(self) -> dict | None:
            return None  # nothing to restore: a resume starts from the store

    return tune.CheckpointConfig(num_to_keep=None), LatestCheckpointOnly()


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """The sampled values of a trial, by dotted key (`train.lr`), from its Tune config."""
    from orchestrator.store.schema import OPTUNA_PARAMS_PREFIX

    return {key.removeprefix(OPTUNA_PARAMS_PREFIX): value for key, value in config.items()
            if key.startswith(OPTUNA_PARAMS_PREFIX)}


def mlflow_uri(sweep_dir: str) -> str:
    """Where the MLflow runs go: MLFLOW_TRACKING_URI, else an SQLite file in the sweep folder
    (an object-store sweep needs MLFLOW_TRACKING_URI)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if "://" in sweep_dir:
        from trainables.errors import SersweepError

        raise SersweepError(f"search.loggers: mlflow: the results of {sweep_dir} are not on a "
                            "local disk; set MLFLOW_TRACKING_URI to an MLflow tracking server")
    return f"sqlite:///{Path(sweep_dir).resolve() / MLFLOW_DB}"


def tracker_callbacks(loggers: tuple[str, ...] | list[str], sweep: str,
                      sweep_dir: str) -> list[Any]:
    """The Tune callbacks of `search.loggers`, in its order (a missing package: SersweepError
    naming it, before anything runs)."""
    if "tensorboard" in loggers:  # event files copied to the results about every 10 s
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "auto")
    quiet_tune_files()
    callbacks: list[Any] = []
    for name in loggers:
        if name == "tensorboard":
            from ray.tune.logger import TBXLoggerCallback

            callbacks.append(TBXLoggerCallback())
        elif name == "mlflow":
            callbacks.append(_mlflow_callback(sweep, mlflow_uri(sweep_dir)))
        elif name == "wandb":
            callbacks.append(_wandb_callback(sweep))
    return callbacks


def _missing(package: str) -> Exception:
    from trainables.errors import SersweepError

    return SersweepError(f"search.loggers: {package} is not installed in this environment "
                         f"(pip install {package}), or remove {package!r} from search.loggers")


def _mlflow_callback(sweep: str, uri: str) -> Any:
    try:
        import mlflow  # noqa: F401 - Ray imports it lazily, at the first trial
    except ImportError:
        raise _missing("mlflow") from None
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class SweepMLflow(MLflowLoggerCallback):
        """One run per trial named by its id; params = the sampled values only."""

        def log_trial_start(self, trial: Any) -> None:
            if trial not in self._trial_runs:
                tags = {**self.tags, "trial_id": trial.trial_id, "sweep": sweep}
                run = self.mlflow_util.start_run(tags=tags, run_name=trial.trial_id)
                self._trial_runs[trial] = run.info.run_id
            self.mlflow_util.log_params(run_id=self._trial_runs[trial],
                                        params_to_log=trial_params(trial.config))

    return SweepMLflow(tracking_uri=uri, experiment_name=sweep, tags={"sweep": sweep})


def _wandb_callback(sweep: str) -> Any:
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise _missing("wandb") from None
    from ray.air.integrations.wandb import WandbLoggerCallback

    from orchestrator.store.schema import OPTUNA_PARAMS_PREFIX

    class SweepWandb(WandbLoggerCallback):
        """Config = the sampled values only (the rest of a trial's config is the sweep file)."""

        def log_trial_start(self, trial: Any) -> None:
            self.excludes = sorted(set(self.excludes) | {
                key for key in trial.config if not key.startswith(OPTUNA_PARAMS_PREFIX)})
            super().log_trial_start(trial)

    return SweepWandb(project=sweep, group=sweep)
