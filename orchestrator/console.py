"""The live view of a sweep on the driver: a Ray Tune callback printing one compact line per event.

    start  #2/4 4fd5b1ae  lr=0.000443 pooling=mean
    epoch  4fd5b1ae 1/3  val_uar 0.333 ± 0.041 (n=3) | best 0.417 | ETA ~1m20s
    end    [2/4] 4fd5b1ae completed  objective 0.417  3 epochs  micro_batch 16  41s
    FAIL   [3/4] 9c0e1a2b failed  ConfigError: d_model must be divisible by heads at model.heads
    retry  1ade187a  RayActorError: The actor died unexpectedly ...; from its last checkpoint
           running 1 | completed 1 pruned 0 failed 1 | best 0.417 (4fd5b1ae) | 2m05s | ETA ~1m20s

Epoch lines come from `on_trial_result` (mean ± sample std over the members with a result, n of
them; `pruned` when the scheduler stopped the trial at that epoch, `collapsed k/m`). A trial's
status is store/schema.py's trial_status, so the console shows what the store records.

The ETA ("~": an estimate) places the trials left on the run's slots (`concurrency`: trials at
once) and adds their times: an epoch of a running trial takes the median of its own epochs
(configurations differ several-fold), of any other the mean seconds between two epochs of one
trial (the last RECENT_GAPS: the time left is a sum over configurations not sampled yet, so their
expected epoch time, which the slow ones raise above the median); a trial not started takes the
hand-off after the trial it replaces (from its end to the next start: the driver plans, Ray
starts a worker) and its set-up (from its start to its first epoch, less an epoch, measured on
trials started in a freed slot: the first trials also start Ray's workers, which the later ones
reuse), then its expected epochs. So Ray's start and a trial's set-up are never taken for
training speed, and the last trials, when slots stand idle, are not sped up by them. Before a
trial has two epochs: `ETA ~?`. The epochs left learn from pruning: a trial not started yet is
expected to run the scheduler's expectation (ASHA: `asha_expected_epochs`, weighed as
PRIOR_TRIALS trials, since the first trials fill empty rungs and are promoted more than the later
ones) averaged with the epochs of the trials finished so far (recorded ones of a resumed sweep
included); a running trial before the first rung the same, past it the mean epochs of the
finished trials that ran past its epoch.
bench/eta.py measures it against the real remaining time (docs/design.md, Performance).
"best" counts the trials recorded before a resume too (`seed`), so the status line, the epoch
lines and the closing line agree with the leaderboard.

On a terminal the status line stays at the bottom (rich's live status, re-rendered by rich's own
refresh thread, so its clock and ETA tick between events); on anything else (a CI log, a pipe)
every line is plain text, no control codes. A failure is one line; `--verbose` adds its
traceback (always kept in the store's `error_traceback`).

Also here, the plain lines around the trials: `ProgressLines` (data and baseline progress, each
counter ending at N/N, each fact once), `ray_lines` (Ray starting / ready) and `pinned_lines`
(`--set` on a searched key pins it).
"""

from __future__ import annotations

import contextlib
import heapq
import math
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ray.tune import Callback
from rich.console import Console

from orchestrator.store import schema
from orchestrator.store.rows import reported_error, trial_error
from trainables import names

PRIOR_TRIALS = 2  # the scheduler's expected epochs per trial weighs as much as 2 trials
RECENT_GAPS = 16  # the ETA's epoch and start-up times: from the last 16 measured
WAIT_NOTICE_S = 30.0  # trials pending with none running this long, unplaced: say so
WAIT_RECHECK_S = 5.0  # while they wait, Ray's placement groups are read at most this often

if TYPE_CHECKING:
    import pandas as pd


