"""Apache Kafka (KRaft, broker and controller in one process) as a local server: one node,
or a quorum of three on 127.0.0.1-3 (every node a broker and a controller voter)."""

from __future__ import annotations

import base64
import subprocess
import uuid
from pathlib import Path

from sluice.config import PlatformConfig
from sluice.errors import LocalServiceError

NAME = "kafka"
POM = "kafka-pom.xml"
VERSION_PROPERTY = "kafka.version"

LOG4J = """log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
"""


def broker_port(cfg: PlatformConfig) -> int:
    host_port = cfg.kafka.bootstrap_servers[0]
    return int(host_port.rsplit(":", 1)[1])


def ports(cfg: PlatformConfig) -> dict[str, int]:
    return {"broker": broker_port(cfg), "controller": cfg.local.kafka_controller_port}


def host(node: int) -> str:
    return f"127.0.0.{node}"


def write_config(cfg: PlatformConfig, home: Path, node: int = 1) -> Path:
    conf = home / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    port, ctl, n = broker_port(cfg), cfg.local.kafka_controller_port, cfg.local.nodes
    voters = ",".join(f"{i}@{host(i)}:{ctl}" for i in range(1, n + 1))
    # Internal topics as replicated as the cluster allows: a transaction or a group
    # commit survives one broker of three down (min ISR 2).
    rf, isr = min(n, 3), 2 if n >= 3 else 1
    # Static quorum (controller.quorum.voters), so `format` needs no --standalone.
    # Few partitions for the internal topics: their creation dominates a cold start. The log
    # cleaner's dedupe buffer (128 MiB by default, allocated at start) is cut to 16 MiB: a
    # 256 MiB-heap test broker died of OutOfMemoryError allocating it.
    (conf / "server.properties").write_text(
        f"""process.roles=broker,controller
node.id={node}
controller.quorum.voters={voters}
listeners=PLAINTEXT://{host(node)}:{port},CONTROLLER://{host(node)}:{ctl}
advertised.listeners=PLAINTEXT://{host(node)}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={home / 'data'}
num.partitions=4
default.replication.factor={rf}
min.insync.replicas={isr}
offsets.topic.replication.factor={rf}
offsets.topic.num.partitions=8
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={isr}
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=24
log.cleaner.dedupe.buffer.size=16777216
"""
    )
    (conf / "log4j.properties").write_text(LOG4J)
    return conf


def _jvm(cfg: PlatformConfig, java: Path, lib: Path, home: Path) -> list[str]:
    heap = f"{cfg.local.kafka_heap_mb}M"
    return [
        str(java), f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
        "-Djava.net.preferIPv4Stack=true",
        f"-Dlog4j.configuration=file:{home / 'conf' / 'log4j.properties'}",
        f"-Dkafka.logs.dir={home / 'logs'}",
        "-cp", f"{lib}/*",
    ]  # fmt: skip


def new_cluster_id() -> str:
    """Kafka's Uuid: 16 random bytes, URL-safe base64 without padding, never starting with
    "-" (as Kafka's own ``Uuid.randomUuid``): `kafka-storage format -t -Vjx...` reads such an
    id as an option and fails (1 id in 64; a CI run met one)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def format_storage(cfg: PlatformConfig, java: Path, lib: Path, home: Path,
                   cluster_id: str) -> None:  # fmt: skip
    """KRaft needs each node's log directory formatted once, with the cluster's id."""
    if (home / "data" / "meta.properties").exists():
        return
    cmd = [
        *_jvm(cfg, java, lib, home), "kafka.tools.StorageTool", "format",
        "-t", cluster_id, "-c", str(home / "conf" / "server.properties"), "--ignore-formatted",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise LocalServiceError(f"kafka storage format failed:\n{proc.stdout}{proc.stderr}")


def command(cfg: PlatformConfig, java: Path, lib: Path, home: Path) -> list[str]:
    return [*_jvm(cfg, java, lib, home), "kafka.Kafka", str(home / "conf" / "server.properties")]


def ready(cfg: PlatformConfig, node: int = 1) -> str | None:
    """When node ``node``'s broker answers a metadata request and knows every broker of the
    cluster: how many it knows; else None."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**cfg.kafka.client_settings(), "socket.timeout.ms": 2000,
                         "bootstrap.servers": f"{host(node)}:{broker_port(cfg)}"})  # fmt: skip
    try:
        md = admin.list_topics(timeout=2)
    except Exception:  # noqa: BLE001 - KafkaException or timeout: "not yet"
        return None
    if len(md.brokers) < cfg.local.nodes:
        return None
    return f"{len(md.brokers)} broker(s)"
