"""GPU budget, GPU-fraction packing and the plan table (estimates traced on fake tensors)."""

from __future__ import annotations

import pytest

from orchestrator.planner import (
    Target,
    TrialPlanner,
    format_plan,
    gpu_fraction_for,
    gpu_targets,
    plan_configs,
    resources_for_config,
    trial_budget_bytes,
)
from trainables.memory import estimate_trial_memory

GIB = 2**30
TINY = {"name": "transformer", "layers": 1, "d_model": 16, "heads": 2, "ff_dim": 32}
SINCNET_4S = {"name": "sincnet", "framing": "per_frame"}  # 200 ms / 10 ms frames, 16 kHz


def test_budget_from_memory_budget_or_gpu_share() -> None:
    assert trial_budget_bytes({"memory_budget": 3 * GIB, "gpus_per_trial": 0}, None) == 3 * GIB
    assert trial_budget_bytes({"gpus_per_trial": 0}, None) is None
    assert trial_budget_bytes({"gpus_per_trial": 0.5}, None) is None  # no GPU on this node
    res = {"gpus_per_trial": 0.5, "gpu_memory_fraction": 0.8}
    assert trial_budget_bytes(res, 80 * GIB) == int(80 * GIB * 0.8 * 0.5)
    auto = {"gpus_per_trial": "auto", "gpu_memory_fraction": 0.9}
    assert trial_budget_bytes(auto, 80 * GIB) == int(80 * GIB * 0.9)


@pytest.mark.parametrize(
    ("peak_gib", "expected"),
    [(0.01, 0.125), (9.0, 0.125), (9.1, 0.25), (36.0, 0.5), (36.1, 0.625), (71.9, 1.0),
     (500.0, 1.0)],
)
def test_gpu_fraction_rounds_up_to_eighths(peak_gib: float, expected: float) -> None:
    fraction = gpu_fraction_for(int(peak_gib * GIB), 80 * GIB, 0.9)
    assert fraction == expected
    if peak_gib <= 72:  # the share always holds the peak
        assert peak_gib * GIB <= fraction * 80 * GIB * 0.9


def _resources(model: dict, shape: tuple[int, ...], n_features: int, gpu_gib: int) -> dict:
    # the driver's plan (5 folds x 2 seeds = 10 members, a whole GPU's budget), then the share
    # planned for one GPU type, as the driver plans on a GPU machine (the cuDNN terms, not the
    # CPU kernels probed at SincNet's 64000 samples)
    config = {"model": model, "train": {"batch_size": 32, "seeds": [0, 1]}}
    budget = int(gpu_gib * GIB * 0.9)
    planner = TrialPlanner(shape, n_features, 4, n_folds=5, budget_bytes=budget,
                           targets=(Target("gpu", None, gpu_gib * GIB, budget),))
    for section, values in planner(config).items():
        config.setdefault(section, {}).update(values)
    return resources_for_config(
        config, cpus_per_trial=1, gpu_total_bytes=gpu_gib * GIB, gpu_memory_fraction=0.9,
    )