class ConsoleCallback(Callback):
    """Counts running / completed / pruned / failed trials, tracks the best, prints an ETA."""

    def __init__(
        self,
        *,
        total: int,
        already: int,
        mode: str = "max",
        metric: str = names.VAL_UAR,
        epochs: int = 1,
        verbose: bool = False,
        stream: TextIO | None = None,
        concurrency: int | None = None,
        expected_epochs: float | None = None,
        first_rung: int | None = None,
    ) -> None:
        self.total = total
        self.already = already
        self.sign = 1.0 if mode == "max" else -1.0
        self.metric = metric
        self.epochs = int(epochs)  # per trial, for the trials not started yet
        # the ETA's model of the run (module docstring): trials at once (None: the most seen),
        # the epochs a trial is expected to run before any has finished (the scheduler's:
        # asha_expected_epochs), and the first epoch at which the scheduler may stop a trial
        self.concurrency = concurrency
        self.expected_epochs = float(expected_epochs if expected_epochs is not None else epochs)
        self.first_rung = first_rung
        self.started_at: dict[str, float] = {}  # trial id -> when it started
        self.reported_at: dict[str, float] = {}  # trial id -> when it last reported an epoch
        self.epoch_gaps: list[float] = []  # seconds between two epochs of one trial
        self.own_gaps: dict[str, list[float]] = {}  # the same, per running trial
        # seconds from a trial's start to its first epoch, for trials started in a slot another
        # trial freed: the first trials also start Ray's workers (torch imports, data loads),
        # which the trials after them, on reused workers, do not pay again
        self.first_waits: list[float] = []
        self._warm: set[str] = set()  # trials started in a freed slot
        self.handoffs: list[float] = []  # seconds from a trial's end to the next one's start
        self._freed: list[float] = []  # when a trial ended and no trial has started since
        self.most_running = 0
        self.verbose = verbose
        self.stream = stream  # None: sys.stdout when first printing
        self.started = time.monotonic()
        self.epochs_done = 0
        self.trial_epochs: list[int] = []  # epochs run by each finished (or recorded) trial
        self.running: dict[str, tuple[int, int]] = {}  # trial id -> (epochs reported, of n)
        self.last: dict[str, dict[str, Any]] = {}
        self.trials_started = 0
        self.seen: set[str] = set()
        self.finished = 0
        self.failed = 0
        self.pruned = 0
        self.collapsed = 0
        self.best: tuple[float, str, dict[str, Any]] | None = None
        self._console: Console | None = None
        self._status: Any = None  # rich Status (terminal only)
        self._waiting_since: float | None = None  # trials pending, none running, since
        self._waiting_checked = -math.inf  # when Ray's placement groups were last read
        self._waiting_said = False

    def seed(self, recorded: pd.DataFrame) -> None:
        """What the store recorded before this run (a resume, or the previous Tuner of a long
        sweep is NOT passed here: this console saw those): the best ranked trial and each
        trial's epochs, so "best" and the ETA count them."""
        for row in recorded.to_dict("records"):
            epochs = _number(row.get(schema.EPOCHS_RUN))
            if epochs is not None:
                self.trial_epochs.append(int(epochs))
            objective = _number(row.get(names.OBJECTIVE))
            if objective is not None and row.get("status") in schema.RANKED_STATUSES:
                params = {key.removeprefix(schema.PARAM_PREFIX): value
                          for key, value in row.items()
                          if key.startswith(schema.PARAM_PREFIX) and _present(value)}
                self._offer_best(objective, str(row.get("trial_id")), params)

    def _offer_best(self, objective: float, trial_id: str, params: dict[str, Any]) -> None:
        if self.best is None or self.sign * objective > self.sign * self.best[0]:
            self.best = (objective, trial_id, params)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state: a console holds a stream
        state = self.__dict__.copy()
        state["_console"] = state["_status"] = None
        state["stream"] = None
        return state

    # --- output ------------------------------------------------------------------------------
    def _out(self) -> Console:
        if self._console is None:
            # markup off: "[2/4]" is text; soft_wrap: a CI log gets whole lines, never wrapped
            self._console = Console(file=self.stream or sys.stdout, markup=False,
                                    highlight=False, emoji=False, soft_wrap=True)
            if self._console.is_terminal:  # re-rendered by rich's refresh thread: a live clock
                self._status = self._console.status(_LiveText(self))
                self._status.start()
        return self._console

    def _say(self, text: str) -> None:
        self._out().print(text)

    def _refresh(self) -> None:
        """The status line: live at the bottom of a terminal; elsewhere printed after a trial
        ends (not after every epoch: a CI log stays one line per event)."""
        self._out()
        if self._status is not None:
            self._status.update(_LiveText(self))

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        if self.best is not None:
            self._say(f"best objective {self.best[0]:.4f}: trial {self.best[1]} "
                      f"{_short(self.best[2])}")

    # --- Tune callback hooks -------------------------------------------------------------------
    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        """One line when trials wait for resources (#22.3, #24: the one path that says so; Tune's
        own warning is silenced, orchestrator/quiet.py): trials pending with none running for
        WAIT_NOTICE_S AND a placement group of theirs that Ray has not placed. Pending trials
        whose resources Ray has reserved are starting their workers (slow under load), not
        waiting: no line."""
        pending = [t for t in trials if getattr(t, "status", None) == "PENDING"]
        if self.running or not pending:
            self._waiting_since = None
            return
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        if (self._waiting_said or now - self._waiting_since < WAIT_NOTICE_S
                or now - self._waiting_checked < WAIT_RECHECK_S):
            return
        self._waiting_checked = now
        asks = [_asks(t) for t in pending]
        unplaced = [ask for ask in asks if ask in unplaced_asks()]
        if not unplaced:
            return
        import ray

        self._waiting_said = True
        self._say(waiting_line(len(pending), now - self._waiting_since, unplaced[0],
                               ray.cluster_resources()))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.seen:  # restarted after a failure: its retry line said so
            self.running.setdefault(trial.trial_id, (0, _epochs_of(trial.config, self.epochs)))
            return
        self.seen.add(trial.trial_id)
        self.trials_started += 1
        self.running[trial.trial_id] = (0, _epochs_of(trial.config, self.epochs))
        self.started_at[trial.trial_id] = time.monotonic()
        if self._freed:  # the slot a trial ended in, taken again (the driver plans, Ray starts)
            self.handoffs.append(self.started_at[trial.trial_id] - self._freed.pop(0))
            self._warm.add(trial.trial_id)
        self.most_running = max(self.most_running, len(self.running))
        number = self.already + self.trials_started
        self._say(f"start  #{number}/{self.total} {trial.trial_id}  "
                  f"{_short(_params(trial.config))}")
        self._refresh()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self.last[trial.trial_id] = result
        if result.get(names.ERROR_REASON):
            return  # a failure report: the trial's end line says it
        epoch = int(result.get(names.EPOCH) or 0)
        _, of = self.running.get(trial.trial_id, (0, self.epochs))
        self.running[trial.trial_id] = (epoch, of)
        self.epochs_done += 1
        now = time.monotonic()
        if trial.trial_id in self.reported_at:
            self.epoch_gaps.append(now - self.reported_at[trial.trial_id])
            self.own_gaps.setdefault(trial.trial_id, []).append(self.epoch_gaps[-1])
        elif trial.trial_id in self._warm:
            self.first_waits.append(now - self.started_at[trial.trial_id])
        self.reported_at[trial.trial_id] = now
        # n: the members the mean and spread are over (trainables/train.py's _report: all with a
        # result, a collapsed one carried forward), not only those trained this epoch (a racing
        # stage trains its new test sets' members alone)
        n = len(schema.report_json(result, names.MEMBER_RESULTS_JSON, None)
                or schema.report_json(result, names.MEMBER_ROWS_JSON, []))
        value = _number(result.get(names.mean_key(self.metric)))
        spread = _number(result.get(names.std_key(self.metric)))
        shown = "-" if value is None else f"{value:.3f}"
        if spread is not None:
            shown += f" ± {spread:.3f}"
        flags = []
        collapsed = int(result.get(names.MEMBERS_COLLAPSED) or 0)
        if collapsed:
            flags.append(f"collapsed {collapsed}/{schema.collapsed_members(result)[1] or n}")
        if result.get("done") and not result.get(names.DONE):  # Tune's done: the scheduler
            flags.append("pruned")
        self._say(f"epoch  {trial.trial_id} {epoch}/{of}  {self.metric} {shown} (n={n})"
                  + "".join(f"  {flag}" for flag in flags)
                  + f" | best {self._best_text(short=True)} | {self._eta_text()}")
        self._refresh()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = self.last.get(trial.trial_id, {})
        reason, traceback_text = reported_error(last)
        self._finish(trial, schema.trial_status(last, reason), reason, traceback_text)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason, traceback_text = trial_error(trial)
        status = schema.trial_status(self.last.get(trial.trial_id, {}), reason)
        self._finish(trial, status, reason, traceback_text)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason, traceback_text = trial_error(trial)
        self._say(f"retry  {trial.trial_id}  {reason}; from its last checkpoint")
        if self.verbose:
            self._say(traceback_text)

    # --- state ---------------------------------------------------------------------------------
    def _finish(self, trial: Any, status: str, reason: str | None,
                traceback_text: str | None) -> None:
        self.running.pop(trial.trial_id, None)
        self.own_gaps.pop(trial.trial_id, None)
        if self.already + self.trials_started < self.total:
            self._freed.append(time.monotonic())
        self.finished += 1
        self.pruned += status == schema.PRUNED
        self.collapsed += status == schema.COLLAPSED
        self.failed += status in schema.FAILED_STATUSES
        result = self.last.pop(trial.trial_id, {})
        self.trial_epochs.append(int(_number(result.get(names.EPOCH)) or 0))
        done = self.already + self.finished
        if status in schema.FAILED_STATUSES:
            self._say(f"FAIL   [{done}/{self.total}] {trial.trial_id} {status}  {reason}")
            if self.verbose and traceback_text:
                self._say(traceback_text)
        else:
            objective = _number(result.get(names.OBJECTIVE))
            params = _params(trial.config)
            if objective is not None and status in schema.RANKED_STATUSES:  # never collapsed
                self._offer_best(objective, trial.trial_id, params)
            runtime = schema.report_json(result, names.RUNTIME_JSON, {})
            shown = "-" if objective is None else f"{objective:.3f}"
            seconds = _number(result.get("time_total_s"))
            self._say(
                f"end    [{done}/{self.total}] {trial.trial_id} {status}  objective {shown}  "
                f"{int(result.get(names.EPOCH) or 0)} epochs  "
                f"micro_batch {runtime.get('micro_batch', '-')}"
                + ("" if seconds is None else f"  {_duration(seconds)}")
            )
        if self._status is None:
            self._say(f"       {self._status_text()}")
        self._refresh()

    def _best_text(self, short: bool = False) -> str:
        if self.best is None:
            return "-"
        return f"{self.best[0]:.3f}" if short else f"{self.best[0]:.3f} ({self.best[1]})"

    def _per_trial(self) -> float:
        """Epochs a trial not started yet is expected to run: the scheduler's expectation
        (`expected_epochs`, counted as PRIOR_TRIALS trials) averaged with the epochs of the
        trials finished so far. The first trials of an ASHA run fill its empty rungs and are
        promoted more often than the later ones, so they alone would overstate it."""
        finished = self.trial_epochs
        return ((PRIOR_TRIALS * self.expected_epochs + sum(finished))
                / (PRIOR_TRIALS + len(finished)))

    def _expected_total(self, done: int, of: int) -> float:
        """Epochs a running trial at epoch `done` (of `of`) is expected to reach: before the
        scheduler's first rung, like a trial not started; past it, the mean of the finished
        trials that ran past `done` (all of `of` when none did)."""
        if done == 0 or (self.first_rung is not None and done < self.first_rung):
            return max(float(done), min(self._per_trial(), float(of)))
        longer = [e for e in self.trial_epochs if e > done]
        return min(sum(longer) / len(longer), float(of)) if longer else float(of)

    def epochs_left(self) -> float:
        """Expected epochs still to run: the running trials' and those not started (see the
        module docstring: learnt from the finished trials' epochs)."""
        not_started = max(0, self.total - self.already - self.trials_started)
        left = sum(max(0.0, self._expected_total(done, of) - done)
                   for done, of in list(self.running.values()))  # list(): the refresh thread
        return left + not_started * self._per_trial()

    def eta_seconds(self) -> float | None:
        """Seconds left (see the module docstring): the trials left, placed on the run's
        concurrent slots, each epoch taking the seconds measured between two epochs of one
        trial and each trial not started the start-up measured before a first epoch. None
        before a trial has reported two epochs (the first epochs of trials started together
        arrive together: no rate can be read from them)."""
        now = time.monotonic()
        if not self.epoch_gaps:
            return None
        epoch = statistics.mean(self.epoch_gaps[-RECENT_GAPS:])
        # after a trial starts: its set-up, the part of its first epoch's wait beyond an epoch;
        # before it starts: the hand-off from the trial that ended (planning, Ray's start)
        setup = max(0.0, statistics.median(self.first_waits[-RECENT_GAPS:]) - epoch) \
            if self.first_waits else 0.0
        handoff = statistics.median(self.handoffs[-RECENT_GAPS:]) if self.handoffs else 0.0
        slots = []
        for trial_id, (done, of) in list(self.running.items()):
            # a trial's epochs take what its own took (configurations differ several-fold)
            own = self.own_gaps.get(trial_id)
            rate = statistics.median(own) if own else epoch
            work = (self._expected_total(done, of) - done) * rate + (0.0 if done else setup)
            since = self.reported_at.get(trial_id) or self.started_at.get(trial_id) or now
            slots.append(max(0.0, work - (now - since)))
        width = max(self.concurrency or self.most_running, len(slots), 1)
        slots += [0.0] * (width - len(slots))
        heapq.heapify(slots)
        not_started = max(0, self.total - self.already - self.trials_started)
        for _ in range(not_started):  # each next trial takes the first slot that frees
            heapq.heappush(slots, heapq.heappop(slots) + handoff + setup
                           + self._per_trial() * epoch)
        return max(slots)

    def _eta_text(self) -> str:
        eta = self.eta_seconds()
        return "ETA ~?" if eta is None else f"ETA ~{_duration(eta)}"

    def _status_text(self) -> str:
        completed = self.finished - self.failed - self.pruned - self.collapsed
        collapsed = f" collapsed {self.collapsed}" if self.collapsed else ""
        return (f"running {len(self.running)} | completed {completed} pruned {self.pruned}"
                f"{collapsed} failed {self.failed} | best {self._best_text()} | "
                f"{_duration(time.monotonic() - self.started)} | {self._eta_text()}")


