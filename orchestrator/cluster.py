"""Where a sweep runs: joining a Ray cluster or starting a private local Ray, and its GPUs."""

from __future__ import annotations

import os
from pathlib import Path

from trainables.errors import SersweepError

# Written by `ray start --head` on this machine (Ray's default temp dir): a cluster to join.
RAY_CLUSTER_FILE = Path("/tmp/ray/ray_current_cluster")


class ClusterError(SersweepError):
    """The Ray cluster named by --address / RAY_ADDRESS / `ray start` cannot be reached."""


def ray_init(address: str | None, verbose: bool) -> None:
    """Join the cluster named by --address or RAY_ADDRESS, or the one `ray start` left on this
    machine (the head node under `ray submit`); else start a private local Ray."""
    import ray

    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    # One checkpoint kept per trial forces an experiment snapshot per epoch; it is cheap here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not verbose:  # our console view instead of Tune's status tables
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if not address and RAY_CLUSTER_FILE.is_file():
        address = "auto"
    if not address:
        # A private Ray for this sweep; no dashboard, so nothing listens beyond loopback.
        ray.init(include_dashboard=False, log_to_driver=verbose)
        return
    try:
        # Joining a cluster: its dashboard and resources are the cluster's business.
        ray.init(address=address, log_to_driver=verbose)
    except ConnectionError as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address!r} (--address, RAY_ADDRESS or "
            f"{RAY_CLUSTER_FILE} from `ray start`): {exc}; start it, or run `ray stop` to "
            "forget a stopped one"
        ) from exc
    print(f"joined the Ray cluster at {address}: {ray.cluster_resources()}")


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


def gpu_total_bytes() -> int | None:
    """Memory of one GPU of the cluster: from torch on this node, else None (CPU only)."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    return None


def tune_storage_path(results_root: str, sweep: str) -> str:
    """Tune's checkpoints live beside the results, so they follow a shared path or URI."""
    if "://" in results_root:
        return f"{results_root.rstrip('/')}/{sweep}/_tune"
    return str((Path(results_root) / sweep / "_tune").resolve())
