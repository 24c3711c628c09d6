"""Racing over folds (orchestrator/racing.py, the stage loop of trainables/trainable.py) and the
member-epochs accounting: the judge on constructed member tables, then real sweeps (real Ray,
Optuna, Parquet, torch) on the tiny sweep with 3 folds against a constructed incumbent."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest

from orchestrator import cli, racing
from orchestrator.search import PARTIAL, study_with_history
from orchestrator.store import ResultStore, schema, write_spec
from orchestrator.store.journal import journal_path
from orchestrator.sweepfile import load_spec
from trainables import names
from trainables.data import prepare_data

TINY = str(Path(__file__).with_name("tiny_sweep.yaml"))
INCUMBENT = "incumb00"


def _members(values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"fold": fold, "seed": seed, "val_uar": v}
                         for fold, vs in values.items() for seed, v in enumerate(vs)])


def _report(members: pd.DataFrame) -> dict:
    return {names.MEMBER_RESULTS_JSON: members.to_json(orient="records")}


def _config(incumbent: pd.DataFrame | None, alpha: float = 0.05) -> dict:
    members = None if incumbent is None else incumbent.to_json(orient="records")
    return {"runtime": {"metric": "val_uar", "mode": "max", "racing": {
        "first": 2, "alpha": alpha, "incumbent": "x", "incumbent_members": members}}}


def test_the_judge_stops_only_what_is_shown_worse() -> None:
    best = _members({"f1": [0.70, 0.72], "f2": [0.65, 0.66], "f3": [0.75, 0.74]})
    worse = _members({"f1": [0.40, 0.42], "f2": [0.35, 0.36], "f3": [0.44, 0.45]})
    tied = _members({"f1": [0.72, 0.70], "f2": [0.64, 0.65], "f3": [0.74, 0.76]})
    assert not racing.keep_racing(_config(best), _report(worse))
    assert racing.keep_racing(_config(best), _report(tied))
    assert racing.keep_racing(_config(worse), _report(best))  # better: one-sided
    assert racing.keep_racing(_config(None), _report(worse))  # no incumbent yet
    # the seeds of a fold are one test set: 1 fold paired = no test, never a stop
    assert racing.keep_racing(_config(best), _report(worse[worse.fold == "f1"]))


def test_one_sided_p_matches_the_t_test() -> None:
    from scipy import stats

    a = _members({"f1": [0.5], "f2": [0.42], "f3": [0.47], "f4": [0.40]})
    b = _members({"f1": [0.55], "f2": [0.50], "f3": [0.46], "f4": [0.48]})
    result = racing.compare_members(a, b, "val_uar", "max")
    diff = a.val_uar.to_numpy() - b.val_uar.to_numpy()
    expected = stats.ttest_1samp(diff, 0.0, alternative="less").pvalue
    assert racing.worse_p(result, "max") == pytest.approx(expected, rel=1e-9)
    assert racing.worse_p(result, "min") == pytest.approx(1 - expected, rel=1e-9)


def test_member_epochs_line_per_status() -> None:
    trials = pd.DataFrame({"status": ["completed", "raced_out", "completed", "pruned"],
                           "member_epochs": [6, 2, 6, 1], "gpu_hours": [0.0] * 4,
                           "stage": ["search", "search", "confirm", "search"]})
    assert racing.member_epochs_line(trials) == (
        "member-epochs: 15 (completed 6, pruned 1, raced_out 2; confirm 6)")
    trials["test_sets"] = [3, 1, 3, 1]  # the raced_out trial trained 1 of 3 test sets
    assert racing.member_epochs_line(trials).endswith(", racing saved ~4")


def _spec_args(results: Path, cache: Path, alpha: float, trials: int) -> list[str]:
    return [TINY, "--results", str(results), "--set", f"data.cache_dir={cache}",
            "--set", "data.use_folds=3", "--set", "train.epochs=1", "--set", "search.confirm=null",
            "--set", f"search.racing={{first: 2, alpha: {alpha}}}",
            "--set", f"search.trials={trials}", "--set", "search.max_concurrent=1"]


def _record_incumbent(results: Path, cache: Path, value: float) -> list[str]:
    """A completed search trial in the store whose every member scored `value`, recorded as a
    sweep records one (spec.yaml and the sweep's identity beside it); its folds."""
    spec = load_spec(TINY, overrides=_spec_args(results, cache, 0.3, 2)[4::2])
    folds = [f.name for f in prepare_data(spec.base_config()["data"]).folds]
    members = [{"member": i, "fold": fold, "seed": 0, "val_uar": value, "test_uar": value}
               for i, fold in enumerate(folds)]
    store = ResultStore(str(results), spec.name)
    store.claim_identity()
    store.write_identity()
    write_spec(store.sweep_dir, spec.as_dict())
    store.write_trial(
        {"trial_id": INCUMBENT, "status": "completed", "objective": value, "metric": "val_uar",
         "mode": "max", "epochs_run": 1, "members": 3, "stage": "search", "member_epochs": 3,
         "optuna_params_json": "{}"},
        [], members)
    return folds


@pytest.mark.slow
def test_a_worse_config_is_raced_out_and_a_resume_races_the_same_incumbent(
        ray_local, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folds = _record_incumbent(tmp_path, cache, 1.0)  # nothing trained reaches val_uar 1.0
    assert cli.main(_spec_args(tmp_path, cache, 0.3, 2)) == cli.EXIT_OK
    sweep_dir = tmp_path / "tiny"
    trials = pd.read_parquet(sweep_dir / "trials").set_index("trial_id")
    raced = trials.drop(INCUMBENT)
    assert list(raced.status) == ["raced_out"]  # ended after its first 2 test sets
    assert list(raced.raced_against) == [INCUMBENT] and list(raced.test_sets) == [2]
    assert list(raced.member_epochs) == [2]  # 2 folds x 1 seed x 1 epoch: the third never ran
    members = pd.read_parquet(sweep_dir / "members")
    trained = members[members.trial_id == raced.index[0]]
    assert sorted(trained.fold) == sorted(folds[:2])
    objective = float(raced.objective.iloc[0])  # the value on the test sets done, told partial
    assert objective == pytest.approx(trained.val_uar.mean())
    live = optuna.load_study(study_name="tiny", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal_path(str(sweep_dir))))))
    told = [t for t in live.trials if t.user_attrs.get(PARTIAL)]
    assert len(told) == 1 and told[0].state == optuna.trial.TrialState.COMPLETE
    assert told[0].value == pytest.approx(objective) and told[0].user_attrs["test_sets"] == 2

    # resume: the new trial races against the incumbent the store holds (the raced_out trial
    # never becomes one), and the rebuilt study marks the raced_out trial partial as well
    spec = load_spec(TINY, overrides=_spec_args(tmp_path, cache, 0.3, 3)[4::2])
    storage, _, recorded = study_with_history(spec, ResultStore(str(tmp_path), "tiny"))
    rebuilt = optuna.load_study(study_name="tiny", storage=storage).trials
    partial = [t.user_attrs for t in rebuilt if t.user_attrs.get(PARTIAL)]
    assert recorded == 2 and len(partial) == 1 and partial[0]["test_sets"] == 2
    assert cli.main(_spec_args(tmp_path, cache, 0.3, 3)) == cli.EXIT_OK
    trials = pd.read_parquet(sweep_dir / "trials")
    assert len(trials) == 3 and set(trials.raced_against.dropna()) == {INCUMBENT}


@pytest.mark.slow
def test_a_config_not_worse_trains_every_test_set(ray_local, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    cache = tmp_path / "cache"
    folds = _record_incumbent(tmp_path, cache, 0.0)  # anything trained is at least as good
    assert cli.main(_spec_args(tmp_path, cache, 0.3, 2)) == cli.EXIT_OK
    assert "member-epochs: 6 (completed 6)" in capsys.readouterr().out
    trials = pd.read_parquet(tmp_path / "tiny" / "trials").set_index("trial_id")
    row = trials.drop(INCUMBENT).iloc[0]
    assert row.status == "completed" and row.raced_against == INCUMBENT
    assert row.test_sets == 3 and row.member_epochs == 3
    members = pd.read_parquet(tmp_path / "tiny" / "members")
    assert sorted(members[members.trial_id == row.name].fold) == sorted(folds)
    assert json.loads(row.config_json)["train"]["seeds"] == [0]
    assert schema.RACED_OUT not in set(trials.status)