def _resources(asks: dict[str, float]) -> dict[str, float]:
    """Resources as Ray's placement groups hold them: positive amounts, rounded (Ray keeps
    fractions in fixed point)."""
    return {key: round(float(value), 4) for key, value in asks.items() if float(value) > 0}


def _asks(trial: Any) -> dict[str, float]:
    """What one Tune trial asks for: its placement group's bundles summed."""
    factory = getattr(trial, "placement_group_factory", None)
    return _resources(dict(getattr(factory, "required_resources", {}) or {}))


def unplaced_asks() -> list[dict[str, float]]:
    """The resources of each placement group Ray has not placed yet (GCS state PENDING: no
    node has them free), bundles summed. Tune asks one per trial as soon as it schedules it;
    a placed one (CREATED) is a trial whose worker is starting."""
    from ray.util import placement_group_table

    out = []
    for group in placement_group_table().values():
        if group.get("state") != "PENDING":
            continue
        total: dict[str, float] = {}
        for bundle in (group.get("bundles") or {}).values():
            for key, value in bundle.items():
                total[key] = total.get(key, 0.0) + float(value)
        out.append(_resources(total))
    return out


def waiting_line(pending: int, seconds: float, asks: dict[str, float],
                 cluster: dict[str, float]) -> str:
    """The one line saying that trials wait for resources: what one asks, what the cluster
    has in all (`ray status`: what is free now) and what to do."""
    asked = ", ".join(f"{value:g} {key}" for key, value in asks.items())
    return (f"waiting: {pending} trial(s) pending, none running for {_duration(seconds)}: Ray "
            f"cannot place one (it asks {asked}; the cluster has {cluster.get('CPU', 0):g} "
            f"CPUs, {cluster.get('GPU', 0):g} GPUs in all, `ray status` shows what is free). "
            "Lower resources.cpus_per_trial / gpus_per_trial or add nodes; ignore this while "
            "a cluster autoscales")


