"""`sluice local up | down | status`: real Cassandra and Kafka on 127.0.0.1, or a 3-node
cluster of each on 127.0.0.1-3 (``local.nodes: 3``: configs/platform-cluster.yaml).

Layout under the state directory (configs/platform.yaml `local.state_dir`):
    lib/cassandra-<v>/   lib/kafka-<v>/     jars from Maven Central (fetched once)
    cassandra/{conf,data,logs}  kafka/{conf,data,logs}     one node each, or
    cassandra-<n>/...  kafka-<n>/...   (n = 1..3)          a cluster's nodes
    kafka-cluster-id     the KRaft cluster id every Kafka node is formatted with
    run/<name>.json      the pid (and its start time) of each server `up` started
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sluice.config import PlatformConfig
from sluice.errors import LocalServiceError
from sluice.local import _cassandra, _jvm, _kafka, _ray

DEAD_NODE_PORTS_WAIT_S = 30.0
"""How long ``up`` lets a dead node's ports go free before refusing to start it again: a
SIGKILLed raylet ends its ``ray start --block``, whose dashboard agent keeps the node's
metrics port a few seconds more (seen: port 6423 taken right after)."""

SERVICES = (_cassandra.NAME, _kafka.NAME)
"""What every config starts; a cluster (``local.nodes: 3``) also starts Ray's two nodes."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool  # the process `up` recorded is alive
    healthy: bool  # and it answers its health check
    pid: int | None
    detail: str


