"""A sweep longer than search.tuner_trials runs as consecutive Tuners, each resumed from the store
like a new run: real Ray, real Optuna, real Parquet (tiny_sweep.yaml, 5 trials in parts of 2)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from orchestrator import cli
from orchestrator.search import make_sampler, sample_params
from orchestrator.store.journal import JOURNAL_FILE, open_journal
from orchestrator.sweepfile import SpecError, load_spec

TINY = Path(__file__).with_name("tiny_sweep.yaml")
TRIALS, PART = 5, 2



def test_tuner_trials_defaults_to_200_and_must_be_a_positive_int() -> None:
    assert load_spec(TINY).search.tuner_trials == 200
    assert load_spec(TINY, overrides=["search.tuner_trials=7"]).as_dict()["search"][
        "tuner_trials"] == 7  # recorded in spec.yaml
    for bad, said in ((0, "tuner_trials >= 1 must hold, but got 0"), (2.5, "expected int")):
        with pytest.raises(SpecError, match="search.tuner_trials") as error:
            load_spec(TINY, overrides=[f"search.tuner_trials={bad}"])
        assert said in str(error.value)


def _first_draws(spec, recorded: int, n: int) -> list[dict]:
    """The first `n` configs the sweep's sampler proposes when `recorded` trials are in the
    store (seed + recorded; TPE's start-up draws do not depend on the history itself)."""
    study = optuna.create_study(sampler=make_sampler(spec, recorded=recorded),
                                direction="maximize")
    return [sample_params(spec, study.ask()) for _ in range(n)]


@pytest.mark.slow  # three Tuners of the tiny sweep: ~75 s on 2 shared cores
def test_parts_record_each_trial_once_and_resume_the_study(
    ray_local, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = [str(TINY), "--results", str(tmp_path), "--trials", str(TRIALS),
            "--set", f"search.tuner_trials={PART}", "--set", f"data.cache_dir={tmp_path / 'c'}"]
    assert cli.main(args) == cli.EXIT_OK
    out = capsys.readouterr().out
    sweep_dir = tmp_path / "tiny"

    trials = pd.read_parquet(sweep_dir / "trials").sort_values("started_at")
    assert len(trials) == TRIALS and trials.trial_id.is_unique
    assert trials.optuna_params_json.is_unique, "a configuration trained twice"
    epochs = pd.read_parquet(sweep_dir / "epochs")
    assert len(epochs) == TRIALS * 2  # 1 member x 2 epochs, no scheduler
    assert not epochs.duplicated(["trial_id", "member", "epoch"]).any()
    # three Tune experiments, one per part
    assert len([p for p in (sweep_dir / "_tune").iterdir() if p.name.startswith("run-")]) == 3

    # The journal is the study of the last part: every trial of the earlier parts in it, once.
    study = optuna.load_study(study_name="tiny", storage=open_journal(sweep_dir / JOURNAL_FILE))
    assert len(study.trials) == TRIALS
    assert sorted(json.dumps(t.params, sort_keys=True) for t in study.trials) == sorted(
        json.dumps(json.loads(p), sort_keys=True) for p in trials.optuna_params_json)

    # Each part drew what a resumed run draws: its sampler seeded with seed + recorded (a part
    # started like a fresh run would propose the first part's configurations again).
    spec = load_spec(TINY)
    drawn = [json.loads(p) for p in trials.optuna_params_json]
    for start in range(0, TRIALS, PART):
        part = drawn[start:start + PART]
        expected = _first_draws(spec, recorded=start, n=len(part))
        key = lambda d: json.dumps(d, sort_keys=True)  # noqa: E731
        assert sorted(map(key, part)) == sorted(map(key, expected)), f"part from trial {start}"

    # numbering stays sweep-wide across the parts
    assert f"start  #{TRIALS}/{TRIALS} " in out and f"end    [{TRIALS}/{TRIALS}]" in out


@pytest.mark.slow  # ~20 s
def test_a_signal_stops_every_part_not_just_the_running_one(
    ray_local, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """SIGINT once the first one-trial part recorded its trial: the run exits 130 without
    starting the remaining parts (each part would otherwise run on, as a fresh Tuner)."""
    trials_dir = tmp_path / "tiny" / "trials"

    def interrupt_after_first_trial() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any(trials_dir.glob("*.parquet")):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # handled in the main thread by interrupt.py

    args = [str(TINY), "--results", str(tmp_path), "--trials", "4",
            "--set", "search.tuner_trials=1", "--set", f"data.cache_dir={tmp_path / 'c'}"]
    sender = threading.Thread(target=interrupt_after_first_trial, daemon=True)
    sender.start()
    assert cli.main(args) == 130
    sender.join(5)
    assert "interrupted (SIGINT)" in capsys.readouterr().err
    recorded = pd.read_parquet(trials_dir)
    assert len(recorded) == 1, recorded  # the trial of part 2, if started, left no row