class _LiveText:
    """The status line as rich renders it: recomputed at every refresh of the live status
    (rich's own thread), so the clock and the ETA move while no event arrives."""

    def __init__(self, console: ConsoleCallback) -> None:
        self.console = console

    def __rich__(self) -> str:
        return self.console._status_text()


def sweep_console(spec: Any, *, recorded: int, concurrency: int | None, verbose: bool = False,
                  stream: TextIO | None = None) -> ConsoleCallback:
    """The console of a sweep's search (runner.run_sweep; bench/eta.py replays it): numbering
    after the `recorded` trials, and the ETA's model of the run: `concurrency` trials at once
    and, under ASHA (not racing: ASHA then counts the first stage only), the epochs a trial is
    expected to run (asha_expected_epochs) and the rung before which none is stopped."""
    scheduler = spec.search.scheduler
    asha = scheduler.type == "asha" and not spec.search.racing
    return ConsoleCallback(
        total=spec.search.trials, already=recorded, mode=spec.search.mode,
        metric=spec.search.metric, epochs=int(spec.train["epochs"]), verbose=verbose,
        stream=stream, concurrency=concurrency,
        expected_epochs=asha_expected_epochs(scheduler.max_t, scheduler.grace_period,
                                             scheduler.reduction_factor) if asha else None,
        first_rung=scheduler.grace_period if asha else None)


