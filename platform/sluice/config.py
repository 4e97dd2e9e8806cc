"""Typed platform configuration: `configs/platform.yaml`, parsed once.

Every field has a description and, where it has a unit, the unit in its name.
Unknown keys are refused. ``SLUICE_<SECTION>__<FIELD>`` environment variables
override fields (``SLUICE_CASSANDRA__PORT=9043``); list fields take a
comma-separated value. Errors name the YAML path, the bad value and the
expected form.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from sluice.errors import ConfigError

__all__ = [
    "CQL_NAME_PATTERN",
    "CassandraConfig",
    "ConsistencyLevel",
    "CqlName",
    "KafkaConfig",
    "LocalServicesConfig",
    "PlatformConfig",
    "RayConfig",
    "RegistryConfig",
    "ServeConfig",
    "TLSConfig",
    "DEFAULT_CONFIG_PATH",
    "format_validation_error",
    "load_platform_config",
    "read_yaml_mapping",
]

ENV_PREFIX = "SLUICE_"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = REPO_ROOT / "configs" / "platform.yaml"
"""The one config path that may be absent (then every field takes its default)."""

CQL_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,47}$"
"""A keyspace, table or column name Sluice writes into CQL unquoted: lower case (CQL folds
an unquoted name to lower case), at most 48 characters (Cassandra's limit for keyspace and
table names)."""


def _not_reserved(name: str) -> str:
    # The driver's list of reserved words: the names it would have to quote.
    from cassandra.metadata import cql_keywords_reserved

    if name in cql_keywords_reserved:
        raise ValueError(f"{name!r} is a reserved CQL keyword; pick another name")
    return name


CqlName = Annotated[str, Field(pattern=CQL_NAME_PATTERN), AfterValidator(_not_reserved)]
"""A name that reaches CQL text unquoted: ``CQL_NAME_PATTERN`` and not a reserved word."""

SPECULATIVE_RETRY = (r"^(NEVER|ALWAYS|[0-9]+(\.[0-9]+)?p|[0-9]+ms"
                     r"|(MIN|MAX)\([0-9]+(\.[0-9]+)?p,[0-9]+ms\))$")
"""Cassandra's ``speculative_retry`` values, spelled as ``system_schema.tables`` shows them."""

DatacenterName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
"""A Cassandra datacenter name (``datacenter1``, ``us-east-1``): CQL quotes it as a string
literal in the replication map, so quotes and spaces are refused."""


