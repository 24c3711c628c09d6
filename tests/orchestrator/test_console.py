"""The live console as a CI log sees it: one plain line per event, no control codes, the epoch
rate's ETA. Trials are Tune-like records (trial_id + config), the only part of a Trial it reads."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.console import ConsoleCallback, ProgressLines, pinned_lines
from tests.trainables.test_train import CPU, make_config, tiny_data
from tests.trainables.test_train import tiny_model as tiny_model  # autouse: registers "tiny"
from trainables import names
from trainables.train import LockstepTrainer


def _trial(trial_id: str, lr: float) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id,
                           config={"optuna:train.lr": lr, "optuna:model.pooling": "max",
                                   "train": {"epochs": 4}})


def _epoch(epoch: int, mean: float, std: float, members: int, **extra) -> dict:
    return {names.EPOCH: epoch, names.mean_key(names.VAL_UAR): mean,
            names.std_key(names.VAL_UAR): std, names.OBJECTIVE: mean,
            names.MEMBER_ROWS_JSON: json.dumps([{"member": m} for m in range(members)]),
            names.MEMBERS_COLLAPSED: 0, names.DONE: False, **extra}


def test_plain_lines_with_mean_std_n_flags_and_one_failure_line() -> None:
    out = io.StringIO()
    console = ConsoleCallback(total=3, already=0, epochs=4, stream=out)
    a, b = _trial("aaaa0001", 3.2e-4), _trial("bbbb0002", 1e-3)
    console.on_trial_start(0, [], a)
    console.on_trial_result(0, [], a, _epoch(1, 0.41, 0.031, 3))
    console.on_trial_result(0, [], a, _epoch(2, 0.45, 0.02, 3, done=True,
                                             **{names.MEMBERS_COLLAPSED: 1}))
    console.on_trial_complete(0, [], a)
    console.on_trial_start(0, [], b)
    console.on_trial_result(0, [], b, {
        names.EPOCH: 0, names.OBJECTIVE: float("nan"), names.DONE: False,
        names.ERROR_REASON: "TrainingError: non-finite loss (nan) at epoch 1",
        names.ERROR_TRACEBACK: "Traceback (most recent call last):\n  ...\nTrainingError: x\n"})
    console.on_trial_complete(0, [], b)
    console.close()
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text  # a CI log: no control codes
    lines = text.splitlines()
    assert lines[0] == "start  #1/3 aaaa0001  lr=0.00032 pooling=max"
    assert lines[1].startswith("epoch  aaaa0001 1/4  val_uar 0.410 ± 0.031 (n=3) | best - |")
    assert "2/4  val_uar 0.450 ± 0.020 (n=3)  collapsed 1/3  pruned" in lines[2]
    assert lines[3].startswith("end    [1/3] aaaa0001 pruned  objective 0.450  2 epochs")
    fail = [line for line in lines if line.startswith("FAIL")]
    assert fail == ["FAIL   [2/3] bbbb0002 failed  TrainingError: non-finite loss (nan) at "
                    "epoch 1"]
    assert "Traceback" not in text  # only with --verbose
    assert console.failed == 1 and console.pruned == 1 and console.finished == 2


def test_verbose_adds_the_traceback() -> None:
    out = io.StringIO()
    console = ConsoleCallback(total=1, already=0, verbose=True, stream=out)
    trial = _trial("cccc0003", 1e-3)
    console.on_trial_start(0, [], trial)
    console.on_trial_result(0, [], trial, {
        names.ERROR_REASON: "ConfigError: bad", names.ERROR_TRACEBACK: "Traceback: here\n"})
    console.on_trial_complete(0, [], trial)
    assert "Traceback: here" in out.getvalue()


def test_eta_counts_start_up_once_per_trial_never_as_epoch_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("orchestrator.console.time.monotonic", lambda: clock[0])
    console = ConsoleCallback(total=3, already=0, epochs=4, stream=io.StringIO(), concurrency=1)
    a = _trial("aaaa0001", 1e-3)
    assert console.eta_seconds() is None  # no epoch yet: no rate
    console.on_trial_start(0, [], a)
    clock[0] = 160.0  # 60 s from its start to its first epoch: Ray's worker, data, 1 epoch
    console.on_trial_result(0, [], a, _epoch(1, 0.4, 0.0, 1))
    assert console.eta_seconds() is None  # one epoch: no rate yet
    clock[0] = 170.0
    console.on_trial_result(0, [], a, _epoch(2, 0.4, 0.0, 1))  # an epoch takes 10 s
    # a: 2 epochs left = 20 s; then 2 trials, one after the other (one slot), each 4 epochs x
    # 10 s (no scheduler: all epochs expected). The 50 s of set-up were the first trial's, which
    # started Ray's worker: the later trials reuse it, and no trial has shown a set-up of its own
    assert console.eta_seconds() == pytest.approx(20.0 + 2 * 40.0)
    clock[0] = 175.0  # half an epoch later, 5 s less
    assert console.eta_seconds() == pytest.approx(95.0)
    clock[0] = 190.0
    for epoch in (3, 4):
        console.on_trial_result(0, [], a, _epoch(epoch, 0.4, 0.0, 1, done=epoch == 4))
    console.on_trial_complete(0, [], a)
    b = _trial("bbbb0002", 1e-3)
    clock[0] = 192.0  # 2 s of hand-off (the driver plans, Ray places)
    console.on_trial_start(0, [], b)
    clock[0] = 207.0  # 15 s to its first epoch on a reused worker: 5 s of set-up
    console.on_trial_result(0, [], b, _epoch(1, 0.4, 0.0, 1))
    # b: 3 epochs left; the last trial: hand-off 2 s + set-up 5 s + 4 epochs
    assert console.eta_seconds() == pytest.approx(30.0 + 2.0 + 5.0 + 40.0)


def test_eta_of_a_running_trial_uses_its_own_epoch_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Configurations differ several-fold in speed (the demo: 15 to 41 s an epoch): a running
    trial's epochs left take what its own took, not the median over all trials."""
    clock = [0.0]
    monkeypatch.setattr("orchestrator.console.time.monotonic", lambda: clock[0])
    console = ConsoleCallback(total=3, already=0, epochs=4, stream=io.StringIO(), concurrency=3)
    fast = [_trial("fast0001", 1e-3), _trial("fast0002", 1e-3)]
    slow = _trial("slow0003", 1e-3)
    for trial in (*fast, slow):
        console.on_trial_start(0, [], trial)
    for epoch in (1, 2):
        clock[0] = 10.0 * epoch
        for trial in fast:
            console.on_trial_result(0, [], trial, _epoch(epoch, 0.4, 0.0, 1))
    for epoch, at in ((1, 30.0), (2, 60.0)):  # 30 s an epoch
        clock[0] = at
        console.on_trial_result(0, [], slow, _epoch(epoch, 0.4, 0.0, 1))
    # the fast ones are done by now (2 x 10 s left from t=20); the slow one: 2 x 30 s from t=60
    assert console.eta_seconds() == pytest.approx(60.0)