def asha_expected_epochs(max_t: int, grace_period: int, reduction_factor: float) -> float:
    """Epochs an ASHA trial is expected to run once the rungs are full: all trials reach the
    first rung (grace_period), a 1/reduction_factor share of those reaching a rung go on to
    the next (rungs at grace_period x reduction_factor^k below max_t), the last ones to max_t."""
    rungs = [float(grace_period)]
    while rungs[-1] * reduction_factor < max_t:
        rungs.append(rungs[-1] * reduction_factor)
    expected, share = rungs[0], 1.0
    for start, end in zip(rungs, [*rungs[1:], float(max_t)], strict=True):
        share /= reduction_factor
        expected += (end - start) * share
    return min(expected, float(max_t))


def _present(value: Any) -> bool:
    """Not None / NaN (a param that does not apply to this trial is stored as null)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _params(config: dict[str, Any]) -> dict[str, Any]:
    """The trial's sampled values (Optuna-native; search.TrialSpace keeps them prefixed)."""
    return {
        key.removeprefix(schema.OPTUNA_PARAMS_PREFIX): value
        for key, value in config.items()
        if key.startswith(schema.OPTUNA_PARAMS_PREFIX)
    }


def _epochs_of(config: dict[str, Any], default: int) -> int:
    train = config.get("train")
    return int(train.get("epochs", default)) if isinstance(train, dict) else default