class Frozen(BaseModel):
    """Base of every config model: immutable, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ConsistencyLevel(StrEnum):
    ONE = "ONE"
    TWO = "TWO"
    THREE = "THREE"
    QUORUM = "QUORUM"
    ALL = "ALL"
    LOCAL_QUORUM = "LOCAL_QUORUM"
    EACH_QUORUM = "EACH_QUORUM"
    LOCAL_ONE = "LOCAL_ONE"

    def replicas(self, local_rf: int, factors: Sequence[int]) -> tuple[int, int]:
        """(replicas in the local DC, replicas in all DCs) a request at this level is sure
        to reach, for a local factor ``local_rf`` and every DC's ``factors``."""
        total, local_quorum = sum(factors), local_rf // 2 + 1
        level = ConsistencyLevel
        overall = {
            level.ONE: 1, level.TWO: 2, level.THREE: 3, level.LOCAL_ONE: 1,
            level.QUORUM: total // 2 + 1, level.ALL: total, level.LOCAL_QUORUM: local_quorum,
            level.EACH_QUORUM: sum(f // 2 + 1 for f in factors),
        }[self]  # fmt: skip
        # A level that does not name the local DC may be served by remote replicas only.
        local = {
            level.LOCAL_ONE: 1, level.LOCAL_QUORUM: local_quorum,
            level.EACH_QUORUM: local_quorum, level.ALL: local_rf,
        }.get(self, max(0, overall - (total - local_rf)))  # fmt: skip
        return local, overall


class TLSConfig(Frozen):
    enabled: bool = Field(False, description="Use TLS for the connection.")
    ca_file: Path | None = Field(None, description="PEM bundle of trusted CAs.")
    cert_file: Path | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(None, description="Client private key (mutual TLS).")
    verify_hostname: bool = Field(True, description="Check the server name against its cert.")

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class ReplicationConfig(Frozen):
    strategy: str = Field(
        "SimpleStrategy",
        pattern=r"^(SimpleStrategy|NetworkTopologyStrategy)$",
        description="Cassandra replication class.",
    )
    replication_factor: int = Field(1, ge=1, le=9, description="For SimpleStrategy.")
    datacenters: dict[DatacenterName, Annotated[int, Field(ge=1, le=9)]] = Field(
        default_factory=dict, description="For NetworkTopologyStrategy: DC name -> factor."
    )

    @model_validator(mode="after")
    def _dcs_for_nts(self) -> ReplicationConfig:
        if self.strategy == "NetworkTopologyStrategy" and not self.datacenters:
            raise ValueError("NetworkTopologyStrategy needs at least one entry in datacenters")
        return self


class CassandraConfig(Frozen):
    contact_points: tuple[str, ...] = Field(("127.0.0.1",), min_length=1)
    port: int = Field(9042, gt=0, lt=65536)
    local_datacenter: DatacenterName = Field(
        "datacenter1", description="DC for token-aware DC-aware LB."
    )
    keyspace: CqlName = Field("sluice", description="Keyspace of every Sluice table.")
    replication: ReplicationConfig = ReplicationConfig()
    protocol_version: int = Field(5, ge=4, le=5)
    read_consistency: ConsistencyLevel = Field(
        ConsistencyLevel.LOCAL_QUORUM,
        description="Level of every read, the online feature reads included.",
    )
    write_consistency: ConsistencyLevel = Field(
        ConsistencyLevel.LOCAL_QUORUM,
        description="Level of the platform's writes (feature events, checkpoints); with "
        "read_consistency it must satisfy R + W > RF.",
    )
    username: str | None = None
    password: str | None = None
    tls: TLSConfig = TLSConfig()
    connect_timeout_s: float = Field(5.0, gt=0)
    request_timeout_s: float = Field(10.0, gt=0)
    speculative_delay_s: float | None = Field(
        None, gt=0, description="With several nodes: an idempotent request (Sluice's "
        "writes, feature and checkpoint reads) not answered within this is sent to the next "
        "coordinator too, up to twice (the driver's ConstantSpeculativeExecutionPolicy). A "
        "coordinator waiting on a replica that just died answers only at the server's read "
        "timeout; null: off.")
    speculative_retry: str = Field(
        "99p", pattern=SPECULATIVE_RETRY, description="The tables' `speculative_retry` (set by "
        "`sluice schema apply`): a coordinator not answered by a replica within this asks "
        "another. A percentile (or MIN/MAX) waits half the server's read timeout until the "
        "node has sampled reads; a fixed `Nms` holds from the node's first update (one read "
        "timeout after it starts or the table is created).")
    write_concurrency: int = Field(64, ge=1, le=4096, description="In-flight writes per session.")
    write_batch_rows: int = Field(
        10, ge=0, le=100, description="Rows of different partitions owned by the same "
        "replicas sent as one UNLOGGED batch to one of them (the Spark Cassandra Connector's "
        "`replica_set` grouping); 0: one insert per row. About 5x the rows/s of single "
        "inserts per client (bench/cassandra_write.py). Above 10 this still sends batches of "
        "at most 10 partitions and 5 KiB (Cassandra's default warning thresholds, "
        "`unlogged_batch_across_partitions_warn_threshold` and `batch_size_warn_threshold`).")
    write_retries: int = Field(5, ge=0, le=50)
    retry_backoff_s: float = Field(0.2, ge=0)

    @model_validator(mode="after")
    def _user_and_password_together(self) -> CassandraConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password must be given together")
        return self

    @model_validator(mode="after")
    def _reads_see_writes(self) -> CassandraConfig:
        # Feature reads (read_consistency) must see the feature events just written
        # (write_consistency): a read and a write replica set overlap when R + W > RF.
        r, where = self.replication, f"replication_factor {self.replication.replication_factor}"
        local_rf, factors = r.replication_factor, [r.replication_factor]
        if r.strategy == "NetworkTopologyStrategy":
            if self.local_datacenter not in r.datacenters:
                raise ValueError(
                    f"local_datacenter {self.local_datacenter!r} is not one of "
                    f"replication.datacenters ({', '.join(r.datacenters)}); the keyspace must "
                    "keep replicas where Sluice reads"
                )
            local_rf, factors = r.datacenters[self.local_datacenter], list(r.datacenters.values())
            where = f"replication factor {local_rf} in {self.local_datacenter}"
        levels = {"read_consistency": self.read_consistency,
                  "write_consistency": self.write_consistency}  # fmt: skip
        counts = {name: level.replicas(local_rf, factors) for name, level in levels.items()}
        for name, (_, need) in counts.items():
            if need > sum(factors):
                raise ValueError(
                    f"{name} {levels[name]} needs {need} replicas; the keyspace keeps "
                    f"{sum(factors)} (replication); every request at it would fail"
                )
        (r_local, r_all), (w_local, w_all) = counts.values()
        if r_local + w_local <= local_rf and r_all + w_all <= sum(factors):
            raise ValueError(
                f"read_consistency {self.read_consistency} (R = {r_local}) and "
                f"write_consistency {self.write_consistency} (W = {w_local}) break R + W > RF "
                f"({r_local} + {w_local} <= RF {local_rf}, {where}): reads that feed features "
                "could miss the latest writes; use LOCAL_QUORUM for both"
            )
        return self


class SASLConfig(Frozen):
    mechanism: str = Field("PLAIN", pattern=r"^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$")
    username: str
    password: str


class KafkaConfig(Frozen):
    bootstrap_servers: tuple[str, ...] = Field(("127.0.0.1:9092",), min_length=1)
    sasl: SASLConfig | None = None
    tls: TLSConfig = TLSConfig()
    request_timeout_s: float = Field(10.0, gt=0)
    replication_factor: int = Field(
        1, ge=1, le=9, description="Replicas of each topic Sluice creates (3 on a cluster).")
    min_insync_replicas: int = Field(
        1, ge=1, le=9, description="Replicas that must take a write (acks=all) for it to "
        "succeed, set on each topic Sluice creates (2 with 3 replicas: one broker may be "
        "down).",
    )  # fmt: skip
    alerts_topic: str = Field(
        "sluice-{contract}-alerts", pattern=r"^[A-Za-z0-9._{}-]{1,200}$",
        description="The alert topic; {contract} is replaced by the contract's name. Every "
        "path proposes its alerts on <this>-candidates, and the alert relay publishes each "
        "transaction's first one here (sluice.stream.AlertRelay).",
    )  # fmt: skip

    @model_validator(mode="after")
    def _isr_within_replicas(self) -> KafkaConfig:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"min_insync_replicas {self.min_insync_replicas} is above "
                             f"replication_factor {self.replication_factor}: no write could "
                             "succeed")  # fmt: skip
        return self

    def client_settings(self) -> dict[str, Any]:
        """The confluent-kafka (librdkafka) settings common to producers and consumers."""
        protocol = {
            (False, False): "PLAINTEXT",
            (False, True): "SSL",
            (True, False): "SASL_PLAINTEXT",
            (True, True): "SASL_SSL",
        }[(self.sasl is not None, self.tls.enabled)]
        settings: dict[str, Any] = {
            "bootstrap.servers": ",".join(self.bootstrap_servers),
            "security.protocol": protocol,
        }
        if self.sasl is not None:
            settings |= {
                "sasl.mechanisms": self.sasl.mechanism,
                "sasl.username": self.sasl.username,
                "sasl.password": self.sasl.password,
            }
        if self.tls.enabled:
            if self.tls.ca_file:
                settings["ssl.ca.location"] = str(self.tls.ca_file)
            if self.tls.cert_file and self.tls.key_file:
                settings["ssl.certificate.location"] = str(self.tls.cert_file)
                settings["ssl.key.location"] = str(self.tls.key_file)
            if not self.tls.verify_hostname:
                settings["ssl.endpoint.identification.algorithm"] = "none"
        return settings