def test_eta_expects_the_mean_epoch_time_of_the_configurations_left(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The time left is a sum over configurations not sampled yet: their expected epoch time,
    which a slow configuration raises above the median (the demo: 14 to 41 s an epoch; the
    median underestimated the last trials, 0.61 of the time left at the 5th end)."""
    clock = [0.0]
    monkeypatch.setattr("orchestrator.console.time.monotonic", lambda: clock[0])
    console = ConsoleCallback(total=3, already=0, epochs=4, stream=io.StringIO(), concurrency=1)
    fast, slow = _trial("fast0001", 1e-3), _trial("slow0002", 1e-3)
    console.on_trial_start(0, [], fast)
    for epoch in (1, 2, 3, 4):  # 10 s an epoch
        clock[0] = 10.0 * epoch
        console.on_trial_result(0, [], fast, _epoch(epoch, 0.4, 0.0, 1, done=epoch == 4))
    console.on_trial_complete(0, [], fast)
    console.on_trial_start(0, [], slow)  # at 40 s, in the slot fast0001 freed
    for epoch, at in ((1, 50.0), (2, 120.0)):  # its second epoch: 70 s; then pruned
        clock[0] = at
        console.on_trial_result(0, [], slow, _epoch(epoch, 0.4, 0.0, 1, done=epoch == 2))
    console.on_trial_complete(0, [], slow)
    # gaps 10, 10, 10, 70: mean 25 (the median, 10, would say 35 s); the last trial expects
    # (2 x 4 prior + 4 + 2) / 4 = 3.5 epochs, no hand-off and no set-up beyond an epoch
    assert console.eta_seconds() == pytest.approx(3.5 * 25.0)


def _run_trials(console: ConsoleCallback, clock: list[float], stops: tuple[int, ...]) -> None:
    """Trials one after the other, 10 s an epoch, each stopped at its epoch in `stops`."""
    for k, stop in enumerate(stops):
        trial = _trial(f"trial{k:03d}", 1e-3)
        console.on_trial_start(0, [], trial)
        for epoch in range(1, stop + 1):
            clock[0] += 10.0
            console.on_trial_result(0, [], trial, _epoch(epoch, 0.4, 0.0, 1,
                                                         done=epoch == stop))
        console.on_trial_complete(0, [], trial)


def test_eta_learns_the_epochs_per_trial_from_pruned_trials(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr("orchestrator.console.time.monotonic", lambda: clock[0])
    console = ConsoleCallback(total=6, already=0, epochs=4, stream=io.StringIO())
    _run_trials(console, clock, (1, 1, 4))  # ASHA: two stopped at epoch 1, one ran all 4
    running = _trial("runs0004", 1e-3)
    console.on_trial_start(0, [], running)
    for epoch in (1, 2):
        clock[0] += 10.0
        console.on_trial_result(0, [], running, _epoch(epoch, 0.4, 0.0, 1))
    # the running trial is past epoch 2: the finished trials that ran past 2 ran 4 -> 2 left;
    # each of the 2 not started: (2 x 4 expected + 1 + 1 + 4 run) / 5 = 2.8 epochs
    assert console.epochs_left() == pytest.approx(2 + 2 * 2.8)
    assert console.eta_seconds() == pytest.approx(10.0 * (2 + 2 * 2.8))  # one slot, 10 s each


def test_eta_expects_what_asha_lets_a_trial_run_before_trials_end() -> None:
    """#24: the first ETA assumed every trial runs all its epochs (ASHA pruned 5 of 8 at the
    first rung): the scheduler's expectation is the prior, the finished trials refine it."""
    from orchestrator.console import asha_expected_epochs

    assert asha_expected_epochs(4, 2, 4) == pytest.approx(2.5)  # the demo: all to 2, 1/4 to 4
    assert asha_expected_epochs(30, 1, 4) == pytest.approx(1 + 3 / 4 + 12 / 16 + 14 / 64)
    assert asha_expected_epochs(6, 6, 3) == pytest.approx(6.0)  # no rung below max_t
    console = ConsoleCallback(total=8, already=0, epochs=4, stream=io.StringIO(),
                              expected_epochs=2.5, first_rung=2)
    assert console.epochs_left() == pytest.approx(8 * 2.5)
    console.trial_epochs += [4, 4]  # the first two fill the empty rung: promoted
    assert console.epochs_left() == pytest.approx(8 * (2 * 2.5 + 4 + 4) / 4)


