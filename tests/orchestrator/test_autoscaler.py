"""An autoscaling cluster (#22.3): the node types its autoscaler can add, read from its cluster
file (what `ray up` writes to ~/ray_bootstrap_config.yaml on the head, or the file
SERSWEEP_AUTOSCALER_CONFIG names), count when the per-trial request is checked and when trials
are planned. The real-cluster runs are in test_cluster_edges.py; these read real files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from orchestrator.cluster import (
    AUTOSCALER_CONFIG_ENV,
    Autoscaler,
    ClusterError,
    ClusterInfo,
    ResourceRequestError,
    autoscaler_config_path,
    check_request,
    find_autoscaler,
    read_node_types,
    with_autoscaler,
)

# The layout of docker/cluster.yaml as `ray up` writes it (JSON, Ray's defaults filled in):
# a head with CPU 0, A10G workers, an A100 type that is opt-in (max_workers 0).
BOOTSTRAP = {
    "cluster_name": "sersweep",
    "max_workers": 8,
    "head_node_type": "head.cpu",
    "available_node_types": {
        "head.cpu": {"resources": {"CPU": 0}, "min_workers": 0, "max_workers": 0},
        "gpu.a10g": {"resources": {"CPU": 4, "GPU": 1, "accelerator_type:A10G": 1,
                                   "sersweep_gpu_memory_mib": 22528},
                     "min_workers": 0, "max_workers": 8},
        "gpu.a100x8": {"resources": {"CPU": 96, "GPU": 8, "accelerator_type:A100": 1},
                       "min_workers": 0, "max_workers": 0},
    },
}
HEAD_ONLY = ClusterInfo(nodes=1, cpus=0.0, node_cpus=0.0)  # `ray up` before any worker


def _write(tmp_path: Path, config: object, name: str = "ray_bootstrap_config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


def _scaling(tmp_path: Path, config: object = BOOTSTRAP) -> ClusterInfo:
    path = _write(tmp_path, config)
    return with_autoscaler(HEAD_ONLY, Autoscaler(str(path), read_node_types(path)))


def test_the_node_types_the_autoscaler_can_start_are_read_with_rays_defaults(
        tmp_path: Path) -> None:
    types = read_node_types(_write(tmp_path, BOOTSTRAP))
    # the head's type and a type with max_workers 0 are never started by the autoscaler
    assert [(t.name, t.cpus, t.gpus, t.gpu_type, t.max_workers) for t in types] == [
        ("gpu.a10g", 4.0, 1.0, "A10G", 8)]
    assert types[0].gpu_memory_bytes == 22 * 2**30
    # Ray's defaults (autoscaler/_private/util.py fill_node_type_min_max_workers): a worker type
    # without max_workers gets the global one, the head's type 0; the global one caps each type
    user_file = {"max_workers": 3, "head_node_type": "head",
                 "available_node_types": {"head": {"resources": {"CPU": 4}},
                                          "cpu": {"resources": {"CPU": 8}},
                                          "gpu": {"resources": {"CPU": 8, "GPU": 2},
                                                  "max_workers": 10}}}
    types = read_node_types(_write(tmp_path, user_file, "cluster.yaml"))
    assert [(t.name, t.max_workers, t.gpu_type) for t in types] == [("cpu", 3, "GPU"),
                                                                   ("gpu", 3, "GPU")]


def test_the_shipped_cluster_file_declares_the_memory_of_every_gpu_type() -> None:
    """docker/cluster.yaml starts with no worker: a GPU type without a declared memory gets no
    budget and a whole GPU per trial until a node of it runs, for the whole sweep."""
    shipped = Path(__file__).resolve().parents[2] / "docker" / "cluster.yaml"
    types = read_node_types(shipped)
    assert types and all(t.gpus for t in types)
    assert {t.gpu_type: t.gpu_memory_bytes for t in types} == {"A10G": 22 * 2**30}


def test_a_gpu_request_the_autoscaler_can_meet_is_accepted_with_a_line_saying_so(
        tmp_path: Path) -> None:
    # before: the head alone, CPU 0, refused every trial of the shipped cluster file
    with pytest.raises(ResourceRequestError):
        check_request(HEAD_ONLY, 1, 1)
    info = _scaling(tmp_path)
    line = check_request(info, 1, 1)
    assert line is not None and "the autoscaler can add gpu.a10g" in line
    assert "trials wait until it has started one" in line
    assert check_request(info, 4, "auto") is not None  # auto: CPUs of a type that comes
    # the A10G type is planned for and placed on, though no such node runs yet
    (gpu,) = info.gpu_types
    assert (gpu.name, gpu.memory_bytes, gpu.nodes, gpu.resource) == (
        "A10G", 22 * 2**30, 0, "accelerator_type:A10G")
    assert info.line().startswith("cluster: 1 node, 0 CPUs, no GPU; the autoscaler (")
    assert info.line().endswith("can add up to 8 x gpu.a10g (4 CPUs, 1 x A10G 22 GiB)")
    assert info.max_cpus == 32  # what max_concurrent counts: the nodes it may add too
    # a running CPU node holds the trial, but the GPU type it is planned for is still to come
    with_cpus = dataclasses.replace(info, cpus=8.0, node_cpus=8.0)
    assert check_request(with_cpus, 1, 0) is None
    line = check_request(with_cpus, 1, "auto")
    assert line is not None and line.startswith("cluster: trials planned for A10G wait until")


def test_a_request_no_node_type_can_meet_is_still_one_line_naming_the_autoscaler(
        tmp_path: Path) -> None:
    info = _scaling(tmp_path)
    with pytest.raises(ResourceRequestError) as gpus:
        check_request(info, 1, 2)
    text = str(gpus.value)
    assert "asks for 2 GPUs per trial, but the largest node has 1, nor does a node type the " \
           "autoscaler can add" in text and "--set resources.gpus_per_trial=1" in text
    assert "\n" not in text
    with pytest.raises(ResourceRequestError, match=r"cpus_per_trial=4\b"):
        check_request(info, 5, 1)
    with pytest.raises(ResourceRequestError, match="no node has both"):
        check_request(_scaling(tmp_path, {
            **BOOTSTRAP, "available_node_types": {
                "cpu": {"resources": {"CPU": 8}}, "gpu": {"resources": {"CPU": 1, "GPU": 1}}}}),
            2, 1)
    # a type without declared resources holds nothing we could know of: not counted
    undeclared = _scaling(tmp_path, {"available_node_types": {"w": {"node_config": {}}}})
    with pytest.raises(ResourceRequestError, match="without resources in its file are not"):
        check_request(undeclared, 0, 1)


def test_the_bootstrap_file_is_found_in_home_and_an_explicit_one_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(AUTOSCALER_CONFIG_ENV, raising=False)
    assert autoscaler_config_path() is None and find_autoscaler() is None  # no `ray up` here
    written = _write(home, BOOTSTRAP)
    assert autoscaler_config_path() == written
    found = find_autoscaler()
    assert found is not None and [t.name for t in found.node_types] == ["gpu.a10g"]
    explicit = _write(tmp_path, {"available_node_types": {}}, "cluster.yaml")
    monkeypatch.setenv(AUTOSCALER_CONFIG_ENV, str(explicit))
    assert autoscaler_config_path() == explicit
    monkeypatch.setenv(AUTOSCALER_CONFIG_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(ClusterError, match=f"^{AUTOSCALER_CONFIG_ENV}=.*missing.yaml: expected"):
        autoscaler_config_path()


@pytest.mark.parametrize("content, where", [
    ("[1, 2", "cannot read it as YAML"),
    ("max_workers: 2\n", "expected a mapping with available_node_types"),
    ("available_node_types: {w: {max_workers: -1}}\n", "available_node_types.w.max_workers"),
    ("available_node_types: {w: {resources: {GPU: one}}}\n", "available_node_types.w.resources"),
    ("max_workers: many\navailable_node_types: {}\n", "max_workers: expected a whole number"),
])
def test_a_file_that_is_not_a_cluster_file_is_one_line_naming_it_and_the_key(
        tmp_path: Path, content: str, where: str) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(content)
    with pytest.raises(ClusterError) as exc:
        read_node_types(path)
    assert str(exc.value).startswith(f"autoscaler cluster file {path}: ")
    assert where in str(exc.value) and "\n" not in str(exc.value)
