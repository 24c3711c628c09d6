"""Where a sweep runs: joining a Ray cluster or starting a private local Ray, and its GPUs.

Joining (`--address`, RAY_ADDRESS, or the cluster `ray start` left on this machine):
- the address is tried with a plain TCP connect first (CONNECT_TIMEOUT_S), so a port with
  nothing behind it fails in seconds with a message, instead of Ray's minute of retries;
- token authentication (Ray >= 2.52 clusters, on by default): Ray's client sends the token only
  when RAY_AUTH_MODE=token, and `ray.init(address=...)` with an explicit address never turns it
  on by itself. When RAY_AUTH_MODE is unset and a token is at hand where Ray reads it
  (RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token), token mode is turned on
  for this driver; the cluster's token is printed by `ray get-auth-token` on its head node;
- a refused token is reported as such (ClusterError naming the three places).
Under a Ray job (`ray job submit`) the working directory is Ray's temporary copy of
--working-dir, deleted when the job ends: a relative results root is refused there
(`results_root_for`).
An autoscaling cluster (`ray up`) may not have the nodes a trial needs yet: the node types its
autoscaler can add are read from its cluster config (`autoscaler_config_path`, `read_node_types`)
and count as GPUs to plan for and as nodes that can hold a trial (`check_request`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.errors import SersweepError

# Written by `ray start --head` on this machine (Ray's default temp dir): a cluster to join.
RAY_CLUSTER_FILE = Path("/tmp/ray/ray_current_cluster")
CONNECT_TIMEOUT_S = 3.0  # the TCP pre-check of a cluster address
# Where Ray 2.60 reads the cluster token from (ray/_private/authentication).
TOKEN_ENV, TOKEN_PATH_ENV, AUTH_MODE_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"
DEFAULT_TOKEN_FILE = Path.home() / ".ray" / "auth_token"
# What Ray (2.60: ray/_common/usage) reads to turn its usage statistics off: "0". sersweep sets
# it unless the user exported it (usage_stats_off); RAY_DISABLE_USAGE_STATS, set before issue 25,
# is read by nothing, so the statistics were on and every Tuner.fit() imported mlflow to count
# its callbacks for them (orchestrator/trackers.py: skip_unsent_usage_count).
USAGE_STATS_ENV = "RAY_USAGE_STATS_ENABLED"
# Set in the driver of a `ray job submit` job by Ray's job supervisor.
RAY_JOB_ENV = ("RAY_JOB_CONFIG_JSON_ENV_VAR", "RAY_JOB_ID")
TOKEN_HELP = (f"the driver presents the token from {TOKEN_ENV}, the file named by "
              f"{TOKEN_PATH_ENV}, or {DEFAULT_TOKEN_FILE} (in that order); put the cluster's "
              "token there (`ray get-auth-token` on the head node prints it)")


class ClusterError(SersweepError):
    """The Ray cluster named by --address / RAY_ADDRESS / `ray start` cannot be joined."""


def usage_stats_off() -> None:
    """Ray's usage statistics off for this driver and the Ray it starts, unless the user set
    USAGE_STATS_ENV: a sweep sends nothing to Ray's servers, and Tune counts nothing for them."""
    os.environ.setdefault(USAGE_STATS_ENV, "0")


def token_available() -> bool:
    """Whether a Ray auth token is where Ray looks for one."""
    if os.environ.get(TOKEN_ENV, "").strip():
        return True
    path = os.environ.get(TOKEN_PATH_ENV)
    return Path(path).expanduser().is_file() if path else DEFAULT_TOKEN_FILE.is_file()


def token_source() -> str:
    """Where this driver's token comes from, for messages (`none` without token mode)."""
    if os.environ.get(AUTH_MODE_ENV, "").lower() != "token":
        return f"nowhere: {AUTH_MODE_ENV} is {os.environ.get(AUTH_MODE_ENV, 'unset')}"
    if os.environ.get(TOKEN_ENV, "").strip():
        return TOKEN_ENV
    return os.environ.get(TOKEN_PATH_ENV) or str(DEFAULT_TOKEN_FILE)


