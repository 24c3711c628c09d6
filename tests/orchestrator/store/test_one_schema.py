"""One schema per sweep (issue 23.2): every trials file of a sweep has the same columns with the
same types, fixed by the search-space declaration, whatever values were drawn; so pandas,
pyarrow (read_table and dataset), polars and DuckDB read the whole folder without options.

The store is made by an adversarial search space: a numeric choice drawn as int in one trial and
float in another, a mixed text/int choice, list choices, a conditional param absent from some
trials, failed and does_not_fit trials (no reports at all), and a resume (a second ResultStore
writing into the same sweep)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from orchestrator.store import ResultStore, schema
from orchestrator.store.rows import TrialBuffer, trial_rows
from orchestrator.sweepfile import ParamSpec
from trainables import names

PARAMS = [
    ParamSpec("train.weight_decay", "choice", choices=(0, 0.1)),  # int and float
    ParamSpec("model.dropout", "choice", choices=(0, 0.25, 0.5)),
    ParamSpec("model.layers", "int", low=1, high=4),
    ParamSpec("train.lr", "loguniform", low=1e-4, high=1e-2),
    ParamSpec("model.kind", "choice", choices=("auto", 3)),  # mixed text / int
    ParamSpec("model.hidden", "choice", choices=((32,), (64, 32))),  # lists
    ParamSpec("train.amp", "choice", choices=(True, False)),
    ParamSpec("model.heads", "choice", choices=(2, 4),
              condition=(("model.kind", ("auto",)),)),  # absent when kind == 3
]
KEYS = [p.key for p in PARAMS]


def _config(wd, dropout, layers, lr, kind, hidden, amp, heads) -> dict:
    model = {"dropout": dropout, "layers": layers, "kind": kind, "hidden": hidden}
    if heads is not None:
        model["heads"] = heads
    return {"train": {"weight_decay": wd, "lr": lr, "amp": amp}, "model": model}


def _report(epoch: int, uar: float, done: bool) -> dict:
    member = {"member": 0, "fold": "f0", "seed": 0, "best_epoch": epoch, "val_uar": uar,
              "test_uar": uar, "collapsed": False, "test_confusion": [[2, 1], [1, 2]]}
    rows = [{"member": 0, "fold": "f0", "seed": 0, "epoch": epoch, "val_uar": uar,
             "train_loss": 1.0, "collapsed": False, "active": True}]
    return {names.EPOCH: epoch, names.OBJECTIVE: uar, names.DONE: done,
            names.MEMBER_RESULTS_JSON: json.dumps([member]),
            names.MEMBER_ROWS_JSON: json.dumps(rows)}


# trial id -> (config, reports, error)
TRIALS = {
    "t_int": (_config(0, 0, 1, 1e-3, "auto", [32], True, 2),
              [_report(1, 0.4, False), _report(2, 0.5, True)], None),
    "t_float": (_config(0.1, 0.25, 3, 2e-3, 3, [64, 32], False, None),
                [_report(1, 0.45, True)], None),
    "t_failed": (_config(0, 0.5, 2, 5e-4, 3, [32], True, None), [],
                 "RuntimeError: loss is nan"),
    "t_nofit": (_config(0.1, 0, 4, 1e-4, "auto", [64, 32], False, 4), [],
                "DoesNotFitError: a batch of 1 needs 9 GiB, the budget is 1 GiB"),
}
RESUMED = {
    "t_resumed": (_config(0, 0.5, 2, 3e-3, "auto", [32], True, 4),
                  [_report(1, 0.3, False)], None),  # pruned
}


def _write(store: ResultStore, trials: dict) -> None:
    for trial_id, (config, reports, error) in trials.items():
        buffer = TrialBuffer(started_at=1_700_000_000.0)
        for report in reports:
            buffer.add(report)
        store.write_trial(*trial_rows(
            trial_id=trial_id, config=config, buffer=buffer, param_keys=KEYS, metric="val_uar",
            mode="max", status=None, error=error, trial_gpus=0.0, ended_at=1_700_000_100.0))


def test_param_types_come_from_the_declaration() -> None:
    types = schema.param_types(PARAMS)
    assert types == {
        "param.train.weight_decay": pa.float64(), "param.model.dropout": pa.float64(),
        "param.model.layers": pa.int64(), "param.train.lr": pa.float64(),
        "param.model.kind": pa.string(), "param.model.hidden": pa.string(),
        "param.train.amp": pa.bool_(), "param.model.heads": pa.int64(),
    }
    # a conditional param a trial did not sample keeps its base value: its type joins in
    base = {"model": {"heads": "auto"}}
    assert schema.param_types(PARAMS, base)["param.model.heads"] == pa.string()


def test_every_reader_reads_an_adversarial_store_without_options(tmp_path: Path) -> None:
    types = schema.param_types(PARAMS)
    _write(ResultStore(str(tmp_path), "adv", param_types=types), TRIALS)
    _write(ResultStore(str(tmp_path), "adv", param_types=types), RESUMED)  # a resume
    folder = tmp_path / "adv" / "trials"
    files = sorted(folder.glob("*.parquet"))
    assert len(files) == len(TRIALS) + len(RESUMED)
    schemas = {f.name: pq.read_schema(f) for f in files}
    first = schemas[files[0].name]
    for name, file_schema in schemas.items():
        assert file_schema.equals(first), name  # one schema, every file
    expected = len(files)
    assert len(pd.read_parquet(folder)) == expected
    assert pq.read_table(folder).num_rows == expected
    assert ds.dataset(folder).to_table().num_rows == expected
    assert pl.read_parquet(folder).height == expected
    assert pl.scan_parquet(folder).collect().height == expected
    assert duckdb.sql(f"SELECT count(*) FROM '{folder}/*.parquet'").fetchall()[0][0] == expected
    frame = pd.read_parquet(folder).set_index("trial_id")
    assert frame.loc["t_int", "param.train.weight_decay"] == 0.0
    assert frame.loc["t_float", "param.train.weight_decay"] == 0.1
    assert frame.loc["t_float", "param.model.kind"] == "3"
    assert json.loads(frame.loc["t_float", "param.model.hidden"]) == [64, 32]
    assert pd.isna(frame.loc["t_float", "param.model.heads"])
    assert set(frame["status"]) == {"completed", "failed", "does_not_fit", "pruned"}
    for table in ("epochs", "members"):  # their schemas are fixed already: still read whole
        assert len(pd.read_parquet(tmp_path / "adv" / table)) >= 3
        assert pl.read_parquet(tmp_path / "adv" / table).height >= 3
