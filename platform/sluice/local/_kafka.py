"""Apache Kafka (KRaft, broker and controller in one process) as a local server."""

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


def write_config(cfg: PlatformConfig, home: Path) -> Path:
    conf = home / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    port, ctl = broker_port(cfg), cfg.local.kafka_controller_port
    # Static quorum (controller.quorum.voters), so `format` needs no --standalone.
    # Few partitions for the internal topics: their creation dominates a cold start. The log
    # cleaner's dedupe buffer (128 MiB by default, allocated at start) is cut to 16 MiB: a
    # 256 MiB-heap test broker died of OutOfMemoryError allocating it.
    (conf / "server.properties").write_text(
        f"""process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{ctl}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctl}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={home / 'data'}
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
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


def format_storage(cfg: PlatformConfig, java: Path, lib: Path, home: Path) -> None:
    """KRaft needs its log directory formatted once with a cluster id."""
    if (home / "data" / "meta.properties").exists():
        return
    # Kafka's Uuid: 16 random bytes, URL-safe base64 without padding.
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    cmd = [
        *_jvm(cfg, java, lib, home), "kafka.tools.StorageTool", "format",
        "-t", cluster_id, "-c", str(home / "conf" / "server.properties"), "--ignore-formatted",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise LocalServiceError(f"kafka storage format failed:\n{proc.stdout}{proc.stderr}")


def command(cfg: PlatformConfig, java: Path, lib: Path, home: Path) -> list[str]:
    return [*_jvm(cfg, java, lib, home), "kafka.Kafka", str(home / "conf" / "server.properties")]


def ready(cfg: PlatformConfig) -> str | None:
    """The broker count when a metadata request answers, else None."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**cfg.kafka.client_settings(), "socket.timeout.ms": 2000})
    try:
        md = admin.list_topics(timeout=2)
    except Exception:  # noqa: BLE001 - KafkaException or timeout: "not yet"
        return None
    return f"{len(md.brokers)} broker(s)" if md.brokers else None
