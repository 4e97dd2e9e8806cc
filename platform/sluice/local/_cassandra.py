"""Apache Cassandra 5.0 as a local server, one node or a ring of three on 127.0.0.1-3:
config, command line, readiness."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sluice.config import PlatformConfig

NAME = "cassandra"
POM = "cassandra-pom.xml"
VERSION_PROPERTY = "cassandra.version"

# From upstream conf/jvm17-server.options (cassandra-5.0): without these the JVM dies at start.
JPMS_FLAGS = [
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
]  # fmt: skip

LOGBACK = """<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
  <logger name="org.apache.cassandra.utils.SigarLibrary" level="ERROR"/>
</configuration>
"""


def ports(cfg: PlatformConfig) -> dict[str, int]:
    return {"native (CQL)": cfg.cassandra.port, "storage": cfg.local.cassandra_storage_port}


def mode(auth: bool) -> str:
    return "auth=password" if auth else "auth=none"


def host(node: int) -> str:
    """Node ``node`` (1-based) listens on its own loopback address, on the same ports."""
    return f"127.0.0.{node}"


def initial_token(node: int, nodes: int) -> int:
    """One token per node, evenly spaced over Murmur3's range (0 for a single node)."""
    return 0 if nodes == 1 else (2**64 // nodes) * (node - 1) - 2**63


def write_config(cfg: PlatformConfig, home: Path, auth: bool, node: int = 1) -> Path:
    """cassandra.yaml with 5.0 key names (unknown keys are rejected by the server). Node 1
    is the seed; the others join it one at a time (``LocalServices.up``)."""
    conf = home / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    authenticator = "PasswordAuthenticator" if auth else "AllowAllAuthenticator"
    authorizer = "CassandraAuthorizer" if auth else "AllowAllAuthorizer"
    storage = cfg.local.cassandra_storage_port
    # num_tokens 1 + initial_token and no allocate_tokens_* key: that key adds a ~30 s wait.
    # auto_bootstrap false: a node joins an empty ring with its own token and nothing to
    # stream, so it skips bootstrap's waits (a restarted node has bootstrapped already).
    # Request timeouts are generous: a 2-core machine running tests beside the server can
    # stall a scan for seconds, which would otherwise fail reads that are merely slow.
    # Memtables: Cassandra's own default heap share (a quarter of the heap) plus cell data
    # off the heap, twice that; smaller ones flushed every ~2 s under the stream bench
    # (README "Local servers" has the measurement).
    (conf / "cassandra.yaml").write_text(
        f"""cluster_name: sluice-local
num_tokens: 1
initial_token: {initial_token(node, cfg.local.nodes)}
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:{storage}"
listen_address: {host(node)}
rpc_address: {host(node)}
storage_port: {storage}
native_transport_port: {cfg.cassandra.port}
start_native_transport: true
auto_bootstrap: false
authenticator: {authenticator}
authorizer: {authorizer}
role_manager: CassandraRoleManager
commitlog_sync: periodic
commitlog_sync_period: 10000ms
auto_snapshot: false
memtable_allocation_type: offheap_objects
memtable_heap_space: {cfg.local.cassandra_heap_mb // 4}MiB
memtable_offheap_space: {cfg.local.cassandra_heap_mb // 2}MiB
key_cache_size: 16MiB
concurrent_reads: 8
concurrent_writes: 16
concurrent_counter_writes: 4
write_request_timeout: 10000ms
read_request_timeout: 20000ms
range_request_timeout: 30000ms
"""
    )
    (conf / "logback.xml").write_text(LOGBACK)
    return conf


def command(cfg: PlatformConfig, java: Path, lib: Path, home: Path, node: int = 1) -> list[str]:
    conf = home / "conf"
    jamm = sorted(lib.glob("jamm-*.jar"))
    heap = f"{cfg.local.cassandra_heap_mb}M"
    return [
        str(java), f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled",
        "-XX:+ExitOnOutOfMemoryError",
        "-Xss512k", "-Djava.net.preferIPv4Stack=true", "-Djdk.attach.allowAttachSelf=true",
        "-Dio.netty.tryReflectionSetAccessible=true", *JPMS_FLAGS,
        *([f"-javaagent:{jamm[0]}"] if jamm else []),
        f"-Dcassandra.config=file://{conf / 'cassandra.yaml'}",
        "-Dcassandra-foreground=yes",
        f"-Dcassandra.storagedir={home / 'data'}",
        f"-Dcassandra.logdir={home / 'logs'}",
        f"-Dlogback.configurationFile=file://{conf / 'logback.xml'}",
        f"-Djna.tmpdir={home / 'tmp'}",
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        # How long a joining node tries to reach the seed (the gossip shadow round): a loaded
        # 2-core machine took over 1 s ("Unable to contact any seeds"). The seed, node 1,
        # has none to reach, and would only wait longer.
        f"-Dcassandra.ring_delay_ms={1000 if node == 1 else 30_000}",
        "-Dcassandra.load_ring_state=false",
        "-Dcassandra.superuser_setup_delay_ms=0",
        "-cp", f"{conf}:{lib}/*",
        "org.apache.cassandra.service.CassandraDaemon",
    ]  # fmt: skip


@dataclass(frozen=True)
class NodeView:
    """What one node answers over CQL: its release version and, in a ring, how many peers
    it holds as token owners (``system.peers_v2.tokens``, set once gossip has marked the
    peer normal) and whether all of them report its own schema version."""

    version: str
    ring_peers: int | None = None  # None: a single node, no ring
    schema_agreed: bool = True

    def settled(self, nodes: int) -> bool:
        return self.ring_peers == nodes - 1 and self.schema_agreed

    def __str__(self) -> str:
        if self.ring_peers is None:
            return self.version
        schema = "one schema" if self.schema_agreed else "schema differs"
        return f"{self.version}, {self.ring_peers} peer(s) in its ring, {schema}"


def ready(cfg: PlatformConfig, auth: bool, node: int = 1) -> NodeView | None:
    """Node ``node``'s view when its CQL answers, else None."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
    from cassandra.policies import WhiteListRoundRobinPolicy

    provider = PlainTextAuthProvider("cassandra", "cassandra") if auth else None
    only = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host(node)]))
    cluster = Cluster(
        [host(node)], port=cfg.cassandra.port, auth_provider=provider,
        connect_timeout=2, control_connection_timeout=2, protocol_version=5,
        execution_profiles={EXEC_PROFILE_DEFAULT: only},
    )  # fmt: skip
    try:
        session = cluster.connect()
        local = session.execute(
            "SELECT release_version, schema_version FROM system.local", timeout=5).one()
        if cfg.local.nodes == 1:
            return NodeView(local.release_version)
        peers = session.execute(
            "SELECT tokens, schema_version FROM system.peers_v2", timeout=5).all()
        return NodeView(local.release_version, sum(1 for p in peers if p.tokens),
                        all(p.schema_version == local.schema_version for p in peers))
    except (NoHostAvailable, OSError, Exception):  # noqa: BLE001 - any failure means "not yet"
        return None
    finally:
        cluster.shutdown()
