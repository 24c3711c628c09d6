"""Shared fixtures. Tests never need a real corpus or a GPU to run."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)  # 2-core machine: keep each test process to one thread


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray instance, shared by the tests of one session, shut down at the end."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # off (orchestrator/cluster.py)
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