def _enable_token_auth() -> None:
    """RAY_AUTH_MODE=token for this driver when it is unset and a token is at hand."""
    if AUTH_MODE_ENV in os.environ or not token_available():
        return
    os.environ[AUTH_MODE_ENV] = "token"
    # Ray caches its config at first use; reload it so this process sees token mode (what
    # Ray itself does when it turns token mode on for `ray.init(address="auto")`).
    from ray._raylet import Config

    Config.initialize("")


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a GCS or ray:// address; None when it is not of that form."""
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """ClusterError unless something accepts a TCP connection at `address` within `timeout`."""
    where = _host_port(address)
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address!r}: nothing accepted a connection on "
            f"{where[0]} port {where[1]} within {timeout:g} s ({exc}); check --address / "
            "RAY_ADDRESS (the head's GCS port, 6379 unless `ray start --head --port` said "
            "otherwise) and that the head node is running"
        ) from None


def _is_auth_failure(exc: BaseException) -> bool:
    from ray.exceptions import AuthenticationError

    if isinstance(exc, AuthenticationError):
        return True
    text = str(exc).lower()
    return "unauthenticated" in text or "authentication" in text or "auth token" in text


def ray_init(address: str | None, verbose: bool) -> None:
    """Join the cluster named by --address or RAY_ADDRESS, or the one `ray start` left on this
    machine (the head node under `ray submit`); else start a private local Ray."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address not in ("auto", "local"):
        # before importing Ray: seconds, not Ray's minute of retries; and before joining a Ray
        # this process started already, which would leave an unreachable address unsaid
        check_reachable(address)
    ray_module = sys.modules.get("ray")
    if ray_module is not None and ray_module.is_initialized():
        return
    import ray

    usage_stats_off()
    # One checkpoint kept per trial forces an experiment snapshot per epoch; it is cheap here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not verbose:  # our console view instead of Tune's status tables
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if not address and RAY_CLUSTER_FILE.is_file():
        recorded = RAY_CLUSTER_FILE.read_text().strip()
        try:
            check_reachable(recorded)
            address = "auto"
        except ClusterError:  # a stopped cluster's leftover file: nothing to join
            print(f"note: {RAY_CLUSTER_FILE} names the Ray cluster at {recorded}, which does "
                  "not answer; starting a private Ray (pass --address to join another)")
    if not address or address == "local":
        # A private Ray for this sweep; no dashboard, and no metrics exporter (Ray binds it to
        # the node's address without auth, and refuses a loopback node address): nothing
        # listens beyond loopback. Its processes start in their own session, so a signal to the
        # driver's process group reaches the driver first (_signals_reach_the_driver_first).
        with _signals_reach_the_driver_first():
            ray.init(include_dashboard=False, log_to_driver=verbose,
                     _system_config={"enable_metrics_collection": False})
        if DEFAULT_TOKEN_FILE.is_file() and DEFAULT_TOKEN_FILE.stat().st_uid == os.getuid():
            DEFAULT_TOKEN_FILE.chmod(0o600)  # Ray writes the token it made 0644
        return
    if address == "auto" and RAY_CLUSTER_FILE.is_file():
        check_reachable(RAY_CLUSTER_FILE.read_text().strip())
    _enable_token_auth()
    try:
        # Joining a cluster: its dashboard and resources are the cluster's business.
        ray.init(address=address, log_to_driver=verbose)
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
        if _is_auth_failure(exc):
            raise ClusterError(
                f"the Ray cluster at {address!r} refused this driver's authentication (token "
                f"from {token_source()}; Ray: {str(exc).split('.')[0]}): {TOKEN_HELP}"
            ) from None
        # Ray 2.60 reports a refused token only in its C++ log lines ("Unauthenticated ...
        # InvalidAuthToken") and then raises a plain ConnectionError; the TCP check passed, so
        # the head is there and authentication is the usual cause: say so, with the token source.
        raise ClusterError(
            f"the Ray cluster at {address!r} accepts connections but did not let this driver "
            f"join ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            f"with a running head this is usually authentication (token sent from "
            f"{token_source()}; Ray's log lines above say InvalidAuthToken when it is): "
            f"{TOKEN_HELP}"
        ) from None
    print(f"joined the Ray cluster at {address}: {ray.cluster_resources()}")


@contextlib.contextmanager
def _signals_reach_the_driver_first() -> Iterator[None]:
    """Around the private `ray.init` (#22.4): Ray's processes (GCS, raylet, their workers) start
    in a session of their own, so a SIGTERM to the driver's process group (SLURM's scancel,
    `timeout`, systemd) reaches the driver alone, which then stops the sweep cleanly (exit 143,
    the continue line) instead of losing its GCS and waiting a minute for it. SIGTERM is held
    back while Ray starts (ray.init installs its own SIGTERM handlers, which would exit 15 or 1
    without the line); the handler that was there before comes back afterwards and a SIGTERM
    that arrived meanwhile is delivered to it then. Ray has no option for either: its process
    spawner (ray._private.services.ConsolePopen) is swapped for the duration."""
    from ray._private import services

    spawner = services.ConsolePopen

    class OwnSession(spawner):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            inner = kwargs.get("preexec_fn")

            def preexec() -> None:  # in the child: Ray's own set-up, SIGTERM deliverable
                if inner is not None:
                    inner()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

            kwargs["preexec_fn"] = preexec
            kwargs["start_new_session"] = True
            super().__init__(*args, **kwargs)

    handler = signal.getsignal(signal.SIGTERM)
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    services.ConsolePopen = OwnSession
    try:
        yield
    finally:
        services.ConsolePopen = spawner
        if main:
            signal.signal(signal.SIGTERM, handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def joins_a_cluster(address: str | None) -> bool:
    """Whether ray_init(address) joins a cluster (else it starts a private Ray on this
    machine, whose resources are this machine's: checked before Ray starts)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        return address != "local"
    if not RAY_CLUSTER_FILE.is_file():
        return False
    try:
        check_reachable(RAY_CLUSTER_FILE.read_text().strip())
    except ClusterError:
        return False
    return True


def under_ray_job() -> bool:
    """Whether this driver was started by `ray job submit` (Ray's job supervisor)."""
    return any(os.environ.get(name) for name in RAY_JOB_ENV)


def results_root_for(root: str) -> str:
    """The results root as used: a URI as given, a path made absolute (so the console names the
    real place). Under a Ray job a relative path is refused: the job's working directory is
    Ray's temporary copy of --working-dir, deleted after the job."""
    if "://" in root:
        return root
    path = Path(root).expanduser()
    if not path.is_absolute() and under_ray_job():
        raise ClusterError(
            f"the results root {root!r} is relative, and this is a Ray job: its working "
            f"directory ({os.getcwd()}) is Ray's temporary copy of --working-dir, deleted when "
            "the job ends; pass --results /absolute/path (on the head node) or a shared "
            "storage URI (s3://bucket/results, gs://...)"
        )
    return str(path.resolve())


# --- the GPUs of the cluster (#22): asked of the nodes that have them, not of the driver ------
ACCELERATOR_PREFIX = "accelerator_type:"  # Ray's node resource naming a node's GPU type
# A node may declare the memory of each of its GPUs (MiB) as a custom resource: for GPUs that
# CUDA cannot see (the tests: declared GPUs on a CPU machine) or to cap what is planned.
# `ray start --num-gpus 2 --resources '{"accelerator_type:L4": 1, "sersweep_gpu_memory_mib":
# 24576}'`. Without it the memory is asked of the node by a small Ray task (torch.cuda there).
GPU_MEMORY_RESOURCE = "sersweep_gpu_memory_mib"
UNNAMED_GPU = "GPU"  # the type of a GPU node whose type Ray does not name
PROBE_TIMEOUT_S = 60.0  # the per-type memory query; unanswered = memory unknown (no budget)


@dataclass(frozen=True)
class GpuType:
    """The GPUs of one type in the cluster."""

    name: str  # Ray's accelerator type (H100, L4, ...), or UNNAMED_GPU
    memory_bytes: int | None  # of one GPU; None when no node could say
    count: float  # GPUs of this type, all nodes together
    nodes: int
    per_node: float  # the most GPUs of this type on one node

    @property
    def resource(self) -> str | None:
        """The Ray resource that places a trial on this type (None: the only, unnamed type)."""
        return None if self.name == UNNAMED_GPU else f"{ACCELERATOR_PREFIX}{self.name}"


@dataclass(frozen=True)
class ClusterInfo:
    """What the sweep may ask for: the nodes, their CPUs, the GPUs of each type. With an
    autoscaler, `addable` are the node types it can start and `gpu_types` also holds the GPU
    types only they have (nodes 0: planned for and placed on, though no such node runs yet)."""

    nodes: int
    cpus: float
    node_cpus: float  # the most CPUs on one node
    gpu_types: tuple[GpuType, ...] = ()
    autoscaler: Autoscaler | None = None  # a joined cluster's, when it has one

    @property
    def addable(self) -> tuple[NodeType, ...]:
        """The node types the autoscaler can start (none without one)."""
        return self.autoscaler.node_types if self.autoscaler else ()

    @property
    def node_gpus(self) -> float:
        """The most GPUs on one running node (what one trial can ask for at most, now)."""
        return max((t.per_node for t in self.gpu_types if t.nodes), default=0.0)

    @property
    def max_cpus(self) -> float:
        """The CPUs of the cluster once the autoscaler added every node it may (the running
        workers count against its limits too, so this is an upper bound)."""
        return self.cpus + sum(t.cpus * t.max_workers for t in self.addable)

    def line(self) -> str:
        """`cluster: 2 nodes, 4 x H100 80 GiB, 8 x L4 24 GiB` (the run's and plan's first line);
        with an autoscaler, the node types it can add follow."""
        parts = [f"{self.nodes} node{'s' * (self.nodes != 1)}", f"{self.cpus:g} CPUs"]
        running = [t for t in self.gpu_types if t.nodes]
        for t in running:
            memory = "memory unknown" if t.memory_bytes is None else _gib_text(t.memory_bytes)
            parts.append(f"{t.count:g} x {t.name} {memory}")
        if not running:
            parts.append("no GPU")
        text = "cluster: " + ", ".join(parts)
        if self.autoscaler is not None:
            text += (f"; the autoscaler ({self.autoscaler.config}) can add "
                     + (", ".join(t.text() for t in self.addable) or "no node"))
        return text


# --- an autoscaling cluster (`ray up`): the node types it can add ----------------------------
# Written by `ray up` on the head node (and into its container, Ray's BOOTSTRAP_MOUNTS): the
# cluster file with Ray's defaults filled in, which the head's autoscaler runs from
# (`ray start --head --autoscaling-config=~/ray_bootstrap_config.yaml`). Ray Tune looks for the
# same file to tell an autoscaling cluster (ray/tune/execution/cluster_info.py).
RAY_BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")
# Names the cluster file explicitly: a driver that joins from elsewhere (`--address` from a
# laptop: point it at docker/cluster.yaml), or a head whose file is somewhere else.
AUTOSCALER_CONFIG_ENV = "SERSWEEP_AUTOSCALER_CONFIG"


@dataclass(frozen=True)
class NodeType:
    """A worker node type an autoscaler can start (`available_node_types.<name>` of its file).
    `resources` None: the file declares none (Ray infers them from the instance type on some
    clouds); such a type is not counted as holding anything."""

    name: str
    resources: tuple[tuple[str, float], ...] | None
    max_workers: int

    def _get(self, key: str) -> float:
        return dict(self.resources or ()).get(key, 0.0)

    @property
    def cpus(self) -> float:
        return self._get("CPU")

    @property
    def gpus(self) -> float:
        return self._get("GPU")

    @property
    def gpu_type(self) -> str:
        """Ray's accelerator type declared for its GPUs, else UNNAMED_GPU."""
        names = sorted(k.removeprefix(ACCELERATOR_PREFIX) for k, _ in self.resources or ()
                       if k.startswith(ACCELERATOR_PREFIX))
        return names[0] if names else UNNAMED_GPU

    @property
    def gpu_memory_bytes(self) -> int | None:
        """The GPU memory declared with GPU_MEMORY_RESOURCE (MiB), else None (unknown)."""
        mib = self._get(GPU_MEMORY_RESOURCE)
        return int(mib * 2**20) if mib else None

    def holds(self, cpus: float, gpus: float) -> bool:
        """Whether one node of this type holds one trial asking for `cpus` and `gpus`."""
        return self.resources is not None and self.cpus >= cpus and self.gpus >= gpus

    def text(self) -> str:
        """`up to 8 x gpu.a10g (4 CPUs, 1 x A10G 24 GiB)`."""
        if self.resources is None:
            return f"up to {self.max_workers} x {self.name} (resources not declared)"
        what = f"{self.cpus:g} CPUs"
        if self.gpus:
            memory = self.gpu_memory_bytes
            memory_text = "" if memory is None else f" {_gib_text(memory)}"
            what += f", {self.gpus:g} x {self.gpu_type}{memory_text}"
        return f"up to {self.max_workers} x {self.name} ({what})"


@dataclass(frozen=True)
class Autoscaler:
    """The autoscaler of a joined cluster: its cluster file and the node types it can start."""

    config: str
    node_types: tuple[NodeType, ...]


def find_autoscaler() -> Autoscaler | None:
    """The autoscaler of the cluster file autoscaler_config_path() finds (ClusterError, one
    line, for a file that is not one), else None. Call it only when joining a cluster: a
    private Ray never scales."""
    path = autoscaler_config_path()
    return None if path is None else Autoscaler(str(path), read_node_types(path))


def autoscaler_config_path() -> Path | None:
    """The autoscaler's cluster file: the one AUTOSCALER_CONFIG_ENV names (ClusterError when it
    is not a file), else RAY_BOOTSTRAP_CONFIG when `ray up` wrote it here, else None."""
    named = os.environ.get(AUTOSCALER_CONFIG_ENV, "").strip()
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ClusterError(f"{AUTOSCALER_CONFIG_ENV}={named}: expected a Ray cluster file "
                               "(e.g. docker/cluster.yaml), but there is no such file")
        return path
    default = RAY_BOOTSTRAP_CONFIG.expanduser()
    return default if default.is_file() else None


def read_node_types(path: Path) -> tuple[NodeType, ...]:
    """The worker node types the autoscaler of the cluster file `path` can start: those of
    `available_node_types` whose max_workers (Ray's default: the global max_workers; 0 for the
    head's type) and the global max_workers are above 0. ClusterError (one line) when the file
    is not a Ray cluster file."""
    import yaml

    def bad(what: str) -> ClusterError:
        return ClusterError(f"autoscaler cluster file {path}: {what}")

    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise bad(f"cannot read it as YAML ({type(exc).__name__})") from None
    if not isinstance(config, dict) or not isinstance(config.get("available_node_types"), dict):
        raise bad("expected a mapping with available_node_types (a Ray cluster file)")
    global_max = config.get("max_workers")
    if global_max is not None and (not isinstance(global_max, int) or global_max < 0):
        raise bad(f"max_workers: expected a whole number >= 0, got {global_max!r}")
    types = []
    for name, node_type in config["available_node_types"].items():
        if not isinstance(node_type, dict):
            raise bad(f"available_node_types.{name}: expected a mapping")
        default_max = 0 if name == config.get("head_node_type") else global_max
        most = node_type.get("max_workers", default_max)
        if most is not None and (not isinstance(most, int) or most < 0):
            raise bad(f"available_node_types.{name}.max_workers: expected a whole number >= 0, "
                      f"got {most!r}")
        if global_max is not None:
            most = global_max if most is None else min(most, global_max)
        if most == 0:
            continue  # the autoscaler never starts one
        declared = node_type.get("resources")
        if declared is not None and not (
                isinstance(declared, dict) and all(
                    isinstance(v, int | float) and not isinstance(v, bool)
                    for v in declared.values())):
            raise bad(f"available_node_types.{name}.resources: expected a mapping of resource "
                      f"names to numbers, got {declared!r}")
        resources = None if declared is None else tuple(
            sorted((str(k), float(v)) for k, v in declared.items()))
        # no max_workers anywhere: Ray's defaults are above 0 (2 on the clouds); count one
        types.append(NodeType(str(name), resources, 1 if most is None else int(most)))
    return tuple(types)


def with_autoscaler(info: ClusterInfo, autoscaler: Autoscaler) -> ClusterInfo:
    """`info` with the node types `autoscaler` can add: their GPU types that no running node
    has join gpu_types (nodes 0) so that trials are planned for and placed on them."""
    import dataclasses

    running = {t.name for t in info.gpu_types}
    added: dict[str, GpuType] = {}
    for node_type in autoscaler.node_types:
        if not node_type.gpus or node_type.gpu_type in running:
            continue
        count = node_type.gpus * node_type.max_workers
        before = added.get(node_type.gpu_type)
        memory = node_type.gpu_memory_bytes
        if before is not None:
            known = [m for m in (before.memory_bytes, memory) if m is not None]
            memory = min(known) if known else None
            count += before.count
        added[node_type.gpu_type] = GpuType(node_type.gpu_type, memory, count, 0, max(
            node_type.gpus, before.per_node if before else 0.0))
    return dataclasses.replace(info, gpu_types=info.gpu_types + tuple(added.values()),
                               autoscaler=autoscaler)


def _gib_text(n: int) -> str:
    """80 GiB, 24 GiB, 512 MiB (3 significant digits)."""
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def _probe_gpu() -> tuple[str, int] | None:
    """Runs on a GPU node (a Ray task): (device name, total memory) of its first visible GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return str(props.name), int(props.total_memory)


def _probe_node(node_id: str, timeout: float) -> tuple[str, int] | None:
    """_probe_gpu on that node, or None when CUDA is absent there or it does not answer."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, num_gpus=0.01, max_retries=0)(_probe_gpu).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
    ref = task.remote()
    ready, _ = ray.wait([ref], timeout=timeout)
    if not ready:
        ray.cancel(ref, force=True)
        return None
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:  # no torch there, a dead node: memory unknown
        print(f"note: could not ask node {node_id[:8]} for its GPU memory ({type(exc).__name__})")
        return None


def cluster_from_nodes(nodes: list[dict[str, Any]],
                       probe: Callable[[str], tuple[str, int] | None]) -> ClusterInfo:
    """ClusterInfo from `ray.nodes()` rows (alive ones count); `probe(node_id)` asks one node of
    each GPU type without a declared GPU_MEMORY_RESOURCE for its GPU memory."""
    alive = [n for n in nodes if n.get("Alive", True)]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for node in alive:
        res = node.get("Resources", {})
        if res.get("GPU", 0) <= 0:
            continue
        names = sorted(k.removeprefix(ACCELERATOR_PREFIX) for k in res
                       if k.startswith(ACCELERATOR_PREFIX))
        by_type.setdefault(names[0] if names else UNNAMED_GPU, []).append(node)
    types = []
    for name, members in sorted(by_type.items()):
        declared = [n["Resources"][GPU_MEMORY_RESOURCE] for n in members
                    if n["Resources"].get(GPU_MEMORY_RESOURCE)]
        memory = int(min(declared) * 2**20) if declared else None
        if memory is None:
            answer = probe(members[0]["NodeID"])
            memory = answer[1] if answer else None
        gpus = [float(n["Resources"]["GPU"]) for n in members]
        types.append(GpuType(name, memory, sum(gpus), len(members), max(gpus)))
    cpus = [float(n.get("Resources", {}).get("CPU", 0)) for n in alive]
    return ClusterInfo(len(alive), sum(cpus), max(cpus, default=0.0), tuple(types))


_DISCOVERED: dict[str, ClusterInfo] = {}  # per Ray cluster (GCS address): asked once per run


def discover_cluster(probe_timeout: float = PROBE_TIMEOUT_S,
                     autoscaler: Autoscaler | None = None) -> ClusterInfo:
    """The cluster Ray is connected to (ray_init first): nodes, CPUs, GPUs per type with their
    memory, asked of the GPU nodes themselves; a CPU-only head or driver is fine; with
    `autoscaler` (find_autoscaler(), for a joined cluster) also the node types it can add.
    Cached."""
    import ray

    key = f"{ray.get_runtime_context().gcs_address} {autoscaler}"
    if key not in _DISCOVERED:
        info = cluster_from_nodes(ray.nodes(), lambda node_id: _probe_node(node_id, probe_timeout))
        if autoscaler is not None:
            info = with_autoscaler(info, autoscaler)
        _DISCOVERED[key] = info
    return _DISCOVERED[key]


def local_gpu_info() -> ClusterInfo:
    """This machine alone (`plan` without --address): its CUDA GPUs, if any."""
    import torch

    cpus = float(os.cpu_count() or 1)
    if not torch.cuda.is_available():
        return ClusterInfo(1, cpus, cpus)
    props = torch.cuda.get_device_properties(0)
    count = float(torch.cuda.device_count())
    name = str(props.name)
    return ClusterInfo(1, cpus, cpus, (GpuType(name, int(props.total_memory), count, 1, count),))


def fixed_gpu_info(memory_bytes: int, cpus: float = 1.0) -> ClusterInfo:
    """One GPU of the given size (`plan --gpu-memory 24GiB`)."""
    return ClusterInfo(1, cpus, cpus, (GpuType(UNNAMED_GPU, int(memory_bytes), 1.0, 1, 1.0),))


def _reads(path: str, token: str) -> bool:
    """Runs on a node (a Ray task): whether `path` there holds `token`."""
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def check_cache_on_nodes(cache_dir: str | None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """On a cluster of several nodes: ClusterError (one line) unless every alive node reads the
    data cache the driver writes (a marker file, read back by a Ray task pinned to each node).
    A node that does not answer within `timeout` is not held against the path."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    if not cache_dir or "://" in cache_dir or len(nodes) < 2:
        return
    token = uuid.uuid4().hex
    marker = Path(cache_dir).expanduser() / f".node-check-{token}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(token)
    try:
        task = ray.remote(num_cpus=0, max_retries=0)(_reads)
        refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                .remote(str(marker), token): node for node in nodes}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        blind = [refs[ref][:8] for ref in ready if not ray.get(ref)]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise ClusterError(
            f"data.cache_dir {str(Path(cache_dir).expanduser())!r} is not readable from node(s) "
            f"{', '.join(blind)} of this {len(nodes)}-node cluster: put the cache on storage "
            "every node mounts (--set data.cache_dir=/shared/cache or SERSWEEP_CACHE_DIR)")


class ResourceRequestError(SersweepError):
    """A per-trial request that no node of the cluster can meet (it would wait forever)."""


def check_request(info: ClusterInfo, cpus_per_trial: float,
                  gpus_per_trial: float | str) -> str | None:
    """ResourceRequestError (exit 2, one line: asked, has, the flag) when no node can hold one
    trial: Tune would keep it pending forever. A request that only a node type of the
    autoscaler can hold is accepted: the line to print (the cluster scales for it), else None."""
    gpus = 0.0 if gpus_per_trial == "auto" or not gpus_per_trial else float(gpus_per_trial)
    if cpus_per_trial <= info.node_cpus and gpus <= info.node_gpus:
        coming = [t.name for t in info.gpu_types if not t.nodes]
        if gpus_per_trial and coming and info.autoscaler is not None:
            return (f"cluster: trials planned for {', '.join(coming)} wait until the autoscaler "
                    f"({info.autoscaler.config}) has started a node with that GPU")
        return None
    # "auto" asks for at most one GPU, planned for a type that is there (or none at all)
    holders = [t for t in info.addable if t.holds(cpus_per_trial, gpus)]
    if holders:
        return (f"cluster: no node running now holds one trial ({cpus_per_trial:g} CPUs, "
                f"{gpus:g} GPUs); the autoscaler can add {', '.join(t.name for t in holders)} "
                f"({info.autoscaler.config}): trials wait until it has started one")
    scaling = ""
    if info.addable:
        scaling = ", nor does a node type the autoscaler can add"
        if any(t.resources is None for t in info.addable):
            scaling += " (those without resources in its file are not counted)"
    elif info.autoscaler is not None:
        scaling = ", and the autoscaler can add no node"
    if cpus_per_trial > info.node_cpus and cpus_per_trial > max(
            (t.cpus for t in info.addable), default=0.0):
        largest = max([info.node_cpus, *(t.cpus for t in info.addable)])
        raise ResourceRequestError(
            f"resources.cpus_per_trial asks for {cpus_per_trial:g} CPUs per trial, but the "
            f"largest node has {largest:g}{scaling} ({info.line()}): pass --set "
            f"resources.cpus_per_trial={max(1, int(largest))}")
    most = max([info.node_gpus, *(t.gpus for t in info.addable if t.resources is not None)])
    if not most:
        raise ResourceRequestError(
            f"resources.gpus_per_trial asks for {gpus:g} GPU per trial, but this cluster has no "
            f"GPU{scaling} ({info.line()}): pass --set resources.gpus_per_trial=0 to train on "
            "the CPU (or `auto`: GPUs where there are some)")
    if gpus > most:
        raise ResourceRequestError(
            f"resources.gpus_per_trial asks for {gpus:g} GPUs per trial, but the largest node "
            f"has {most:g}{scaling} ({info.line()}): pass --set "
            f"resources.gpus_per_trial={most:g}")
    raise ResourceRequestError(  # enough CPUs on one node, enough GPUs on another
        f"resources asks for {cpus_per_trial:g} CPUs and {gpus:g} GPUs per trial, but no node "
        f"has both{scaling} ({info.line()}): lower resources.cpus_per_trial or "
        "resources.gpus_per_trial with --set")


def tune_storage_path(results_root: str, sweep: str) -> str:
    """Tune's checkpoints live beside the results, so they follow a shared path or URI."""
    if "://" in results_root:
        return f"{results_root.rstrip('/')}/{sweep}/_tune"
    return str((Path(results_root) / sweep / "_tune").resolve())