def test_tiny_trials_pack_and_sincnet_per_frame_gets_a_whole_gpu() -> None:
    assert _resources(TINY, (100, 16), 16, 24) == {"cpu": 1.0, "gpu": 0.125}
    # SincNet per_frame at 4 s: on a GPU smaller than its batch-32 peak it micro-batches; on an
    # 80 GiB GPU its batch 32 fits in a fraction of one
    est = estimate_trial_memory(
        {"model": SINCNET_4S}, n_features=1, n_classes=4, input_shape=(64000,), n_members=10,
        on_gpu=True,
    )
    smaller = int(est.peak(32) // GIB)  # GiB: a GPU just too small for batch 32
    assert 8 <= smaller < 80
    # ... it trains 2 chunks of 16 (not "31 + accumulation"): the share holds that chunk's peak
    tight = _resources(SINCNET_4S, (64000,), 1, smaller)
    assert tight == {"cpu": 1.0, "gpu": gpu_fraction_for(est.peak(16), smaller * GIB, 0.9)}
    assert tight["gpu"] < 1.0
    share = _resources(SINCNET_4S, (64000,), 1, 80)["gpu"]
    assert share == gpu_fraction_for(est.peak(32), 80 * GIB, 0.9) and share < 1.0


def test_plan_rows_and_table_show_configs_that_do_not_fit() -> None:
    configs = [
        {"model": {**TINY, "d_model": d}, "train": {"batch_size": 16, "seeds": [0]}}
        for d in (16, 32)
    ]
    configs.append({"model": SINCNET_4S, "train": {"batch_size": 16, "seeds": [0]}})
    rows = plan_configs(
        configs[:2], data_shape=(100, 16), n_features=16, n_classes=4, n_folds=2,
        resources={"memory_budget": 2 * GIB, "gpus_per_trial": 0}, gpu_total_bytes=None,
        param_keys=["model.d_model"],
    )
    assert [r.params for r in rows] == [{"model.d_model": 16}, {"model.d_model": 32}]
    assert all(r.micro_batch == 16 and r.accumulation == 1 and r.fits for r in rows)
    assert rows[0].estimated_peak < rows[1].estimated_peak < 2 * GIB

    # SincNet on 1 s of audio (16000 samples; its CPU kernels are probed at the traced shapes):
    # 3.4 GiB at batch 16, 0.7 GiB at 1
    tight = plan_configs(
        [configs[2]], data_shape=(16000,), n_features=1, n_classes=4, n_folds=5,
        resources={"memory_budget": 2 * GIB, "gpus_per_trial": 0}, gpu_total_bytes=None,
    )[0]
    assert 1 <= tight.micro_batch < 16 and tight.estimated_peak <= 2 * GIB
    assert tight.micro_batch * tight.accumulation >= 16

    none = plan_configs(
        [configs[2]], data_shape=(16000,), n_features=1, n_classes=4, n_folds=5,
        resources={"memory_budget": GIB // 2, "gpus_per_trial": 0}, gpu_total_bytes=None,
    )[0]
    assert not none.fits
    table = format_plan([*rows, tight, none])
    assert "DOES NOT FIT" in table and "1 config(s) DO NOT FIT" in table
    assert table.splitlines()[0].split()[:2] == ["#", "model.d_model"]


def test_auto_gpu_column_follows_the_estimate() -> None:
    configs = [{"model": TINY, "train": {"batch_size": 32, "seeds": [0]}},
               {"model": SINCNET_4S, "train": {"batch_size": 32, "seeds": [0]}}]
    small, large = (
        plan_configs(
            [c], data_shape=shape, n_features=nf, n_classes=4, n_folds=10,
            resources={"gpus_per_trial": "auto", "gpu_memory_fraction": 0.9},
            gpu_total_bytes=80 * GIB,
        )[0]
        for c, shape, nf in ((configs[0], (100, 16), 16), (configs[1], (64000,), 1))
    )
    assert small.gpu_fraction == 0.125 and large.gpu_fraction >= 0.25
    assert large.estimated_peak <= large.gpu_fraction * 80 * GIB * 0.9


# --- GPUs of several types (#22): discovery rows, per-type plans, placement, impossible asks ---
def _node(node_id: str, cpus: float, gpus: float = 0, gpu_type: str | None = None,
          memory_gib: float | None = None) -> dict:
    """A row as ray.nodes() returns it (Resources as `ray start` declares them)."""
    from orchestrator.cluster import ACCELERATOR_PREFIX, GPU_MEMORY_RESOURCE

    res = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    if gpu_type:
        res[ACCELERATOR_PREFIX + gpu_type] = 1.0
    if memory_gib:
        res[GPU_MEMORY_RESOURCE] = memory_gib * 1024
    return {"NodeID": node_id, "Alive": True, "Resources": res}


def _two_types() -> object:
    from orchestrator.cluster import cluster_from_nodes

    asked: list[str] = []
    nodes = [_node("head", 2), _node("big", 2, 2, "H100", 80), _node("small", 2, 2, "L4"),
             {**_node("gone", 8, 8, "L4", 24), "Alive": False}]
    info = cluster_from_nodes(nodes, lambda node_id: asked.append(node_id) or ("L4", 24 * GIB))
    assert asked == ["small"]  # only the type without a declared memory is asked, once
    return info


def test_the_cluster_is_read_from_its_gpu_nodes_and_summarised_in_one_line() -> None:
    info = _two_types()
    assert info.line() == "cluster: 3 nodes, 6 CPUs, 2 x H100 80 GiB, 2 x L4 24 GiB"
    assert (info.node_cpus, info.node_gpus) == (2.0, 2.0)
    from orchestrator.cluster import cluster_from_nodes

    cpu_only = cluster_from_nodes([_node("head", 4)], lambda node_id: None)
    assert cpu_only.line() == "cluster: 1 node, 4 CPUs, no GPU" and not cpu_only.gpu_types


def _plan_on(info: object, model: dict, shape: tuple[int, ...], nf: int, batch: int = 32,
             gpus: float | str = "auto") -> tuple[dict, dict]:
    res = {"gpus_per_trial": gpus, "gpu_memory_fraction": 0.9, "cpus_per_trial": 1}
    planner = TrialPlanner(shape, nf, 4, n_folds=5, budget_bytes=None,
                           targets=gpu_targets(info, res))
    config = {"model": model, "train": {"batch_size": batch, "seeds": [0, 1]}}
    for section, values in planner(config).items():
        config.setdefault(section, {}).update(values)
    return config, resources_for_config(config, cpus_per_trial=1, gpu_memory_fraction=0.9,
                                        gpus_per_trial=gpus)


def test_each_trial_is_planned_for_a_gpu_type_and_placed_there() -> None:
    info = _two_types()
    # small trials: the 24 GiB type, an eighth each (they share a GPU)
    config, res = _plan_on(info, TINY, (100, 16), 16)
    assert config["runtime"]["gpu_type"] == "L4" and config["train"]["micro_batch"] == 32
    assert res == {"cpu": 1.0, "gpu": 0.125, "accelerator_type:L4": 0.001}
    # SincNet per_frame at 4 s, batch 64 (AMP: planned in bf16): micro-batches on an L4, one
    # step on the H100
    est = estimate_trial_memory({"model": SINCNET_4S}, n_features=1, n_classes=4,
                                input_shape=(64000,), n_members=10, on_gpu=True)
    assert est.peak(64) > 24 * GIB * 0.9 and est.peak(64) <= 80 * GIB * 0.9
    config, res = _plan_on(info, SINCNET_4S, (64000,), 1, batch=64)
    assert config["runtime"]["gpu_type"] == "H100" and config["train"]["micro_batch"] == 64
    assert config["runtime"]["estimated_peak_bytes"] == est.peak(64)
    assert res["accelerator_type:H100"] == 0.001
    assert res["gpu"] == gpu_fraction_for(est.peak(64), 80 * GIB, 0.9)
    # a fixed share gets its type and that type's budget too
    config, res = _plan_on(info, SINCNET_4S, (64000,), 1, batch=64, gpus=1)
    assert res == {"cpu": 1.0, "gpu": 1.0, "accelerator_type:H100": 0.001}
    assert config["runtime"]["memory_budget"] == int(80 * GIB * 0.9)


def test_a_config_that_fits_no_gpu_asks_for_none_and_carries_the_largest_budget() -> None:
    from orchestrator.cluster import cluster_from_nodes

    small = cluster_from_nodes([_node("a", 2, 1, "T4", 1), _node("b", 2, 1, "P4", 1.5)],
                               lambda node_id: None)
    est = estimate_trial_memory({"model": SINCNET_4S}, n_features=1, n_classes=4,
                                input_shape=(64000,), n_members=10, on_gpu=True)
    assert est.peak(1) > 1.5 * GIB * 0.9
    config, res = _plan_on(small, SINCNET_4S, (64000,), 1)
    assert config["runtime"] == {"memory_budget": int(1.5 * GIB * 0.9), "gpu_type": None,
                                 "estimated_peak_bytes": est.peak(1)}  # as `plan` shows it
    assert res == {"cpu": 1.0, "gpu": 0.0}  # never waits for a GPU: recorded does_not_fit
    rows = plan_configs([{"model": SINCNET_4S, "train": {"batch_size": 32, "seeds": [0, 1]}}],
                        data_shape=(64000,), n_features=1, n_classes=4, n_folds=5,
                        resources={"gpus_per_trial": "auto"}, cluster=small)
    assert not rows[0].fits and "DOES NOT FIT" in format_plan(rows)


def test_amp_trials_are_planned_in_the_precision_they_run_in_on_a_gpu() -> None:
    """#22.7: `train.amp: auto` autocasts on CUDA, so a trial planned for a GPU is estimated in
    reduced precision; `off` stays fp32; the same config planned for the CPU is fp32."""
    info = _two_types()
    peaks = {}
    for amp in ("auto", "off"):
        model = {**TINY, "d_model": 64}
        config = {"model": model, "train": {"batch_size": 32, "seeds": [0], "amp": amp}}
        planner = TrialPlanner((100, 16), 16, 4, n_folds=2, budget_bytes=None,
                               targets=gpu_targets(info, {"gpus_per_trial": "auto"}))
        peaks[amp] = planner(config)["runtime"]["estimated_peak_bytes"]
        cpu = estimate_trial_memory(config, n_features=16, n_classes=4, input_shape=(100, 16),
                                    n_members=2)
        amp_est = estimate_trial_memory(config, n_features=16, n_classes=4,
                                        input_shape=(100, 16), n_members=2, on_gpu=True)
        assert peaks[amp] == amp_est.peak(32)
        assert (amp_est.peak(32) < cpu.peak(32)) == (amp == "auto")
    assert peaks["auto"] < peaks["off"]


def test_an_impossible_request_is_refused_with_what_was_asked_and_the_flag() -> None:
    from orchestrator.cluster import ResourceRequestError, check_request, cluster_from_nodes

    laptop = cluster_from_nodes([_node("here", 2)], lambda node_id: None)
    with pytest.raises(ResourceRequestError) as gpu:
        check_request(laptop, 1, 1)
    assert "asks for 1 GPU" in str(gpu.value) and "no GPU" in str(gpu.value)
    assert "--set resources.gpus_per_trial=0" in str(gpu.value)
    with pytest.raises(ResourceRequestError, match="cpus_per_trial=2"):
        check_request(laptop, 4, 0)
    with pytest.raises(ResourceRequestError, match="largest node has 2"):
        check_request(_two_types(), 1, 4)
    check_request(laptop, 2, "auto")  # auto without a GPU: CPU trials
    check_request(_two_types(), 1, 2)


@pytest.mark.slow
def test_the_default_data_cache_is_found_from_another_working_directory(tmp_path) -> None:
    """#22.5: the default cache is absolute and per user ($XDG_CACHE_HOME/sersweep here): a
    second command from another directory finds what the first prepared."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    spec = repo / "tests" / "orchestrator" / "tiny_gpu_types.yaml"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "PYTHONPATH": str(repo)}
    env.pop("SERSWEEP_CACHE_DIR", None)
    outputs = []
    for cwd in (repo, tmp_path):
        run = subprocess.run([sys.executable, str(repo / "sweep.py"), "plan", str(spec),
                              "--samples", "1", "--gpu-memory", "1GiB"],
                             cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode in (0, 1), run.stderr[-2000:]
        outputs.append(run.stdout)
    cache = tmp_path / "xdg" / "sersweep" / "prepared"
    assert f"data: cached {cache}" in outputs[0], outputs[0]
    assert f"data: cache hit {cache}" in outputs[1], outputs[1]
    assert not (repo / ".cache" / "sersweep").exists() or "cache hit" in outputs[1]


def test_plan_prints_sizes_in_the_unit_given_and_values_with_3_significant_digits() -> None:
    from orchestrator.planner import PlanRow, size_unit

    assert (size_unit("24MiB"), size_unit("80 GiB"), size_unit("24"), size_unit(None)) == (
        "MiB", "GiB", None, None)
    row = PlanRow({"train.lr": 0.0006466422717414558}, 0, 0, 32, 30 * 2**20, 24 * 2**20, 0.0)
    table = format_plan([row], "MiB")
    assert "0.000647" in table and "0.0006466" not in table
    assert "30 MiB" in table and "24 MiB" in table and "GiB" not in table
