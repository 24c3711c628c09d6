"""The Optuna history a sweep builds while running equals the one a resume rebuilds from the
store (issue 13: pruned trials were told COMPLETE live but re-added PRUNED on resume).

Real Ray OptunaSearch (our SweepSearch), real Optuna, real Parquet: the searcher is driven
through the calls Tune makes (suggest, on_trial_result per epoch, on_trial_complete), the same
reports become store rows (store/rows.py), and study_with_history rebuilds from them."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest

from orchestrator.search import TrialSpace, study_with_history
from orchestrator.store import ResultStore
from orchestrator.store.rows import TrialBuffer, trial_rows
from orchestrator.sweepfile import load_spec
from trainables import names

SPEC = Path(__file__).parent / "tiny_sweep.yaml"


def _report(epoch: int, objective: float, done: bool, collapsed: bool = False) -> dict:
    members = [{"member": m, "fold": "f0", "seed": m, "val_uar": objective,
                "test_uar": objective, "collapsed": collapsed} for m in range(2)]
    return {names.EPOCH: epoch, "training_iteration": epoch, names.OBJECTIVE: objective,
            names.VAL_UAR_MEAN: objective, names.DONE: done,
            names.MEMBER_RESULTS_JSON: json.dumps(members), names.MEMBER_ROWS_JSON: "[]"}


# trial id -> (objectives per epoch, finished, collapsed, raised)
TRIALS = {
    "completed": ([0.30, 0.45, 0.50], True, False, False),
    "pruned": ([0.28], False, False, False),  # ASHA stopped it after epoch 1
    "collapsed": ([0.25, 0.25], True, True, False),
    "failed": ([0.31], False, False, True),
}


def _history(study: optuna.Study) -> list[tuple]:
    """(state, value, last step, its intermediate value) per trial: what the samplers read (a
    FAIL trial's intermediate values are read by none, and are not stored)."""
    out = []
    for t in study.trials:
        scored = t.state != optuna.trial.TrialState.FAIL and t.last_step is not None
        out.append((json.dumps(t.params, sort_keys=True), t.state, t.value,
                     t.last_step if scored else None,
                     t.intermediate_values[t.last_step] if scored else None))
    return sorted(out, key=lambda h: h[0])  # the store lists trials in its own order


def test_study_after_a_run_equals_the_resume_rebuild(tmp_path: Path) -> None:
    from orchestrator.search import SweepSearch

    spec = load_spec(SPEC)
    store = ResultStore(str(tmp_path), spec.name)
    storage, sampler, recorded = study_with_history(spec, store)
    assert recorded == 0
    searcher = SweepSearch(space=TrialSpace(spec), metric=names.OBJECTIVE, mode="max",
                           sampler=sampler, storage=storage, study_name=spec.name)
    for tid, (objectives, finished, collapsed, raised) in TRIALS.items():
        config = searcher.suggest(tid)
        buffer = TrialBuffer(started_at=0.0)
        for epoch, objective in enumerate(objectives, start=1):
            report = _report(epoch, objective, finished and epoch == len(objectives), collapsed)
            searcher.on_trial_result(tid, report)
            buffer.add(report)
        if raised:  # what Tune's controller calls for a trial that raised
            searcher.on_trial_complete(tid, error=True)
        else:
            searcher.on_trial_complete(tid, result=buffer.last)
        row, epochs, members = trial_rows(
            trial_id=tid, config=config, buffer=buffer, param_keys=spec.param_keys(),
            metric="val_uar", mode="max", status=None,
            error="RuntimeError: boom" if raised else None, trial_gpus=0.0)
        store.write_trial(row, epochs, members)
    live = _history(searcher._ot_study)
    assert [t.state for t in searcher._ot_study.trials] == [
        optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    storage, _, recorded = study_with_history(spec, store)
    rebuilt = optuna.load_study(study_name=spec.name, storage=storage)
    assert recorded == len(TRIALS)
    order = {tid: i for i, tid in enumerate(TRIALS)}
    stored = store.read_trials().assign(_o=lambda f: f["trial_id"].map(order)).sort_values("_o")
    assert list(stored["status"]) == ["completed", "pruned", "collapsed", "failed"]
    assert len({h[0] for h in live}) == len(TRIALS)  # distinct params: the match is 1:1
    assert _history(rebuilt) == live


def _by_trial_id(study: optuna.Study) -> dict[str, tuple]:
    """trial_id user attr -> (state, value, every intermediate value)."""
    return {t.user_attrs["trial_id"]: (t.state, t.value, dict(t.intermediate_values))
            for t in study.trials}


def test_every_epoch_reaches_optuna_live_and_in_the_rebuild(tmp_path: Path) -> None:
    """Issue 23.7: Tune hands the result its scheduler stops a trial on (ASHA's rung, or max_t)
    to on_trial_complete only, never to on_trial_result. Live, Optuna must still hold that
    epoch's value (a pruned trial's value is its last report, not the epoch before); rebuilt
    from the store, each trial carries every epoch, its start/end times and its trial_id, in
    start order."""
    from orchestrator.search import SweepSearch

    spec = load_spec(SPEC)
    store = ResultStore(str(tmp_path), spec.name)
    storage, sampler, _ = study_with_history(spec, store)
    searcher = SweepSearch(space=TrialSpace(spec), metric=names.OBJECTIVE, mode="max",
                           sampler=sampler, storage=storage, study_name=spec.name)
    # the store lists trials by file name; start order differs from it on purpose
    starts = {"completed": 300.0, "pruned": 100.0, "collapsed": 200.0, "failed": 400.0}
    for tid, (objectives, finished, collapsed, raised) in TRIALS.items():
        config = searcher.suggest(tid)
        buffer = TrialBuffer(started_at=1_700_000_000.0 + starts[tid])
        reports = [_report(e, o, finished and e == len(objectives), collapsed)
                   for e, o in enumerate(objectives, start=1)]
        for report in reports:
            buffer.add(report)
        if raised:
            for report in reports:
                searcher.on_trial_result(tid, report)
            searcher.on_trial_complete(tid, error=True)
        else:  # the scheduler stopped it on its last result: Tune's STOP path
            for report in reports[:-1]:
                searcher.on_trial_result(tid, report)
            searcher.on_trial_complete(tid, result=reports[-1])
        row, epochs, members = trial_rows(
            trial_id=tid, config=config, buffer=buffer, param_keys=spec.param_keys(),
            metric="val_uar", mode="max", status=None,
            error="RuntimeError: boom" if raised else None, trial_gpus=0.0,
            ended_at=1_700_000_050.0 + starts[tid])
        store.write_trial(row, epochs, members)
    live = _by_trial_id(searcher._ot_study)
    for tid, (objectives, _, _, _) in TRIALS.items():
        assert live[tid][2] == dict(enumerate(objectives, start=1)), tid
    assert live["pruned"][:2] == (optuna.trial.TrialState.PRUNED, 0.28)
    assert live["completed"][:2] == (optuna.trial.TrialState.COMPLETE, 0.50)

    storage, _, _ = study_with_history(spec, store)
    rebuilt = optuna.load_study(study_name=spec.name, storage=storage)
    assert _by_trial_id(rebuilt) == live
    assert [t.user_attrs["trial_id"] for t in rebuilt.trials] == [
        "pruned", "collapsed", "completed", "failed"]  # start order
    for t in rebuilt.trials:
        start = 1_700_000_000.0 + starts[t.user_attrs["trial_id"]]
        assert t.datetime_start.timestamp() == start
        assert t.datetime_complete.timestamp() == start + 50.0


def _journal_matches_store(sweep_dir: Path) -> dict[str, tuple]:
    """Every store trial is in the sweep's journal once, with the store's state, value, every
    epoch's objective, start order; returns the journal by trial_id."""
    from orchestrator.search import trial_state
    from orchestrator.store import schema
    from orchestrator.store.journal import JOURNAL_FILE, open_journal

    study = optuna.load_study(study_name="tiny",
                              storage=open_journal(sweep_dir / JOURNAL_FILE))
    rows = {r["trial_id"]: r for r in pd.read_parquet(sweep_dir / "trials").to_dict("records")}
    journal = _by_trial_id(study)
    assert sorted(journal) == sorted(rows)
    for tid, (state, value, steps) in journal.items():
        row = rows[tid]
        assert state == trial_state(row), tid
        if state != optuna.trial.TrialState.FAIL:
            assert value == row[schema.OBJECTIVE], tid
        epochs = json.loads(row[schema.OBJECTIVE_BY_EPOCH])
        assert steps == {int(e): v for e, v in epochs.items()}, tid
        assert max(steps) == row[schema.EPOCHS_RUN], tid  # no epoch missing at the end
    return journal


@pytest.mark.slow  # two runs of the tiny sweep under ASHA: ~60 s on 2 shared cores
def test_the_journal_matches_the_store_after_a_live_run_and_after_a_resume(
    ray_local, tmp_path: Path
) -> None:
    from orchestrator import cli

    args = [str(SPEC), "--results", str(tmp_path), "--set", "train.epochs=3",
            "--set", "search.scheduler.type=asha", "--set", "search.scheduler.grace_period=1",
            "--set", f"data.cache_dir={tmp_path / 'c'}"]
    assert cli.main([*args, "--trials", "3"]) in (cli.EXIT_OK, cli.EXIT_TRIALS_FAILED)
    live = _journal_matches_store(tmp_path / "tiny")
    assert cli.main([*args, "--trials", "4"]) in (cli.EXIT_OK, cli.EXIT_TRIALS_FAILED)
    resumed = _journal_matches_store(tmp_path / "tiny")
    assert {tid: resumed[tid] for tid in live} == live  # the rebuild is what Optuna heard live