def test_eta_of_the_last_trial_is_its_own_time_not_shared_with_an_idle_slot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two trials at once, 10 s an epoch each: when one ends and nothing is left to start, the
    other's 2 epochs take 20 s (an aggregate rate of 2 trials would say 10 s)."""
    clock = [0.0]
    monkeypatch.setattr("orchestrator.console.time.monotonic", lambda: clock[0])
    console = ConsoleCallback(total=2, already=0, epochs=4, stream=io.StringIO(), concurrency=2)
    a, b = _trial("aaaa0001", 1e-3), _trial("bbbb0002", 1e-3)
    console.on_trial_start(0, [], a)
    console.on_trial_start(0, [], b)
    for epoch in (1, 2):
        clock[0] += 10.0
        console.on_trial_result(0, [], a, _epoch(epoch, 0.4, 0.0, 1, done=epoch == 2))
        console.on_trial_result(0, [], b, _epoch(epoch, 0.4, 0.0, 1))
    console.on_trial_complete(0, [], a)  # pruned at 2
    assert console.eta_seconds() == pytest.approx(20.0)


def test_seed_from_the_store_gives_best_and_epochs_before_any_new_trial_ends() -> None:
    import pandas as pd

    out = io.StringIO()
    console = ConsoleCallback(total=4, already=2, epochs=4, stream=out)
    console.seed(pd.DataFrame([
        {"trial_id": "old00001", "status": "pruned", names.OBJECTIVE: 0.355, "epochs_run": 1,
         "param.train.lr": 1e-3, "param.model.pooling": "max"},
        {"trial_id": "old00002", "status": "failed", names.OBJECTIVE: 0.9, "epochs_run": 0,
         "param.train.lr": 2e-3, "param.model.pooling": None},
    ]))
    assert console.best is not None and console.best[:2] == (0.355, "old00001")
    assert console.trial_epochs == [1, 0]
    trial = _trial("new00003", 1e-3)
    console.on_trial_start(0, [], trial)
    console.on_trial_result(0, [], trial, _epoch(1, 0.30, 0.0, 1))
    console.on_trial_complete(0, [], trial)
    console.close()
    lines = out.getvalue().splitlines()
    assert "| best 0.355 |" in lines[1]
    assert lines[-1] == "best objective 0.3550: trial old00001 lr=0.001 pooling=max"


