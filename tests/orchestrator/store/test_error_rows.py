"""A failed trial's row: `error` is one plain line, `error_traceback` the plain traceback, and
the status follows the reported reason (schema.trial_status)."""

from __future__ import annotations

import json

from orchestrator.store import schema
from orchestrator.store.rows import TrialBuffer, one_line, plain, reported_error, trial_rows
from trainables import names
from trainables.errors import DoesNotFitError, TrainingError
from trainables.trainable import failure_report

COLOURED = "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1)\n  File \"x.py\"\nValueError: bad\n"


def test_plain_and_one_line_strip_colour_codes_and_newlines() -> None:
    assert plain(COLOURED).startswith("ray::ImplicitFunc.train() (pid=1)")
    assert one_line(COLOURED) == 'ray::ImplicitFunc.train() (pid=1) File "x.py" ValueError: bad'
    assert len(one_line("x" * 1000)) == 300


def test_a_reported_failure_becomes_reason_traceback_and_status() -> None:
    try:
        raise TrainingError("non-finite loss (train loss = nan)\nfor member 0")
    except TrainingError as exc:
        report = failure_report(exc, {names.EPOCH: 2, names.RUNTIME_JSON: json.dumps({})},
                                metric=names.VAL_UAR)
    assert report[names.EPOCH] == 2 and report[names.DONE] is False
    assert report[names.OBJECTIVE] != report[names.OBJECTIVE]  # NaN: no score
    assert names.mean_key(names.VAL_UAR) in report  # the scheduler's metric, present
    reason, traceback_text = reported_error(report)
    assert reason == "TrainingError: non-finite loss (train loss = nan) for member 0"
    assert traceback_text.startswith("Traceback (most recent call last)")
    assert schema.trial_status(report) == schema.FAILED
    buffer = TrialBuffer(started_at=0.0)
    buffer.add(report)
    row, epochs, members = trial_rows(
        trial_id="t1", config={"train": {}}, buffer=buffer, param_keys=[], metric=names.VAL_UAR,
        mode="max", status=None, error=reason, error_traceback=traceback_text, trial_gpus=0.0)
    assert row[schema.STATUS] == schema.FAILED and row[schema.OBJECTIVE] is None
    assert row[schema.ERROR] == reason and row[schema.ERROR_TRACEBACK] == traceback_text
    table = schema.to_table("trials", [row | {schema.SWEEP: "s"}])
    assert table.column(schema.ERROR_TRACEBACK).to_pylist() == [traceback_text]


def test_does_not_fit_is_its_own_status() -> None:
    report = failure_report(DoesNotFitError("batch of 1 needs 5 MiB, budget 1 KiB"),
                            {names.RUNTIME_JSON: "{}"}, metric=names.VAL_UAR)
    assert schema.trial_status(report) == schema.DOES_NOT_FIT
    assert reported_error({names.EPOCH: 1}) == (None, None)
