"""The live console as a CI log sees it: one plain line per event, no control codes, the epoch
rate's ETA. Trials are Tune-like records (trial_id + config), the only part of a Trial it reads."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from orchestrator.console import ConsoleCallback
from trainables import names


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


def test_eta_is_the_epoch_rate_over_the_epochs_left(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("orchestrator.console.time.monotonic", lambda: clock[0])
    console = ConsoleCallback(total=3, already=0, epochs=4, stream=io.StringIO())
    a = _trial("aaaa0001", 1e-3)
    assert console.eta_seconds() is None  # no epoch yet: no rate
    console.on_trial_start(0, [], a)
    clock[0] = 110.0
    console.on_trial_result(0, [], a, _epoch(1, 0.4, 0.0, 1))  # 1 epoch / 10 s
    # left: 3 epochs of the running trial + 2 trials not started x 4 epochs = 11 -> 110 s
    assert console.eta_seconds() == pytest.approx(110.0)
    clock[0] = 120.0
    console.on_trial_result(0, [], a, _epoch(2, 0.4, 0.0, 1, done=True))  # pruned at 2
    console.on_trial_complete(0, [], a)
    # a pruned trial leaves nothing: 8 epochs of the 2 not started at 2 epochs / 20 s
    assert console.eta_seconds() == pytest.approx(80.0)


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
