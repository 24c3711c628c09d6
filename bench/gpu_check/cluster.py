"""Part "cluster": GPU discovery and placement (orchestrator.cluster.cluster_from_nodes,
orchestrator.planner.gpu_targets / choose_target) on constructed `ray.nodes()` rows, no Ray
needed; joined to a cluster (--on-cluster), also what discover_cluster finds there. Also the
Ray task that runs the GPU parts on a cluster's GPU node (run_on_cluster)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.gpu_check.common import DRY_FAMILIES, GIB, MIB, N_CLASSES, PartResult, Run, _mib

# The rows `ray.nodes()` gives for a CPU-only head and two GPU worker types: L4 nodes that
# declare their memory (sersweep_gpu_memory_mib), an H100 node that does not (asked by a probe),
# and a dead node that must not count. The dry run scales their memory down 1024 times (24 and
# 80 MiB), to fit the tiny SincNet of part 1, whose estimate it shares (cached).
L4_GIB, H100_GIB = 24, 80


def node_rows(scale: int = GIB) -> list[dict[str, Any]]:
    """The constructed rows; `scale`: bytes per "GiB" of their GPU memory (MIB in the dry run)."""
    from orchestrator.cluster import ACCELERATOR_PREFIX, GPU_MEMORY_RESOURCE

    def row(node: str, alive: bool = True, **resources: float) -> dict[str, Any]:
        return {"NodeID": node, "Alive": alive, "Resources": {"CPU": 8.0, **resources}}

    l4 = {f"{ACCELERATOR_PREFIX}L4": 1.0, GPU_MEMORY_RESOURCE: L4_GIB * scale // MIB}
    return [
        row("head", CPU=4.0),
        row("l4-a", GPU=2.0, **l4),
        row("l4-b", GPU=1.0, **l4),
        row("h100-a", GPU=4.0, **{f"{ACCELERATOR_PREFIX}H100": 1.0}),
        row("dead", alive=False, GPU=8.0, **{f"{ACCELERATOR_PREFIX}A100": 1.0}),
    ]


def part_cluster(run: Run) -> PartResult:
    from orchestrator.cluster import cluster_from_nodes
    from orchestrator.planner import choose_target, gpu_targets
    from trainables.memory import estimate_step_memory

    result = PartResult("cluster", "GPU discovery and placement on constructed node rows",
                        "types and memory found; each config on the smallest GPU that holds it")
    asked: list[str] = []
    scale = MIB if run.dry_run else GIB

    def probe(node_id: str) -> tuple[str, int] | None:  # what _probe_node answers from a node
        asked.append(node_id)
        return ("NVIDIA H100 80GB HBM3", H100_GIB * scale) if node_id.startswith("h100") else None

    info = cluster_from_nodes(node_rows(scale), probe)
    result.notes.append(info.line())
    types = {t.name: t for t in info.gpu_types}
    result.checks["L4 and H100 found, the dead node left out"] = sorted(types) == ["H100", "L4"]
    result.checks["declared L4 memory read, only the H100 node probed"] = (
        types["L4"].memory_bytes == L4_GIB * scale and asked == ["h100-a"]
        and types["H100"].memory_bytes == H100_GIB * scale)
    result.checks["counts per type"] = (types["L4"].count, types["L4"].nodes,
                                        types["H100"].per_node,
                                        info.nodes, info.cpus) == (3.0, 2, 4.0, 4, 28.0)
    resources = {"gpus_per_trial": 1, "gpu_memory_fraction": 0.9}
    targets = gpu_targets(info, resources)
    result.checks["targets smallest first"] = [t.name for t in targets] == ["L4", "H100"]
    # a batch the L4 holds in one step goes there; one it does not goes to the H100 whole,
    # rather than to the L4 in micro-batches. The default Transformer at 4 s (dry run: part 1's
    # tiny SincNet, the estimate it made)
    cfg, n_features, shape = (DRY_FAMILIES["sincnet"] if run.dry_run
                              else ({"name": "transformer"}, 64, (400, 64)))
    estimate = estimate_step_memory(cfg, n_features=n_features, n_classes=N_CLASSES,
                                    input_shape=shape)
    l4_budget, h100_budget = (t.budget_bytes or 0 for t in targets)
    small = 1
    while estimate.peak(small * 2) <= l4_budget:
        small *= 2
    large = small * 2  # the smallest power of two the L4 does not hold in one step
    result.checks["the batches sit between the budgets"] = (
        estimate.peak(small) <= l4_budget < estimate.peak(large) <= h100_budget)
    rows = []
    for label, logical, fixed, chosen_targets in (
        ("fits the L4", small, None, targets), ("needs the H100", large, None, targets),
        ("L4 only: micro-batches", large, None, targets[:1]),
        ("budget capped below one sample", small, None,
         gpu_targets(info, {**resources, "memory_budget": estimate.peak(1) // 2})),
    ):
        choice = choose_target(estimate, logical, fixed, chosen_targets)
        rows.append({"config": label, "batch": logical,
                     "target": choice.target.name if choice.target else "does_not_fit",
                     "micro": choice.micro_batch, "accumulation": choice.accumulation,
                     "peak_MiB": _mib(choice.estimated_peak)})
    import pandas as pd

    result.table = pd.DataFrame(rows)
    got = [(r["target"], r["accumulation"]) for r in rows]
    result.checks["placement: L4, H100, L4 in micro-batches, does_not_fit"] = (
        got[0] == ("L4", 1) and got[1] == ("H100", 1) and got[2][0] == "L4" and got[2][1] > 1
        and got[3] == ("does_not_fit", 0))
    result.extra["placements"] = got
    if _joined():
        from orchestrator.cluster import discover_cluster

        found = discover_cluster()
        result.notes.append(f"this Ray cluster: {found.line()}")
        result.notes.append("its targets at gpus_per_trial 1: " + ", ".join(
            f"{t.name} budget {'unknown' if t.budget_bytes is None else _gib(t.budget_bytes)}"
            for t in gpu_targets(found, resources)) or "none (no GPU)")
    return result


def _gib(n: int) -> str:
    return f"{n / GIB:.3g} GiB"


def _joined() -> bool:
    import sys

    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


# -- the GPU parts as a Ray task on a GPU node -----------------------------------------------

def run_on_cluster(address: str, parts: list[str], options: dict[str, Any],
                   run_parts: Callable[[list[str], dict[str, Any]],
                                       tuple[dict[str, Any], list[PartResult]]],
                   ) -> tuple[dict[str, Any], list[PartResult]]:
    """Join the cluster at `address` (orchestrator.cluster.ray_init) and run `run_parts(parts,
    options)` in one `ray.remote(num_gpus=1)` task, on a GPU node, which picks its device there
    and prints its parts to its log; the dry run asks for one CPU instead (its parts run on the
    CPU). Returns the node's environment and the parts' results, for the driver to print;
    ValueError when the cluster has no GPU."""
    import ray

    from orchestrator.cluster import ray_init

    ray_init(address, verbose=False)
    gpus = 0 if options["dry_run"] else 1
    if ray.cluster_resources().get("GPU", 0) < gpus:  # else the task would wait forever
        raise ValueError(f"--on-cluster {address}: that Ray cluster has no GPU "
                         f"({ray.cluster_resources().get('GPU', 0):g}); expected a GPU node")
    task = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=0)(run_parts)
    return ray.get(task.remote(parts, options))
