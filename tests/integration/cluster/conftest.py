"""The local 3-node cluster (configs/platform-cluster.yaml), started for this package's
tests by the project's own code (`sluice local up --cluster`) and stopped after them. The
tests own its state directory (.state/cluster): each session starts it empty
(``Cluster.fresh``), so a cluster started by hand there loses its data to `make test`.

The package has an ``__init__.py``: only then does pytest end a "package"-scoped fixture
after the package's last test (without one it lasts the whole session, and the cluster
would load the machine through the rest of the suite).

Jobs run on the cluster as a team runs them: a driver process (``python -m pipelines...``,
``sluice serve``) with ``SLUICE_CONFIG=configs/platform-cluster.yaml``; only the keyspace,
the registry and the alert topic differ per test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sluice.config import REPO_ROOT, PlatformConfig, load_platform_config
from sluice.contract import load_contract
from sluice.local import LocalServices, _ray
from sluice.store import apply_schema, schema_change, session_for

CONFIG = REPO_ROOT / "configs" / "platform-cluster.yaml"


class Cluster:
    def __init__(self) -> None:
        self.cfg: PlatformConfig = load_platform_config(CONFIG)
        self.services = LocalServices(self.cfg, echo=lambda line: None)
        self.registry_root: Path | None = None
        self.run = uuid.uuid4().hex[:8]

    def pid(self, node: str) -> int:
        rec = self.services._record(node)
        assert rec is not None and rec.alive(), f"{node} is not running"
        return rec.pid

    def kill(self, node: str) -> float:
        """SIGKILL one node (``cassandra-2``, ``kafka-3``): no shutdown, no flush. Returns
        the moment (time.monotonic())."""
        os.kill(self.pid(node), signal.SIGKILL)
        return time.monotonic()

    def restart(self) -> float:
        """Start every node that is down again and wait until all answer; returns the
        moment they do."""
        self.services.up()
        return time.monotonic()

    def wait_for_ray_nodes(self, killed: str, timeout_s: float = 120.0) -> list[str]:
        """Wait until Ray's GCS has given up on the node whose raylet was SIGKILLed on
        address ``killed`` (listed dead) and counts exactly the cluster's Ray nodes alive,
        its restarted self among them; return their addresses. Until its health checks
        give up (tens of seconds) the GCS lists the killed node alive beside its restarted
        self: a test that killed one waits here, so that the next finds the cluster whole.
        A driver of its own polls ``ray.nodes()`` (this process runs the tests' local Ray)."""
        script = (
            "import json, time, ray\n"
            f"ray.init(address={self.cfg.ray.address!r}, log_to_driver=False)\n"
            f"deadline = time.monotonic() + {timeout_s}\n"
            "while True:\n"
            "    nodes = ray.nodes()\n"
            "    alive = sorted(n['NodeManagerAddress'] for n in nodes if n['Alive'])\n"
            "    dead = [n for n in nodes\n"
            f"            if not n['Alive'] and n['NodeManagerAddress'] == {killed!r}]\n"
            f"    if (dead and len(alive) == {_ray.NODES} and {killed!r} in alive\n"
            "            or time.monotonic() > deadline):\n"
            "        break\n"
            "    time.sleep(0.5)\n"
            "print(json.dumps({'alive': alive, 'dead': len(dead)}))\n"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=timeout_s + 60, cwd=REPO_ROOT)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        assert seen["dead"] and len(seen["alive"]) == _ray.NODES and killed in seen["alive"], (
            f"after {timeout_s} s Ray counts {seen['alive']} alive and {seen['dead']} dead "
            f"node(s) on {killed}")  # fmt: skip
        return seen["alive"]

    def fresh(self) -> None:
        """Stop what an earlier session left running and delete every node's data (not the
        fetched jars): each session starts from an empty cluster, as a fresh clone does. A
        node killed in an earlier session can keep a schema of its own: Cassandra 5.0 once
        failed to drop a keyspace whose tables it had replayed from its commit log
        ("Unknown CF"), and the nodes then disagreed on the schema for good."""
        if not self.services.state.exists():
            return  # a fresh clone: nothing was ever started here
        self.services.down()
        for path in self.services.state.iterdir():
            if not path.name.startswith(("cassandra-", "kafka-")):
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()  # kafka-cluster-id: the next `up` formats a new cluster

    def alerts_topic(self, keyspace: str) -> str:
        return f"test-{keyspace}-{self.run}-{{contract}}-alerts"

    def config(self, keyspace: str) -> PlatformConfig:
        """The cluster's config with a keyspace of the test's own (dropped, then applied as
        `sluice schema apply` does: replication 3 from the config) and the trained
        registry."""
        assert self.registry_root is not None
        cfg = self.cfg.model_copy(update={
            "cassandra": self.cfg.cassandra.model_copy(update={"keyspace": keyspace}),
            "kafka": self.cfg.kafka.model_copy(update={"alerts_topic": self.alerts_topic(
                keyspace)}),
            "registry": self.cfg.registry.model_copy(update={"root_uri": str(
                self.registry_root)}),
        })  # fmt: skip
        session = session_for(cfg.cassandra)
        schema_change(session, f"DROP KEYSPACE IF EXISTS {keyspace}")
        apply_schema(session, cfg.cassandra, [load_contract("fraud")])
        return cfg

    def env(self, keyspace: str) -> dict[str, str]:
        """A driver process's environment: the cluster's config, this keyspace, the
        registry, the alert topic and the cluster's Ray."""
        return {**os.environ, "SLUICE_CONFIG": str(CONFIG),
                "SLUICE_CASSANDRA__KEYSPACE": keyspace,
                "SLUICE_REGISTRY__ROOT_URI": str(self.registry_root),
                "SLUICE_KAFKA__ALERTS_TOPIC": self.alerts_topic(keyspace),
                "SLUICE_RAY__ADDRESS": self.cfg.ray.address, "RAY_ADDRESS": self.cfg.ray.address,
                "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}  # fmt: skip

    def coordinator_writes(self, keyspace: str, table: str | None = None) -> dict[str, int]:
        """Writes each live Cassandra node coordinated to ``keyspace``'s tables (or one)
        since it started (its ``system_views.coordinator_write_latency`` virtual table:
        node-local, so each node is asked itself)."""
        session = session_for(self.cfg.cassandra)
        out = {}
        for host in session.cluster.metadata.all_hosts():
            if not host.is_up:
                continue
            try:
                rows = session.execute(
                    "SELECT table_name, count FROM system_views.coordinator_write_latency WHERE "
                    "keyspace_name = %s", (keyspace,), host=host, timeout=5)  # fmt: skip
            except Exception:  # noqa: BLE001 - a node going down between the check and here
                continue
            out[host.address] = sum(r.count for r in rows if table in (None, r.table_name))
        return out


class WritesCounter:
    """Writes to a keyspace coordinated by the whole ring so far: each node's count adds up
    across its restarts (a restarted node counts from 0 again; a dead one keeps its last)."""

    def __init__(self, cluster: Cluster, keyspace: str) -> None:
        self.cluster, self.keyspace = cluster, keyspace
        self.last: dict[str, int] = {}
        self.before_restart: dict[str, int] = {}

    def __call__(self) -> int:
        for host, n in self.cluster.coordinator_writes(self.keyspace).items():
            if n < self.last.get(host, 0):
                self.before_restart[host] = self.before_restart.get(host, 0) + self.last[host]
            self.last[host] = n
        return sum(self.last.values()) + sum(self.before_restart.values())


def raylet_pid(node_ip: str) -> int:
    """The raylet of the Ray node on ``node_ip`` (its process, not ``ray start``)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"/raylet") and (
                    f"--node_ip_address={node_ip}".encode() in cmd):  # fmt: skip
                return int(entry.name)
    raise AssertionError(f"no raylet on {node_ip}")


@dataclass
class Meter:
    """Samples a progress count (rows written, messages committed, requests answered)
    every ``every`` seconds on a thread, so a test can report the rate before, during and
    after a fault, and how long progress stalled after it."""

    count: Callable[[], int]
    every: float = 0.5
    samples: list[tuple[float, int]] = field(default_factory=list)
    last_error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self.count()))
            except Exception as exc:  # noqa: BLE001 - a sample lost to the fault is skipped
                self.last_error = f"{time.monotonic():.1f}: {exc}"
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def now(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def rate(self, t0: float, t1: float) -> float:
        """Progress per second between two moments (from the samples nearest inside)."""
        inside = [(t, n) for t, n in self.samples if t0 <= t <= t1]
        if len(inside) < 2 or inside[-1][0] == inside[0][0]:
            return 0.0
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def longest_pause(self, t0: float, t1: float) -> float:
        """The longest time between t0 and t1 with no progress at all: after a fault, how
        long the job stalled (recovery); before it, the job's own pauses between batches."""
        inside = [(t, n) for t, n in self.samples if t0 <= t <= t1]
        longest, since = 0.0, None
        for (s0, n0), (s1, n1) in zip(inside, inside[1:], strict=False):
            since = s0 if since is None else since
            if n1 > n0:
                longest, since = max(longest, s1 - since), None
        return round(longest, 1)

    def report(self, name: str, fault: float, healed: float | None, end: float) -> dict:
        """Rates before (up to 20 s), during (fault to heal) and after; recovery is the
        longest pause in progress after the fault, beside the longest one before it."""
        start = self.samples[0][0] if self.samples else fault
        healed = end if healed is None else healed
        return {"fault": name,
                "before_per_s": round(self.rate(max(start, fault - 20), fault), 1),
                "during_per_s": round(self.rate(fault, healed), 1),
                "after_per_s": round(self.rate(healed, end), 1),
                "recovery_s": self.longest_pause(fault, min(end, fault + 120)),
                "pause_before_s": self.longest_pause(max(start, fault - 20), fault)}  # fmt: skip


@pytest.fixture(scope="package")
def cluster(local_services, tmp_path_factory) -> Cluster:
    from pipelines.train import TrainConfig, train
    from sluice.models import ModelRegistry

    c = Cluster()
    c.registry_root = tmp_path_factory.mktemp("cluster") / "registry"
    train(TrainConfig(rows=10_000, epochs=2), ModelRegistry(c.registry_root))
    c.fresh()
    try:
        c.services.up()
    except BaseException:
        c.services.down()  # the nodes that did start: nothing outlives a failed start
        raise
    yield c
    from sluice.store import close_sessions

    close_sessions()
    c.services.down()


@pytest.fixture(autouse=True)
def every_node_up(cluster: Cluster) -> None:
    """Each test starts with every node answering (quick when they all are): a fault test
    that failed before restarting its node must not fail the tests after it."""
    cluster.restart()
