"""Typed platform configuration: `configs/platform.yaml`, parsed once.

Every field has a description and, where it has a unit, the unit in its name.
Unknown keys are refused. ``SLUICE_<SECTION>__<FIELD>`` environment variables
override fields (``SLUICE_CASSANDRA__PORT=9043``); list fields take a
comma-separated value. Errors name the YAML path, the bad value and the
expected form.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sluice.errors import ConfigError

__all__ = [
    "CassandraConfig",
    "ConsistencyLevel",
    "KafkaConfig",
    "LocalServicesConfig",
    "PlatformConfig",
    "RayConfig",
    "RegistryConfig",
    "ServeConfig",
    "TLSConfig",
    "default_config_path",
    "format_validation_error",
    "load_platform_config",
    "read_yaml_mapping",
]

ENV_PREFIX = "SLUICE_"
REPO_ROOT = Path(__file__).resolve().parents[2]


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
    datacenters: dict[str, int] = Field(
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
    local_datacenter: str = Field("datacenter1", description="DC for token-aware DC-aware LB.")
    keyspace: str = Field("sluice", pattern=r"^[a-z][a-z0-9_]{0,47}$")
    replication: ReplicationConfig = ReplicationConfig()
    protocol_version: int = Field(5, ge=4, le=5)
    read_consistency: ConsistencyLevel = ConsistencyLevel.LOCAL_ONE
    write_consistency: ConsistencyLevel = ConsistencyLevel.LOCAL_QUORUM
    username: str | None = None
    password: str | None = None
    tls: TLSConfig = TLSConfig()
    connect_timeout_s: float = Field(5.0, gt=0)
    request_timeout_s: float = Field(10.0, gt=0)
    write_concurrency: int = Field(64, ge=1, le=4096, description="In-flight writes per session.")
    write_retries: int = Field(5, ge=0, le=50)
    retry_backoff_s: float = Field(0.2, ge=0)

    @model_validator(mode="after")
    def _user_and_password_together(self) -> CassandraConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password must be given together")
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


def default_config_path() -> Path:
    return Path(os.environ.get("SLUICE_CONFIG", REPO_ROOT / "configs" / "platform.yaml"))


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: the YAML path, the bad value and the expected form."""
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(
                f"  {path}: unknown key (value {err['input']!r}); remove it or fix its name"
            )
        else:
            lines.append(f"  {path}: got {err.get('input')!r}; expected {err['msg']}")
    return "\n".join(lines)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is an empty mapping).

    The one reader of Sluice's YAML files (platform config, contracts, jobs): a missing
    file, bad YAML or another top level is a ConfigError naming the file.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
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


def _merge(base: dict[str, Any], override: Mapping[str, Any], model: type[BaseModel]) -> None:
    for key, value in override.items():
        field = model.model_fields.get(key)
        sub = getattr(field, "annotation", None) if field else None
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            node = base.get(key)
            base[key] = node if isinstance(node, dict) else {}
            _merge(base[key], value, sub)
        elif field is not None and "tuple" in str(sub) and isinstance(value, str):
            base[key] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            base[key] = value


def load_platform_config(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> PlatformConfig:
    """Parse the platform config once; environment variables override the file."""
    path = Path(path) if path is not None else default_config_path()
    environ = os.environ if environ is None else environ
    raw = read_yaml_mapping(path) if path.exists() else {}
    _merge(raw, _env_overrides(environ), PlatformConfig)
    try:
        return PlatformConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from exc
