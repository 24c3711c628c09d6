"""GPU budget, GPU-fraction packing and the plan table (estimates traced on fake tensors)."""

from __future__ import annotations

import pytest

from orchestrator.planner import (
    TrialPlanner,
    format_plan,
    gpu_fraction_for,
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
    config = {"model": model, "train": {"batch_size": 32, "seeds": [0, 1]}}
    planner = TrialPlanner(shape, n_features, 4, n_folds=5, budget_bytes=int(gpu_gib * GIB * 0.9))
    for section, values in planner(config).items():
        config.setdefault(section, {}).update(values)
    return resources_for_config(
        config, cpus_per_trial=1, gpu_total_bytes=gpu_gib * GIB, gpu_memory_fraction=0.9,
    )


def test_tiny_trials_pack_and_sincnet_per_frame_gets_a_whole_gpu() -> None:
    assert _resources(TINY, (100, 16), 16, 24) == {"cpu": 1.0, "gpu": 0.125}
    # SincNet per_frame at 4 s: on a GPU smaller than its batch-32 peak it gets a whole GPU (and
    # micro-batches); on an 80 GiB GPU its batch 32 fits in a fraction of one
    est = estimate_trial_memory(
        {"model": SINCNET_4S}, n_features=1, n_classes=4, input_shape=(64000,), n_members=10
    )
    smaller = int(est.peak(32) // GIB)  # GiB: a GPU just too small for batch 32
    assert 8 <= smaller < 80
    assert _resources(SINCNET_4S, (64000,), 1, smaller) == {"cpu": 1.0, "gpu": 1.0}
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

    tight = plan_configs(
        [configs[2]], data_shape=(64000,), n_features=1, n_classes=4, n_folds=5,
        resources={"memory_budget": 6 * GIB, "gpus_per_trial": 0}, gpu_total_bytes=None,
    )[0]
    assert 1 <= tight.micro_batch < 16 and tight.estimated_peak <= 6 * GIB
    assert tight.micro_batch * tight.accumulation >= 16

    none = plan_configs(
        [configs[2]], data_shape=(64000,), n_features=1, n_classes=4, n_folds=5,
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
    assert small.gpu_fraction == 0.125 and large.gpu_fraction > 0.25
    assert large.estimated_peak <= large.gpu_fraction * 80 * GIB * 0.9
