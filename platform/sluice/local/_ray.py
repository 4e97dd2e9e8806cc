"""A local Ray cluster of two nodes (a head on 127.0.0.1 and a worker on 127.0.0.2), for the
3-node local cluster: ``ray start --block`` twice, each with ports of its own.

Two raylets on one host need distinct ports for everything ``ray start`` would otherwise
take by default (node manager, object manager, metrics, dashboard agent, runtime-env
agent, workers); each node also gets a resource named after it (``node1``, ``node2``), so
a test can place an actor on the worker node and then kill that node. ``--block`` keeps
``ray start`` in the foreground, so ``up`` records it like the JVMs and ``down`` stops its
process group (never ``ray stop``, which would stop every Ray on the machine), and then
removes Ray's record of the cluster (``forget_address``), as ``ray stop`` does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sluice.config import PlatformConfig

NAME = "ray"
NODES = 2
STOP_GRACE_S = 10.0
"""SIGTERM, then SIGKILL after this: some of a node's processes outlive a SIGTERM to its
group (measured: the whole 60 s grace the JVMs get, every time); `ray stop` gives 16 s."""


SYSTEM_CONFIG = {"num_workers_soft_limit": 8}
"""Ray settings for the small local Rays (this cluster's head, the demo's and the tests'):
each raylet keeps up to 8 idle task workers (Ray's default: its CPU count). Ray Data's own
actors count against that limit, so with 1-2 CPUs every task worker was killed a second
after its task and the next task waited for a new process. Measured, the same 300-row batch
job on a 2-CPU local Ray, second and third runs: 14.0-14.7 s by default, 11.5 s with this
(key check 1.5 -> 0.15 s, score pass 6.4-6.9 -> 4.0-4.4 s)."""


def host(node: int) -> str:
    return f"127.0.0.{node}"


def gcs_address(cfg: PlatformConfig) -> str:
    return f"{host(1)}:{cfg.local.ray_port}"


def ports(cfg: PlatformConfig, node: int) -> dict[str, int]:
    base = cfg.local.ray_port + 10 * node
    named = {"node manager": base + 1, "object manager": base + 2, "metrics": base + 3,
             "dashboard agent": base + 4, "dashboard agent grpc": base + 5,
             "runtime env agent": base + 6}  # fmt: skip
    return ({"GCS": cfg.local.ray_port} if node == 1 else {}) | named


def command(cfg: PlatformConfig, node: int) -> list[str]:
    p = ports(cfg, node)
    workers = 20_000 + 1_000 * node
    cmd = [
        str(Path(sys.executable).with_name("ray")), "start", "--block", "--disable-usage-stats",
        f"--node-ip-address={host(node)}", f"--num-cpus={cfg.local.ray_cpus_per_node}",
        f"--resources={json.dumps({f'node{node}': 1})}",
        f"--object-store-memory={cfg.local.ray_object_store_mb * 1024 * 1024}",
        f"--node-manager-port={p['node manager']}",
        f"--object-manager-port={p['object manager']}",
        f"--metrics-export-port={p['metrics']}",
        f"--dashboard-agent-listen-port={p['dashboard agent']}",
        f"--dashboard-agent-grpc-port={p['dashboard agent grpc']}",
        f"--runtime-env-agent-port={p['runtime env agent']}",
        f"--min-worker-port={workers}", f"--max-worker-port={workers + 999}",
    ]  # fmt: skip
    if node == 1:
        return [*cmd, "--head", f"--port={cfg.local.ray_port}", "--include-dashboard=false",
                f"--ray-client-server-port={cfg.local.ray_port + 9}",
                f"--system-config={json.dumps(SYSTEM_CONFIG)}"]  # fmt: skip
    return [*cmd, f"--address={gcs_address(cfg)}"]


def forget_address(cfg: PlatformConfig) -> None:
    """Remove Ray's record of the last cluster ``ray start`` made (``/tmp/ray/
    ray_current_cluster``) if it is this one, as ``ray stop`` would: a driver started
    later without an address must start a Ray of its own, not look for this one."""
    from ray._common.utils import get_ray_address_file

    path = Path(get_ray_address_file(None))
    try:
        if path.read_text().strip().endswith(f":{cfg.local.ray_port}"):
            path.unlink()
    except OSError:
        pass
