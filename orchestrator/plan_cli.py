"""`sweep.py plan SPACE.yaml`: the memory plan of sampled configs, before anything trains."""

from __future__ import annotations

import optuna

from orchestrator.cluster import gpu_total_bytes
from orchestrator.planner import format_plan, plan_configs
from orchestrator.spec import SweepSpec, sample_params
from orchestrator.spec_checks import Ctx
from orchestrator.spec_sections import parse_bytes
from trainables.data import prepare_data


def sample_configs(spec: SweepSpec, samples: int) -> list[dict]:
    """`samples` trial configs drawn at random (seeded) from the sweep's search space."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.search.seed))
    configs = []
    for _ in range(samples):
        trial = study.ask()
        configs.append(spec.config_for(sample_params(spec, trial)))
    return configs


def run_plan(spec: SweepSpec, *, samples: int, gpu_memory: str | None) -> int:
    gpu_total = (
        parse_bytes(Ctx("--gpu-memory"), ("--gpu-memory",), gpu_memory)
        if gpu_memory
        else gpu_total_bytes()
    )
    data = prepare_data(spec.base_config()["data"], progress=lambda msg: print(f"data: {msg}"))
    rows = plan_configs(
        sample_configs(spec, samples) if spec.search.params else [spec.base_config()],
        data_shape=tuple(data.features.shape[1:]),
        n_features=data.n_features,
        n_classes=data.n_classes,
        n_folds=len(data.folds),
        resources=spec.resources,
        gpu_total_bytes=gpu_total,
        param_keys=spec.param_keys(),
    )
    where = "no GPU: CPU" if gpu_total is None else f"GPU of {gpu_total / 2**30:.1f} GiB"
    print(f"memory plan of {len(rows)} sampled configs of {spec.name} ({where}):")
    print(format_plan(rows))
    return 0