class RayConfig(Frozen):
    address: str | None = Field(None, description="None starts a local Ray; 'auto' or ray://...")
    namespace: str = "sluice"


class RegistryConfig(Frozen):
    root_uri: str = Field(
        ".state/registry",
        description="Model registry root: a local path (relative to the repo) or a pyarrow.fs URI.",
    )


class ServeConfig(Frozen):
    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)


class LocalServicesConfig(Frozen):
    """Settings of `sluice local up`: the real servers started on this machine."""

    state_dir: Path = Field(Path(".state/local"), description="Jars, data and logs.")
    cassandra_version: str = Field("5.0.9", pattern=r"^5\.0\.\d+$")
    kafka_version: str = Field("3.9.2", pattern=r"^\d+\.\d+\.\d+$")
    cassandra_heap_mb: int = Field(1024, ge=256)
    kafka_heap_mb: int = Field(512, ge=128)
    kafka_controller_port: int = Field(9093, gt=0, lt=65536)
    cassandra_storage_port: int = Field(7000, gt=0, lt=65536)
    start_timeout_s: float = Field(180.0, gt=0)
    nodes: int = Field(
        1, ge=1, le=3,
        description="Nodes of each server: 1 (on 127.0.0.1), or 3 for a local cluster on "
        "127.0.0.1-3 (the loopback range needs no setup on Linux): a Cassandra ring and a "
        "KRaft quorum of three brokers, every node on the same ports of its own address "
        "(configs/platform-cluster.yaml). A cluster also starts a Ray head and worker node.",
    )  # fmt: skip
    ray_port: int = Field(6400, gt=0, lt=65000, description="A cluster's Ray GCS port; its "
                          "nodes' other ports follow it (sluice.local._ray.ports).")
    ray_cpus_per_node: int = Field(1, ge=1, le=64)
    ray_object_store_mb: int = Field(256, ge=78)