def test_on_a_terminal_the_status_line_is_live_and_lines_still_print() -> None:
    import os
    import pty

    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal:
        console = ConsoleCallback(total=1, already=0, epochs=2, stream=terminal)
        trial = _trial("dddd0004", 1e-3)
        console.on_trial_start(0, [], trial)
        console.on_trial_result(0, [], trial, _epoch(1, 0.4, 0.01, 2))
        assert console._status is not None  # rich's live status at the bottom
        console.on_trial_complete(0, [], trial)
        console.close()
        assert console._status is None
        terminal.flush()
        written = b""
        while chunk := _read_available(leader):  # before closing: then the pty reads EIO
            written += chunk
    os.close(leader)
    text = written.decode(errors="replace")
    assert "start  #1/1 dddd0004" in text and "epoch  dddd0004 1/4" in text
    assert "running 0 | completed 0 pruned 1" in text  # the live status line, last state


def _read_available(fd: int) -> bytes:
    import os
    import select

    ready, _, _ = select.select([fd], [], [], 0.5)
    return os.read(fd, 65536) if ready else b""


def test_on_a_terminal_the_clock_ticks_without_events() -> None:
    import os
    import pty
    import re

    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal:
        console = ConsoleCallback(total=2, already=0, epochs=2, stream=terminal)
        console.on_trial_start(0, [], _trial("eeee0005", 1e-3))
        written, deadline = b"", time.monotonic() + 3.5
        while time.monotonic() < deadline:  # no event for 3.5 s: rich's thread re-renders
            written += _read_available(leader)
        console.close()
    os.close(leader)
    clocks = set(re.findall(r"\| (\d+)s \| ETA", written.decode(errors="replace")))
    assert len(clocks) >= 3, clocks


