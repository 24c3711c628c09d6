"""The Parquet result store: atomic per-trial files, tolerant reads, and the Ray Tune callback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from orchestrator.store import ResultStore, StoreCallback, schema, write_spec
from orchestrator.store.rows import TrialBuffer, trial_rows
from trainables import names


def _member_result(member: int, uar: float, collapsed: bool = False) -> dict:
    return {
        "member": member, "fold": f"f{member % 2}", "seed": member // 2, "best_epoch": 2,
        "val_acc": uar + 0.05, "val_uar": uar, "val_f1_macro": uar - 0.02,
        "val_f1_weighted": uar, "val_loss": 1.0 - uar, "test_acc": uar + 0.01,
        "test_uar": uar - 0.01, "test_f1_macro": uar - 0.03, "test_f1_weighted": uar,
        "test_confusion": [[3, 1], [0, 4]], "n_test": 8, "collapsed": collapsed,
        "stopped_epoch": None,
    }


def _report(epoch: int, uars: list[float], done: bool, collapsed: bool = False) -> dict:
    """A well-formed per-epoch report of a trial with len(uars) members."""
    rows = [
        {"member": i, "fold": f"f{i % 2}", "seed": i // 2, "epoch": epoch,
         "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch, "val_acc": u, "val_uar": u * epoch,
         "val_f1_macro": u, "val_f1_weighted": u, "lr": 1e-3, "seconds": 0.5,
         "collapsed": collapsed, "active": not collapsed}
        for i, u in enumerate(uars)
    ]
    results = [_member_result(i, u, collapsed) for i, u in enumerate(uars)]
    runtime = {"micro_batch": 8, "accumulation": 4, "oom_retries": 1, "device": "cpu",
               "measured_peak_bytes": 1000, "estimated_peak_bytes": None, "host": "h",
               "node_id": "n1", "gpu_ids": []}
    out = {
        names.EPOCH: epoch, names.OBJECTIVE: float(np.mean(uars)),
        names.MEMBERS_ACTIVE: 0 if collapsed else len(uars),
        names.MEMBERS_COLLAPSED: len(uars) if collapsed else 0,
        names.MEMBER_ROWS_JSON: json.dumps(rows), names.MEMBER_RESULTS_JSON: json.dumps(results),
        names.RUNTIME_JSON: json.dumps(runtime), names.DONE: done,
    }
    for m in ("acc", "uar", "f1_macro", "f1_weighted", "loss"):
        out[f"val_{m}_mean"], out[f"val_{m}_std"] = float(np.mean(uars)), float(np.std(uars))
    out["train_loss_mean"], out["train_loss_std"] = 1.0, 0.0
    return out


CONFIG = {"train": {"lr": 1e-3, "seeds": [0, 1]}, "model": {"layers": 2, "pooling": "max"},
          "optuna:train.lr": 1e-3}
KEYS = ["train.lr", "train.seeds", "model.layers", "model.pooling"]


def _rows(trial_id: str, reports: list[dict], status: str | None = None, error=None):
    buffer = TrialBuffer(started_at=1_700_000_000.0)
    for r in reports:
        buffer.add(r)
    return trial_rows(trial_id=trial_id, config=CONFIG, buffer=buffer, param_keys=KEYS,
                      metric="val_uar", mode="max", status=status, error=error, trial_gpus=0.5,
                      ended_at=1_700_000_100.0)


def test_rows_from_reports_aggregate_members_and_keep_param_types() -> None:
    uars = [0.5, 0.6, 0.7, 0.4]
    row, epochs, members = _rows("t1", [_report(1, uars, False), _report(2, uars, True)])
    assert row["status"] == "completed" and row["epochs_run"] == 2
    assert row["val_uar_mean"] == pytest.approx(np.mean(uars))
    assert row["test_f1_macro_std"] == pytest.approx(np.std(np.array(uars) - 0.03, ddof=1))
    assert row["param.train.lr"] == 1e-3 and row["param.model.layers"] == 2
    assert row["param.train.seeds"] == "[0, 1]" and row["param.model.pooling"] == "max"
    assert json.loads(row["optuna_params_json"]) == {"train.lr": 1e-3}
    assert row["wall_seconds"] == pytest.approx(100.0)
    assert row["gpu_hours"] == pytest.approx(100.0 / 3600 * 0.5)
    assert len(epochs) == 8 and len(members) == 4
    assert members[0]["test_confusion"] == [[3, 1], [0, 4]]  # integer lists, not JSON text
    pruned, _, _ = _rows("t2", [_report(1, uars, False)])
    assert pruned["status"] == "pruned"
    collapsed, _, _ = _rows("t3", [_report(1, uars, True, collapsed=True)])
    assert collapsed["status"] == "collapsed" and collapsed["members_collapsed"] == 4


@pytest.mark.parametrize("as_uri", [False, True])
def test_write_read_replace_and_dedupe(tmp_path: Path, as_uri: bool) -> None:
    root = tmp_path.as_uri() if as_uri else str(tmp_path)
    store = ResultStore(root, "demo")
    row, epochs, members = _rows("t1", [_report(1, [0.5, 0.6], False)])
    again = dict(epochs[0], val_uar=0.99)  # a restored trial re-reports epoch 1 of member 0
    store.write_trial(row, epochs + [again], members)
    store.write_trial(row, epochs + [again], members)  # a rewrite replaces, never duplicates
    assert store.completed_trial_ids() == {"t1"}
    trials = store.read_trials()
    assert len(trials) == 1 and trials.loc[0, "sweep"] == "demo"
    assert str(trials["started_at"].dtype).startswith("datetime64")
    epoch_file = tmp_path / "demo" / "epochs" / "t1.parquet"
    frame = pd.read_parquet(epoch_file)
    assert len(frame) == 2
    assert frame.set_index("member").loc[0, "val_uar"] == 0.99
    # every fixed column keeps its declared type
    assert pq.read_schema(epoch_file).field("epoch").type == schema.EPOCHS_SCHEMA.field(
        "epoch").type
    assert not [p for p in (tmp_path / "demo").rglob("*") if ".tmp-" in p.name]
    write_spec(store.sweep_dir, {"name": "demo", "search": {"metric": "val_uar"}})
    assert yaml.safe_load((tmp_path / "demo" / "spec.yaml").read_text())["name"] == "demo"


def test_truncated_file_is_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    store = ResultStore(str(tmp_path), "demo")
    for tid in ("a", "b"):
        store.write_trial(*_rows(tid, [_report(1, [0.5], True)]))
    bad = tmp_path / "demo" / "trials" / "b.parquet"
    bad.write_bytes(bad.read_bytes()[:40])
    (tmp_path / "demo" / "trials" / ".c.parquet.tmp-123").write_bytes(b"half-written")
    with caplog.at_level(logging.WARNING):
        trials = store.read_trials()
    assert list(trials["trial_id"]) == ["a"]
    assert str(bad) in caplog.text


def _tiny_trainable(config: dict) -> None:
    from ray import tune

    from trainables.errors import DoesNotFitError

    kind = config["train"]["kind"]
    if kind == "no_fit":
        raise DoesNotFitError("batch of 1 needs 9 GiB, budget 1 GiB")
    uars = [0.4 + 0.1 * config["model"]["layers"], 0.5]
    epochs = 3 if kind in ("done", "crash") else 2
    for epoch in range(1, epochs + 1):
        if kind == "crash" and epoch == 3:
            raise RuntimeError("loss is nan at epoch 3")
        done = kind == "done" and epoch == epochs
        tune.report(_report(epoch, uars, done, collapsed=kind == "collapse"))


def test_callback_records_every_outcome_through_a_real_tuner(tmp_path: Path, ray_local) -> None:
    from ray import tune

    store = ResultStore(str(tmp_path / "results"), "tiny")
    callback = StoreCallback(store, ["train.kind", "model.layers", "train.lr"], "val_uar", "max",
                             extra={"teacher_sweep": "teach", "teacher_trial": "t0"})
    # one trial per outcome (each trial is a Ray actor: seconds on 2 shared cores); model.layers
    # is fixed, a recorded parameter all the same, and sets the first member's val_uar
    space = {"train": {"kind": tune.grid_search(["done", "pruned", "crash", "no_fit", "collapse"]),
                       "lr": 1e-3},
             "model": {"layers": 2}}
    tuner = tune.Tuner(
        _tiny_trainable, param_space=space,
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), callbacks=[callback],
                                  verbose=0, failure_config=tune.FailureConfig(max_failures=0)),
    )
    tuner.fit()
    trials = pd.read_parquet(tmp_path / "results" / "tiny" / "trials")
    assert len(trials) == 5 and trials["trial_id"].is_unique
    by_kind = trials.groupby("param.train.kind")["status"].agg(set).to_dict()
    assert by_kind == {"done": {"completed"}, "pruned": {"pruned"}, "crash": {"failed"},
                       "no_fit": {"does_not_fit"}, "collapse": {"collapsed"}}
    crash = trials[trials["param.train.kind"] == "crash"].iloc[0]
    assert "loss is nan at epoch 3" in crash["error"] and crash["epochs_run"] == 2
    assert trials["param.model.layers"].dtype == np.int64
    assert set(trials["teacher_sweep"]) == {"teach"}
    glob = str(tmp_path / "results" / "*" / "epochs" / "*.parquet")
    per_trial = duckdb.sql(
        f"select trial_id, count(*) n, max(epoch) e from '{glob}' group by trial_id"
    ).df().set_index("trial_id")
    done = trials[trials["status"] == "completed"]["trial_id"]
    assert (per_trial.loc[done, "n"] == 6).all() and (per_trial.loc[done, "e"] == 3).all()
    members = duckdb.sql(
        f"select * from '{tmp_path}/results/tiny/members/*.parquet'").df()
    assert len(members) == 2 * 4  # 4 trials reported; the no_fit one never did
    assert set(trials["param.model.layers"]) == {2}
    completed = trials[trials["status"] == "completed"]
    assert completed["val_uar_mean"].iloc[0] == pytest.approx(np.mean([0.6, 0.5]))


def test_distillation_and_multi_corpus_member_fields_are_stored_as_json(tmp_path: Path) -> None:
    report = _report(1, [0.5, 0.6], True)
    results = json.loads(report[names.MEMBER_RESULTS_JSON])
    for result in results:
        result["agreement_acc"] = 0.75
        result["agreement_confusion"] = [[2, 0], [1, 1]]
        result["test_uar_by_corpus"] = {"meld": 0.4, "iemocap": 0.6}
    report[names.MEMBER_RESULTS_JSON] = json.dumps(results)
    row, epochs, members = _rows("t9", [report])
    ResultStore(str(tmp_path), "s").write_trial(row, epochs, members)
    stored = pd.read_parquet(tmp_path / "s" / "members")
    assert stored["agreement_acc"].tolist() == [0.75, 0.75]
    assert json.loads(stored["agreement_confusion"][0]) == [[2, 0], [1, 1]]
    assert json.loads(stored["test_uar_by_corpus"][1]) == {"meld": 0.4, "iemocap": 0.6}


def test_console_and_store_agree_on_a_collapsed_trial() -> None:
    """One status decision (schema.trial_status): a trial whose members all collapsed is
    `collapsed` in the store's row AND on the console (the console used to say completed)."""
    import io

    from ray.tune.experiment import Trial

    from orchestrator.console import ConsoleCallback

    reports = [_report(1, [0.25, 0.25], False, collapsed=True),
               _report(2, [0.25, 0.25], True, collapsed=True)]
    row, _, _ = _rows("t-collapsed", reports)
    assert row["status"] == schema.COLLAPSED
    trial = Trial("trainable", config=CONFIG, trial_id="t-collapsed", stub=True)
    stream = io.StringIO()
    console = ConsoleCallback(total=1, already=0, stream=stream)
    for report in reports:
        console.on_trial_result(0, [], trial, report)
    console.on_trial_complete(0, [], trial)
    end = [line for line in stream.getvalue().splitlines() if line.startswith("end ")]
    assert len(end) == 1 and f"t-collapsed {schema.COLLAPSED}" in end[0], end
    assert console.pruned == 0 and console.failed == 0