class LocalServices:
    """Fetch, start, health-check and stop the local servers described by one config."""

    def __init__(self, cfg: PlatformConfig, echo: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.echo = echo
        self.state = cfg.resolve(cfg.local.state_dir)
        self.run_dir = self.state / "run"

    # -- names and paths ---------------------------------------------------------------------
    def services(self) -> tuple[str, ...]:
        return SERVICES + ((_ray.NAME,) if self.cfg.local.nodes > 1 else ())

    def nodes(self, service: str) -> list[str]:
        """The service's node names: ``cassandra``, or ``cassandra-1`` .. ``-3`` in a cluster
        (and ``ray-1``, the head, and ``ray-2``)."""
        n = _ray.NODES if service == _ray.NAME else self.cfg.local.nodes
        return [service] if n == 1 else [f"{service}-{i}" for i in range(1, n + 1)]

    def _all(self, reverse: bool = False) -> list[str]:
        order = self.services()[::-1] if reverse else self.services()
        return [name for service in order for name in self.nodes(service)]

    @staticmethod
    def _split(name: str) -> tuple[str, int]:
        """``cassandra-2`` -> ("cassandra", 2); ``kafka`` -> ("kafka", 1)."""
        service, _, node = name.partition("-")
        return service, int(node or 1)

    def _lib(self, service: str) -> Path:
        version = self.cfg.local.cassandra_version if service == _cassandra.NAME else (
            self.cfg.local.kafka_version
        )
        return self.state / "lib" / f"{service}-{version}"

    def _ports(self, name: str) -> dict[str, int]:
        service, node = self._split(name)
        if service == _ray.NAME:
            return _ray.ports(self.cfg, node)
        return (_cassandra if service == _cassandra.NAME else _kafka).ports(self.cfg)

    def _host(self, name: str) -> str:
        return _cassandra.host(self._split(name)[1])

    def _record(self, name: str) -> _jvm.ProcessRecord | None:
        return _jvm.ProcessRecord.load(self.run_dir, name)

    # -- commands ---------------------------------------------------------------------------
    def up(self, auth: bool = False) -> dict[str, float]:
        """Start whatever is not running; wait until every node answers. Returns seconds per
        node started. Kafka's nodes start together (a quorum needs two of three); Cassandra's
        one at a time, each once the one before answers (a node may not join a ring while
        another is joining)."""
        want_mode = {_cassandra.NAME: _cassandra.mode(auth), _kafka.NAME: "", _ray.NAME: ""}
        to_start, running = [], []
        for name in self._all():
            rec, service = self._record(name), self._split(name)[0]
            if rec is not None and rec.alive():
                if rec.mode != want_mode[service]:
                    raise LocalServiceError(
                        f"{name} is already running with {rec.mode or 'default settings'}; "
                        f"run `sluice local down` first to restart it with {want_mode[service]}"
                    )
                self.echo(f"{name}: already running (pid {rec.pid})")
                running.append(name)
                continue
            if rec is not None:  # it died: what it left behind goes first (its ports)
                _jvm.stop(rec)
                rec.forget(self.run_dir)
            self._check_ports_free(name, wait_s=0.0 if rec is None else DEAD_NODE_PORTS_WAIT_S)
            to_start.append(name)

        java = _jvm.find_java17() if any(not n.startswith(_ray.NAME) for n in to_start) else None
        t0 = time.monotonic()
        for service, pom, prop, version in (
            (_cassandra.NAME, _cassandra.POM, _cassandra.VERSION_PROPERTY,
             self.cfg.local.cassandra_version),
            (_kafka.NAME, _kafka.POM, _kafka.VERSION_PROPERTY, self.cfg.local.kafka_version),
        ):  # fmt: skip
            if any(self._split(name)[0] == service for name in to_start):
                fetched = _jvm.fetch_jars(pom, prop, version, self._lib(service))
                if fetched:
                    self.echo(f"{service}: fetched {version} from Maven Central "
                              f"({time.monotonic() - t0:.1f} s)")

        started: dict[str, float] = {}
        begun: dict[str, float] = {}
        kafka_id = self._kafka_cluster_id()
        later = []
        for name in to_start:  # Kafka's nodes, and the first of Cassandra and Ray, at once
            service, node = self._split(name)
            if service in (_cassandra.NAME, _ray.NAME) and node > 1:
                later.append(name)
                continue
            begun[name] = time.monotonic()
            self._start(name, java, auth, kafka_id)  # type: ignore[arg-type]
        for name in running:  # started by an earlier `up` that may not have waited it out
            self._wait_ready(name, auth)
        for name in [n for n in to_start if n not in later] + later:
            if name in later:  # the next Cassandra or Ray node, once the ones before answer
                begun[name] = time.monotonic()
                self._start(name, java, auth, kafka_id)  # type: ignore[arg-type]
            self._wait_ready(name, auth)
            started[name] = time.monotonic() - begun[name]
            self.echo(f"{name}: ready in {started[name]:.1f} s")
        if self.cfg.local.nodes > 1 and any(n.startswith(_cassandra.NAME) for n in started):
            self._wait_ring(auth)
        return started

    def down(self) -> list[str]:
        """Stop exactly the processes `up` recorded, every node of every service together
        (each service's nodes must stop together; the services do not depend on each other
        going first, and Ray's nodes always use their whole grace); returns the names
        stopped."""
        recs, graces = [], []
        for service in self.services()[::-1]:
            for name in self.nodes(service)[::-1]:
                rec = self._record(name)
                if rec is None:
                    self.echo(f"{name}: not started by sluice")
                else:
                    recs.append(rec)
                    graces.append(_ray.STOP_GRACE_S if service == _ray.NAME else 60.0)
        stopped = []
        for rec, was_running in zip(recs, _jvm.stop(*recs, timeout_s=graces), strict=True):
            if was_running:
                stopped.append(rec.name)
                self.echo(f"{rec.name}: stopped (pid {rec.pid})")
            else:
                self.echo(f"{rec.name}: was not running")
            rec.forget(self.run_dir)
            if rec.name == f"{_ray.NAME}-1":
                _ray.forget_address(self.cfg)
        return stopped

    def status(self) -> list[ServiceStatus]:
        out = []
        for name in self._all():
            rec = self._record(name)
            if rec is None or not rec.alive():
                out.append(ServiceStatus(name, False, False, None, "down"))
                continue
            detail = self._health(name, auth=rec.mode == "auth=password")
            out.append(ServiceStatus(name, True, detail is not None, rec.pid,
                                     detail or "running, not answering"))  # fmt: skip
        return out

    # -- internals --------------------------------------------------------------------------
    def _check_ports_free(self, name: str, wait_s: float = 0.0) -> None:
        """Refuse to start ``name`` on a port another program holds; ``wait_s``: first give
        the holders that long to let go (a dead node's helpers outside its group)."""
        where = self._host(name)
        deadline = time.monotonic() + wait_s
        for what, port in self._ports(name).items():
            while _jvm.port_open(port, where) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _jvm.port_open(port, where):
                raise LocalServiceError(
                    f"port {port} ({name} {what}) is already taken by another program on "
                    f"{where}; stop it (`ss -ltnp 'sport = :{port}'` shows which) or change "
                    "the port in configs/platform.yaml / SLUICE_* variables"
                )

    def _kafka_cluster_id(self) -> str:
        """One id for every Kafka node of this state directory, kept across restarts."""
        path = self.state / "kafka-cluster-id"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_kafka.new_cluster_id() + "\n")
        return path.read_text().strip()

    def _start(self, name: str, java: Path, auth: bool, kafka_id: str) -> None:
        service, node = self._split(name)
        home, lib = self.state / name, self._lib(service)
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        if service == _ray.NAME:
            cmd, mode = _ray.command(self.cfg, node), ""
        elif service == _cassandra.NAME:
            _cassandra.write_config(self.cfg, home, auth, node)
            cmd, mode = _cassandra.command(self.cfg, java, lib, home, node), _cassandra.mode(auth)
        else:
            _kafka.write_config(self.cfg, home, node)
            _kafka.format_storage(self.cfg, java, lib, home, kafka_id)
            cmd, mode = _kafka.command(self.cfg, java, lib, home), ""
        rec = _jvm.spawn(name, cmd, home / "logs" / "server.log", cwd=home, mode=mode)
        rec.save(self.run_dir)

    def _health(self, name: str, auth: bool) -> str | None:
        service, node = self._split(name)
        if service == _ray.NAME:  # its GCS and raylet answer (a driver would cost seconds)
            needed = {w: p for w, p in self._ports(name).items() if w in ("GCS", "node manager")}
            if not all(_jvm.port_open(p, _ray.host(node)) for p in needed.values()):
                return None
            role = f"head, GCS {_ray.gcs_address(self.cfg)}" if node == 1 else "worker"
            return f"Ray {role} on {_ray.host(node)}, resource node{node}"
        if service == _cassandra.NAME:
            version = _cassandra.ready(self.cfg, auth, node)
            where = f"{self._host(name)}:{self.cfg.cassandra.port}"
            return f"Cassandra {version} on {where}" if version else None
        brokers = _kafka.ready(self.cfg, node)
        where = f"{self._host(name)}:{_kafka.broker_port(self.cfg)}"
        return f"Kafka, {brokers}, on {where}" if brokers else None

    def _wait_ring(self, auth: bool) -> None:
        """Wait until every Cassandra node holds every other as a token owner and all agree
        on the schema. A node answers CQL once it has joined, before the others' gossip has
        marked it normal: a keyspace created right after `up` once counted one node in the
        data center (its replication 3 above it), and the next statement's coordinator
        had never heard of that keyspace."""
        nodes = self.cfg.local.nodes
        deadline = time.monotonic() + self.cfg.local.start_timeout_s
        while True:
            views = {n: _cassandra.ready(self.cfg, auth, n) for n in range(1, nodes + 1)}
            if all(v is not None and v.settled(nodes) for v in views.values()):
                return
            if time.monotonic() > deadline:
                seen = "; ".join(f"{_cassandra.NAME}-{n}: {v or 'not answering'}"
                                 for n, v in views.items())  # fmt: skip
                raise LocalServiceError(
                    f"Cassandra's {nodes} nodes did not settle into one ring with one schema "
                    f"within {self.cfg.local.start_timeout_s:.0f} s ({seen})"
                )
            time.sleep(0.5)

    def _wait_ready(self, name: str, auth: bool) -> None:
        rec = self._record(name)
        assert rec is not None
        main_port = next(iter(self._ports(name).values()))
        deadline = time.monotonic() + self.cfg.local.start_timeout_s
        while time.monotonic() < deadline:
            if not rec.alive():
                _jvm.stop(rec)  # what it forked may still hold its ports
                rec.forget(self.run_dir)
                raise LocalServiceError(
                    f"{name} exited during start; last lines of {rec.log}:\n"
                    f"{_jvm.log_tail(Path(rec.log))}"
                )
            if _jvm.port_open(main_port, self._host(name)) and self._health(name, auth):
                return
            time.sleep(0.5)
        raise LocalServiceError(
            f"{name} did not answer within {self.cfg.local.start_timeout_s:.0f} s "
            f"(it is still running, pid {rec.pid}); last lines of {rec.log}:\n"
            f"{_jvm.log_tail(Path(rec.log))}"
        )
