"""bench/gpu_check (python -m bench.gpu_check) keeps working as the code changes: its --dry-run
(tiny sizes, CPU, no CUDA call) runs every part, and the checks inside it hold: the OOM retry
halves through the recorded sizes (part 3), per_frame SincNet equals naive (part 2), the estimate
is close to the CPU peak (part 1), and GPU discovery and placement find the constructed cluster's
types and put each config on the right one (part cluster). --on-cluster runs the GPU parts in a
Ray task (slow test, real local Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.gpu_check.__main__ import main


def _run(tmp_path: Path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "gpu_check.json"
    code = main(["--dry-run", "--json", str(out), *args])
    return code, json.loads(out.read_text())


def _why(payload: dict) -> dict:
    return {k: (p["status"], p["checks"], p["notes"][-2:]) for k, p in payload["parts"].items()}


def test_dry_run_of_parts_1_2_3_cluster_holds_its_checks(tmp_path: Path) -> None:
    # --in-process: the fresh-process measurement (seconds of CPU) runs in the slow test
    code, payload = _run(tmp_path, "--parts", "1,2,3,cluster", "--families", "sincnet",
                         "--in-process")
    parts = payload["parts"]
    assert code == 0, _why(payload)
    assert set(parts) == {"1", "2", "3", "cluster"}
    assert not torch.cuda.is_initialized()  # the dry-run makes no CUDA call
    # part cluster: the L4 and H100 nodes found (the dead one not), each config placed
    cluster = parts["cluster"]
    assert cluster["notes"][0] == "cluster: 4 nodes, 28 CPUs, 4 x H100 80 MiB, 3 x L4 24 MiB"
    assert [tuple(p) for p in cluster["extra"]["placements"]] == [
        ("L4", 1), ("H100", 1), ("L4", 2), ("does_not_fit", 0)]
    # part 3: the cap the planner answers with micro-batch 8; lowered, 8 -> 4 -> 2 recorded
    extra = parts["3"]["extra"]
    assert extra["fixed_batch_oom"]
    assert (extra["planned_micro"], extra["planned_accumulation"]) == (8, 4)
    assert extra["planned_events"] == []
    assert [(e["from"], e["to"]) for e in extra["lowered_events"]] == [(8, 4), (4, 2)]
    assert [r["outcome"] for r in parts["3"]["rows"]][1:] == ["ran", "recovered"]
    # part 2: the three framings (fp32 on a CPU, as the trainer runs there; bf16 too on a GPU);
    # per_frame == naive on the same weights
    assert [(r["framing"], r["precision"]) for r in parts["2"]["rows"]] == [
        ("naive", "fp32"), ("per_frame", "fp32"), ("shared", "fp32")]
    assert parts["2"]["extra"]["max_abs_diff_per_frame_naive"] <= 1e-4
    # part 1: the chosen families at two batches; calibration at b=2 predicts b=4
    rows = parts["1"]["rows"]
    assert sorted({r["variant"] for r in rows}) == ["sincnet"]
    for r in rows:
        assert r["allocated_MiB"] > 0 and r["estimate_MiB"] > 0
        if r["batch"] == 4:
            assert abs(r["calibrated_error_%"]) <= 10.0, r


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
    assert parts["cluster"]["status"] == "ok"


@pytest.mark.slow
def test_on_cluster_runs_the_gpu_parts_in_a_ray_task(ray_local, tmp_path: Path) -> None:
    """--on-cluster: parts 2 and 3 run in a Ray task (here on the local Ray, --dry-run: a CPU
    task), their results come back; part cluster runs on the driver and sees the joined Ray."""
    code, payload = _run(tmp_path, "--on-cluster", "auto", "--parts", "2,3,cluster")
    parts = payload["parts"]
    assert code == 0, _why(payload)
    assert [p for p in parts] == ["2", "3", "cluster"]
    assert payload["environment"]["gpu_node"]["device"] == "cpu"
    assert payload["environment"]["gpu_node"]["host"]
    assert parts["3"]["extra"]["lowered_events"]  # the task's result, not a placeholder
    assert any(n.startswith("this Ray cluster: cluster: ") for n in parts["cluster"]["notes"])


@pytest.mark.slow
def test_on_cluster_without_a_gpu_is_one_line_and_exit_2(ray_local, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """The local Ray has no GPU: the GPU task would wait forever, so it is refused at once."""
    out = tmp_path / "gpu_check.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["--on-cluster", "auto", "--parts", "2", "--json", str(out)])
    assert exit_info.value.code == 2
    assert "--on-cluster auto: that Ray cluster has no GPU (0)" in capsys.readouterr().err
    assert not out.exists()