def test_progress_lines_end_counters_at_the_total_and_print_each_fact_once() -> None:
    said: list[str] = []
    progress = ProgressLines("data: ", say=said.append)
    for message in ("synthetic: generating 800 utterances",
                    "synthetic: generated 700/800 utterances",
                    "synthetic: generated 800/800 utterances",  # reached: not said again
                    "synthetic: generated 800/800 utterances",  # #24: seen twice on the demo
                    "features logmel: 256/800 utterances", "features logmel: 512/800 utterances",
                    "cached /tmp/x.pt",
                    "baseline: eGeMAPS functionals 200/300 utterances",
                    "baseline: test UAR 0.781 over 5 members"):
        progress(message)
    progress.close()
    assert said == ["data: synthetic: generating 800 utterances",
                    "data: synthetic: generated 700/800 utterances",
                    "data: synthetic: generated 800/800 utterances",
                    "data: features logmel: 256/800 utterances",
                    "data: features logmel: 512/800 utterances",
                    "data: features logmel: 800/800 utterances",
                    "data: cached /tmp/x.pt",
                    "data: baseline: eGeMAPS functionals 200/300 utterances",
                    "data: baseline: eGeMAPS functionals 300/300 utterances"]


def test_tune_warnings_are_quiet_unless_verbose_the_waiting_one_too(
        capsys: pytest.CaptureFixture) -> None:
    """#24: trials waiting for resources are said once, by the console (the next test); Tune's
    own insufficient-resources warning, which said it a second time, is silenced with the rest."""
    import warnings

    from ray.tune.execution import insufficient_resources_manager as irm

    from orchestrator.quiet import quiet_logs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_logs(verbose=False)
        warnings.warn("Define-by-run function passed in the `space` argument took 20.5 seconds "
                      "to run. Ensure that actual computation ...", stacklevel=1)
    assert not caught
    message = ("Ignore this message if the cluster is autoscaling. "
               + irm.MSG_TUNE_START.format(wait_time=60)
               + irm.MSG_TUNE_INSUFFICIENT.format(asked_cpus=4, asked_gpus=1, cluster_cpus=2,
                                                  cluster_gpus=0) + irm.MSG_TUNE_END)
    for _ in range(3):
        irm.logger.warning(message)  # what Tune's InsufficientResourcesManager logs
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_a_trial_ray_cannot_place_gets_one_waiting_line_a_starting_one_none(
        ray_local, monkeypatch: pytest.MonkeyPatch) -> None:
    """#22.3 / #24: the console says that trials wait for resources once, when none runs and Ray
    has not placed a pending trial's placement group (real ones here: one asking a resource no
    node has; one placed, as when a trial's worker is slow to start, which is not waiting)."""
    from ray import tune
    from ray.tune.execution.placement_groups import PlacementGroupFactory
    from ray.tune.experiment import Trial
    from ray.util import placement_group, remove_placement_group

    from orchestrator import console

    tune.register_trainable("sersweep_waiting", lambda config: None)
    monkeypatch.setattr(console, "WAIT_NOTICE_S", 0.2)
    monkeypatch.setattr(console, "WAIT_RECHECK_S", 0.0)

    def lines(bundle: dict[str, float], placed: bool) -> list[str]:
        group = placement_group([bundle])  # what Tune asks Ray for when it schedules a trial
        try:
            if placed:
                ray_local.get(group.ready(), timeout=120)
            trial = Trial("sersweep_waiting", config={},
                          placement_group_factory=PlacementGroupFactory([bundle]))
            trial.create_placement_group_factory()  # what Tune does when it adds the trial
            out = io.StringIO()
            view = ConsoleCallback(total=2, already=0, stream=out)
            view.on_step_begin(0, [trial])
            assert out.getvalue() == ""  # not at once
            time.sleep(0.3)
            for step in (1, 2, 3):
                view.on_step_begin(step, [trial])
            return out.getvalue().splitlines()
        finally:
            remove_placement_group(group)

    assert lines({"CPU": 1.0}, placed=True) == []  # its worker is starting: no line
    (line,) = lines({"CPU": 1.0, "sersweep_absent": 1.0}, placed=False)  # once
    cluster = ray_local.cluster_resources()
    assert line.startswith("waiting: 1 trial(s) pending, none running for 0s: Ray cannot place "
                           "one (it asks 1 CPU, 1 sersweep_absent; the cluster has "
                           f"{cluster['CPU']:g} CPUs, 0 GPUs in all"), line


