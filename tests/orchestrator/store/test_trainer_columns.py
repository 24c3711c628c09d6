"""Issue 13: the trial's AMP precision and the corpus' skipped clips reach the trials table, from
a real LockstepTrainer's runtime info through store/rows.py."""

from __future__ import annotations

import json

from orchestrator.store import schema
from orchestrator.store.rows import TrialBuffer, trial_rows
from tests.trainables.test_train import CPU, make_config, tiny_data
from tests.trainables.test_train import tiny_model as tiny_model  # autouse: registers "tiny"
from trainables import names
from trainables.train import LockstepTrainer


def test_precision_and_skipped_clips_are_trial_columns() -> None:
    data = tiny_data()
    data.info[names.DATA_SKIPPED_CLIPS] = 3
    trainer = LockstepTrainer(make_config(epochs=1), data, CPU)
    report = trainer.run_epoch()
    report[names.RUNTIME_JSON] = json.dumps(trainer.runtime_info())
    buffer = TrialBuffer(started_at=1_700_000_000.0)
    buffer.add(report)
    row, _, _ = trial_rows(trial_id="t", config=trainer.config.as_dict(),
                           buffer=buffer, param_keys=[],
                           metric="val_uar", mode="max", status=None, error=None,
                           trial_gpus=0.0, ended_at=1_700_000_100.0)
    table = schema.to_table("trials", [{**row, schema.SWEEP: "s"}])
    assert table.column("precision").to_pylist() == ["fp32"]  # amp off on the CPU
    assert table.column(names.DATA_SKIPPED_CLIPS).to_pylist() == [3]
