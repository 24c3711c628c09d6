"""bench/experiments/fusion_prototype.py (an experiment, no part of the GPU check) keeps its
numerical check: fused members compute what sequential members compute, and the comparison
sees a mismatch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.experiments import fusion_prototype as fusion


@pytest.mark.slow  # an experiment's full dry run; the comparison itself is tested below
def test_dry_run_fused_equals_sequential(tmp_path: Path) -> None:
    out = tmp_path / "fusion.json"
    assert fusion.main(["--dry-run", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["status"] == "ok", result["checks"]
    # same init, same batches -> the same losses and parameters, fused or not
    rows = result["rows"]
    assert [r["members"] for r in rows] == [1, 2]
    for r in rows:
        assert r["agree"] == "yes", r
        assert r["max_loss_diff"] <= 1e-4 and r["max_param_diff"] <= 1e-4, r
        assert r["sequential_member_steps_s"] > 0 and r["fused_member_steps_s"] > 0


def test_the_fusion_check_sees_a_member_mismatch() -> None:
    """The comparison is not vacuous: members paired with the wrong initialisation (fused in
    reverse order) give different losses."""
    from trainables.config import TRAIN_DEFAULTS

    cpu = torch.device("cpu")
    cfg = {**fusion.DRY_TRANSFORMER, "dropout": 0.0}
    models = fusion._member_models(cfg, 8, 2, cpu)
    sequential = fusion.SequentialMembers(models, TRAIN_DEFAULTS, 1.0)
    swapped = fusion.FusedMembers(models[::-1], TRAIN_DEFAULTS, 1.0)
    fused = fusion.FusedMembers(models, TRAIN_DEFAULTS, 1.0)
    ((x, lengths, y),) = fusion._member_batches(2, 4, (20, 8), 1, cpu)
    a = sequential.step(x, lengths, y, None)
    assert float((a - fused.step(x, lengths, y, None)).abs().max()) <= 1e-5
    assert float((a - swapped.step(x, lengths, y, None)).abs().max()) > 1e-3
