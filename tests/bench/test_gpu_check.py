"""bench/gpu_check.py keeps working as the code changes: its --dry-run (tiny sizes, CPU, no CUDA
call) runs every part, and the checks inside it hold: fused members compute what sequential
members compute (part 5), the OOM retry halves through the recorded sizes (part 3), per_frame
SincNet equals naive (part 2), and the estimate is close to the CPU peak (part 1)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"


def _load() -> ModuleType:
    if "gpu_check" in sys.modules:
        return sys.modules["gpu_check"]
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "gpu_check.json"
    code = _load().main(["--dry-run", "--json", str(out), *args])
    return code, json.loads(out.read_text())


def _why(payload: dict) -> dict:
    return {k: (p["status"], p["checks"], p["notes"][-2:]) for k, p in payload["parts"].items()}


def test_dry_run_of_parts_1_2_3_5_holds_its_checks(tmp_path: Path) -> None:
    # --in-process: the fresh-process measurement (seconds of CPU) runs in the slow test
    code, payload = _run(tmp_path, "--parts", "1,2,3,5", "--families", "sincnet", "--in-process")
    parts = payload["parts"]
    assert code == 0, _why(payload)
    assert set(parts) == {"1", "2", "3", "5"}
    assert not torch.cuda.is_initialized()  # the dry-run makes no CUDA call
    # part 5: same init, same batches -> the same losses and parameters, fused or not
    rows = parts["5"]["rows"]
    assert [r["members"] for r in rows] == [1, 2]
    for r in rows:
        assert r["agree"] == "yes", r
        assert r["max_loss_diff"] <= 1e-4 and r["max_param_diff"] <= 1e-4, r
        assert r["sequential_member_steps_s"] > 0 and r["fused_member_steps_s"] > 0
    # part 3: the cap the planner answers with micro-batch 8; lowered, 8 -> 4 -> 2 recorded
    extra = parts["3"]["extra"]
    assert extra["fixed_batch_oom"]
    assert (extra["planned_micro"], extra["planned_accumulation"]) == (8, 4)
    assert extra["planned_events"] == []
    assert [(e["from"], e["to"]) for e in extra["lowered_events"]] == [(8, 4), (4, 2)]
    assert [r["outcome"] for r in parts["3"]["rows"]][1:] == ["ran", "recovered"]
    # part 2: the three framings at both precisions; per_frame == naive on the same weights
    assert len(parts["2"]["rows"]) == 6
    assert parts["2"]["extra"]["max_abs_diff_per_frame_naive"] <= 1e-4
    # part 1: the chosen families at two batches; calibration at b=2 predicts b=4
    rows = parts["1"]["rows"]
    assert sorted({r["variant"] for r in rows}) == ["sincnet"]
    for r in rows:
        assert r["allocated_MiB"] > 0 and r["estimate_MiB"] > 0
        if r["batch"] == 4:
            assert abs(r["calibrated_error_%"]) <= 10.0, r


def test_the_fusion_check_sees_a_member_mismatch() -> None:
    """The comparison of part 5 is not vacuous: members paired with the wrong initialisation
    (fused in reverse order) give different losses."""
    gpu_check = _load()
    from trainables.config import TRAIN_DEFAULTS

    cpu = torch.device("cpu")
    cfg = {**gpu_check.DRY_TRANSFORMER, "dropout": 0.0}
    models = gpu_check._member_models(cfg, 8, 2, cpu)
    sequential = gpu_check.SequentialMembers(models, TRAIN_DEFAULTS, 1.0)
    swapped = gpu_check.FusedMembers(models[::-1], TRAIN_DEFAULTS, 1.0)
    fused = gpu_check.FusedMembers(models, TRAIN_DEFAULTS, 1.0)
    ((x, lengths, y),) = gpu_check._member_batches(2, 4, (20, 8), 1, cpu)
    a = sequential.step(x, lengths, y, None)
    assert float((a - fused.step(x, lengths, y, None)).abs().max()) <= 1e-5
    assert float((a - swapped.step(x, lengths, y, None)).abs().max()) > 1e-3


@pytest.mark.slow
def test_full_dry_run_every_part_and_family(ray_local, tmp_path: Path) -> None:
    code, payload = _run(tmp_path)
    parts = payload["parts"]
    assert code == 0, _why(payload)
    assert parts["tests"]["status"] == "not run"  # the gpu-marked tests need CUDA
    assert parts["1"]["checks"]["every family has a config here"]
    # the dry-run's first measurement goes through a fresh process, as all of them do on a GPU
    assert any(n.startswith("1 of ") and n.endswith(" measurements in a fresh process")
               for n in parts["1"]["notes"])
    # part 4: a real Ray Tune sweep through the product's run_sweep, one at a time vs two
    rows = {r["sweep"]: r for r in parts["4"]["rows"]}
    one, two = rows["one at a time (CPU)"], rows["auto, 2 at a time (CPU)"]
    assert one["completed"] == one["trials"] == 2 and two["completed"] == two["trials"] == 2
    assert one["max_at_once"] == 1 and two["max_at_once"] == 2
    assert one["device"] == two["device"] == "cpu"