def _number(value: Any) -> float | None:
    """A finite float, else None (NaN std of a one-member trial, a missing key)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _short(params: dict[str, Any]) -> str:
    """`lr=0.000443 pooling=mean`: the last part of each key (the whole key where two share
    it), floats to 3 significant digits."""
    tails = [key.split(".")[-1] for key in params]
    parts = []
    for (key, value), tail in zip(params.items(), tails, strict=True):
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{tail if tails.count(tail) == 1 else key}={shown}")
    return " ".join(parts)


# --- the plain lines around the trials -----------------------------------------------------------
_COUNTER = re.compile(r"^(?P<head>.*?)(?P<done>\d+)/(?P<total>\d+)(?P<tail>.*)$")
# printed by trainables/egemaps_baseline.run_baseline and again, with more, by
# orchestrator/baseline_run.write_sweep_baseline: the console keeps the latter only
_BASELINE_REPEAT = re.compile(r"^baseline: test UAR \d")


class ProgressLines:
    """The `progress` callback of data preparation and the baseline, printing `prefix: msg`.

    A counter (`features logmel: 512/800 utterances`) is reported every few chunks, so its last
    report can stop short of the total; the next other line (or `close`) first prints it at N/N.
    The baseline's own result line, repeated by the sweep's baseline summary, is printed once.
    """

    def __init__(self, prefix: str = "", say: Callable[[str], None] = print) -> None:
        self.prefix = prefix
        self.say = say
        self.open: re.Match[str] | None = None  # the last counter line, short of its total
        self.last: str | None = None  # the last message: the same one again is no new fact

    def __call__(self, message: str) -> None:
        if _BASELINE_REPEAT.match(message) or message == self.last:
            return
        self.last = message
        counter = _COUNTER.match(message)
        if self.open is not None and not (counter and counter["head"] == self.open["head"]):
            self.close()
        if counter is not None:  # open while short of its total; at its total, said
            self.open = counter if int(counter["done"]) < int(counter["total"]) else None
        self.say(f"{self.prefix}{message}")

    def close(self) -> None:
        """Print the open counter at its total (the work it counts has ended)."""
        if self.open is not None:
            m, self.open = self.open, None
            self.say(f"{self.prefix}{m['head']}{m['total']}/{m['total']}{m['tail']}")


@contextlib.contextmanager
def ray_lines(address: str | None, say: Callable[[str], None] = print) -> Iterator[None]:
    """`ray: starting ...` before the (silent, up to a minute) Ray start, `ray: ready ...` after
    it, with what the cluster offers."""
    began = time.monotonic()
    say(f"ray: connecting to {address} ..." if address else "ray: starting ...")
    yield
    import ray

    resources = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    say(f"ray: ready in {_duration(time.monotonic() - began)}: "
        f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs, "
        f"{nodes} node{'s' if nodes != 1 else ''}")


def pinned_keys(space: str | Path, overrides: Sequence[str]) -> list[str]:
    """The `--set KEY=...` keys that the sweep file searches (search.params): --set pins them to
    one value, out of the search (orchestrator/sweepfile/load.py)."""
    import yaml

    from orchestrator.sweepfile.load import resolve_spec_path

    try:
        raw = yaml.safe_load(resolve_spec_path(space).read_text())
    except (OSError, ValueError, yaml.YAMLError):  # load_spec has reported it already
        return []
    search = raw.get("search") if isinstance(raw, dict) else None
    params = search.get("params") if isinstance(search, dict) else None
    if not isinstance(params, dict):
        return []
    keys = [text.partition("=")[0].strip() for text in overrides]
    return [key for key in dict.fromkeys(keys) if key in params]


def pinned_lines(space: str | Path, overrides: Sequence[str]) -> list[str]:
    """One line per searched key that `--set` pins."""
    return [f"--set {key}: pins a searched key to one value (it is not searched in this run)"
            for key in pinned_keys(space, overrides)]
