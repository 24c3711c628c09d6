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
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from trainables.errors import SersweepError

# Written by `ray start --head` on this machine (Ray's default temp dir): a cluster to join.
RAY_CLUSTER_FILE = Path("/tmp/ray/ray_current_cluster")
CONNECT_TIMEOUT_S = 3.0  # the TCP pre-check of a cluster address
# Where Ray 2.60 reads the cluster token from (ray/_private/authentication).
TOKEN_ENV, TOKEN_PATH_ENV, AUTH_MODE_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"
DEFAULT_TOKEN_FILE = Path.home() / ".ray" / "auth_token"
# Set in the driver of a `ray job submit` job by Ray's job supervisor.
RAY_JOB_ENV = ("RAY_JOB_CONFIG_JSON_ENV_VAR", "RAY_JOB_ID")
TOKEN_HELP = (f"the driver presents the token from {TOKEN_ENV}, the file named by "
              f"{TOKEN_PATH_ENV}, or {DEFAULT_TOKEN_FILE} (in that order); put the cluster's "
              "token there (`ray get-auth-token` on the head node prints it)")


class ClusterError(SersweepError):
    """The Ray cluster named by --address / RAY_ADDRESS / `ray start` cannot be joined."""


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
    ray_module = sys.modules.get("ray")
    if ray_module is not None and ray_module.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address not in ("auto", "local"):
        check_reachable(address)  # before importing Ray: seconds, not Ray's minute of retries
    import ray

    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
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
        # listens beyond loopback.
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