class PlatformConfig(Frozen):
    cassandra: CassandraConfig = CassandraConfig()
    kafka: KafkaConfig = KafkaConfig()
    ray: RayConfig = RayConfig()
    registry: RegistryConfig = RegistryConfig()
    serve: ServeConfig = ServeConfig()
    local: LocalServicesConfig = LocalServicesConfig()

    def resolve(self, path: Path | str) -> Path:
        """A config path made absolute against the repository root."""
        p = Path(path)
        return p if p.is_absolute() else REPO_ROOT / p


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: the YAML path, the bad value and the expected form."""
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(
                f"  {path}: unknown key (value {err['input']!r}); remove it or fix its name"
            )
        elif err["type"] == "value_error":  # a rule of ours: the message names the values
            lines.append(f"  {path}: {err['msg'].removeprefix('Value error, ')}")
        elif isinstance(err.get("input"), dict):  # a section: its values may be secrets
            lines.append(f"  {path}: got an object with keys {sorted(err['input'])}; "
                         f"expected {err['msg']}")
        else:
            lines.append(f"  {path}: got {err.get('input')!r}; expected {err['msg']}")
    return "\n".join(lines)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is an empty mapping).

    The one reader of Sluice's YAML files (platform config, contracts, jobs): a missing
    file, bad YAML or another top level is a ConfigError naming the file.
    """
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a YAML file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested dict from SLUICE_SECTION__FIELD[__SUB] variables."""
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _section(annotation: Any) -> type[BaseModel] | None:
    """The model of a nested section: ``Section``, or ``Section | None`` (an optional one,
    such as ``kafka.sasl``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in get_args(annotation)
              if isinstance(a, type) and issubclass(a, BaseModel)]  # fmt: skip
    return models[0] if len(models) == 1 else None


def _merge(base: dict[str, Any], override: Mapping[str, Any], model: type[BaseModel]) -> None:
    for key, value in override.items():
        field = model.model_fields.get(key)
        sub = getattr(field, "annotation", None) if field else None
        if isinstance(value, dict) and (section := _section(sub)) is not None:
            node = base.get(key)
            base[key] = node if isinstance(node, dict) else {}
            _merge(base[key], value, section)
        elif field is not None and "tuple" in str(sub) and isinstance(value, str):
            base[key] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            base[key] = value


def load_platform_config(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> PlatformConfig:
    """Parse the platform config once; environment variables override the file.

    The file is ``path``, else ``$SLUICE_CONFIG``, else ``DEFAULT_CONFIG_PATH``. A path that
    was given must exist (``ConfigError`` naming it); only the default may be absent, and
    then every field takes its default. A relative path is relative to the working directory.
    """
    environ = os.environ if environ is None else environ
    given = path if path is not None else environ.get("SLUICE_CONFIG") or None
    path = Path(given) if given is not None else DEFAULT_CONFIG_PATH
    raw = read_yaml_mapping(path) if given is not None or path.exists() else {}
    _merge(raw, _env_overrides(environ), PlatformConfig)
    try:
        return PlatformConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from exc