def test_pinned_lines_name_the_searched_keys_that_set_pins() -> None:
    tiny = Path(__file__).with_name("tiny_sweep.yaml")
    assert pinned_lines(tiny, ["model.pooling=max", "train.epochs=1", "model.pooling=mean"]) == [
        "--set model.pooling: pins a searched key to one value (it is not searched in this run)"]


@pytest.mark.slow  # the tiny sweep twice (2 trials, then 1 more): ~60 s on 2 shared cores
def test_a_resumed_sweep_shows_the_recorded_best_from_its_first_line(
        ray_local, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import pandas as pd

    from orchestrator import cli

    tiny = Path(__file__).with_name("tiny_sweep.yaml")
    args = [str(tiny), "--results", str(tmp_path), "--set", f"data.cache_dir={tmp_path / 'c'}",
            "--set", "model.pooling=mean"]
    assert cli.main([*args, "--trials", "2"]) == cli.EXIT_OK
    first = capsys.readouterr().out
    assert "--set model.pooling: pins a searched key" in first
    trials = pd.read_parquet(tmp_path / "tiny" / "trials")
    best = trials.sort_values(names.OBJECTIVE).iloc[-1]
    assert cli.main([*args, "--trials", "3"]) == cli.EXIT_OK
    out = capsys.readouterr().out.splitlines()
    epochs = [line for line in out if line.startswith("epoch")]
    assert epochs and f"| best {best[names.OBJECTIVE]:.3f} |" in epochs[0], epochs  # not "-"
    trials = pd.read_parquet(tmp_path / "tiny" / "trials")
    top = trials[names.OBJECTIVE].max()
    tied = trials.trial_id[trials[names.OBJECTIVE] == top]  # any of a tie
    (closing,) = [line for line in out if line.startswith("best objective")]
    assert closing.startswith(f"best objective {top:.4f}: trial ")
    assert closing.split()[4] in set(tied), (closing, list(tied))
    assert sum(line.startswith("ray: starting") for line in out) == 1
    assert sum(line.startswith("ray: ready in") for line in out) == 1


def test_a_racing_stage_epoch_counts_every_member_behind_its_mean() -> None:
    """A racing stage trains only its new test sets' members, but the epoch's mean and spread
    are over every member with a result (trainables/train.py): n counts those, so a spread is
    never shown beside n=1 (a real trainer's reports)."""
    trainer = LockstepTrainer(make_config(epochs=1, seeds=[0]), tiny_data(), CPU)
    trainer.start_stage(0, [0])
    first = trainer.run_epoch()
    trainer.start_stage(1, [1])
    second = trainer.run_epoch()
    out = io.StringIO()
    console = ConsoleCallback(total=1, already=0, epochs=1, stream=out)
    trial = _trial("aaaa0001", 1e-2)
    console.on_trial_start(0, [], trial)
    console.on_trial_result(0, [], trial, first)
    console.on_trial_result(0, [], trial, second)
    console.close()
    lines = [line for line in out.getvalue().splitlines() if line.startswith("epoch")]
    assert "(n=1)" in lines[0] and "±" not in lines[0]
    assert f"± {second[names.std_key(names.VAL_UAR)]:.3f} (n=2)" in lines[1]
