"""The private Ray a sweep starts exposes no metrics endpoint beyond loopback and keeps its auth
token private (issue 23.8): Ray binds its metrics exporter to the node's address (all interfaces,
no auth) and refuses a loopback node address, so the private instance runs without it; Ray writes
the token it generates as ~/.ray/auth_token with mode 0644, and ray_init makes it 0600.

A real private Ray, started by orchestrator.cluster.ray_init in a fresh process (HOME in a
temporary folder, so the token file is this test's own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PROBE = """
import json, ray
from pathlib import Path
from orchestrator.cluster import ray_init
ray_init(None, False)
port = ray._private.worker.global_worker.node.metrics_export_port
bound = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):  # listening sockets: state 0A
    for line in Path(table).read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hexport = local.partition(":")
        if state == "0A" and int(hexport, 16) == port:
            bound.add(address)
print(json.dumps({"port": port, "bound": sorted(bound)}))
ray.shutdown()
"""
# /proc/net/tcp spells addresses in hex: the loopback ones (IPv4, IPv6, IPv4-mapped)
LOOPBACK = {"0100007F", "00000000000000000000000001000000",
            "0000000000000000FFFF00000100007F"}


@pytest.mark.slow  # starts a private Ray: ~20 s on 2 shared cores
def test_the_private_ray_binds_metrics_to_loopback_and_keeps_its_token_private(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, text=True,
                         capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    # no metrics exporter at all (port -1), or one on loopback only (00000000: every interface)
    assert found["port"] <= 0 or set(found["bound"]) <= LOOPBACK, found
    token = tmp_path / ".ray" / "auth_token"
    if token.exists():  # Ray >= 2.52 generates one for a private instance
        assert token.stat().st_mode & 0o777 == 0o600
