from pathlib import Path

import pytest

from sluice.config import ConsistencyLevel, PlatformConfig, load_platform_config
from sluice.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "platform.yaml"
    path.write_text(text)
    return path


def test_repo_config_loads():
    cfg = load_platform_config(REPO / "configs" / "platform.yaml", environ={})
    assert cfg.cassandra.contact_points == ("127.0.0.1",)
    assert cfg.cassandra.port == 9042
    assert cfg.cassandra.write_consistency is ConsistencyLevel.LOCAL_QUORUM
    assert cfg.kafka.bootstrap_servers == ("127.0.0.1:9092",)
    assert cfg.local.cassandra_version.startswith("5.0.")


def test_config_is_frozen():
    cfg = PlatformConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.cassandra.port = 1  # type: ignore[misc]


def test_unknown_key_names_its_path(tmp_path):
    path = write(tmp_path, "cassandra:\n  contact_point: [10.0.0.1]\n")
    with pytest.raises(ConfigError) as err:
        load_platform_config(path, environ={})
    msg = str(err.value)
    assert str(path) in msg
    assert "cassandra.contact_point" in msg
    assert "unknown key" in msg
    assert "10.0.0.1" in msg


def test_wrong_type_names_path_value_and_form(tmp_path):
    path = write(tmp_path, "cassandra:\n  port: not-a-port\n")
    with pytest.raises(ConfigError) as err:
        load_platform_config(path, environ={})
    msg = str(err.value)
    assert "cassandra.port" in msg and "'not-a-port'" in msg and "integer" in msg


def test_out_of_range_value(tmp_path):
    path = write(tmp_path, "cassandra:\n  port: 70000\n")
    expected = r"cassandra\.port: got 70000; expected .*less than 65536"
    with pytest.raises(ConfigError, match=expected):
        load_platform_config(path, environ={})


def test_bad_enum_value(tmp_path):
    path = write(tmp_path, "cassandra:\n  write_consistency: MOST\n")
    with pytest.raises(ConfigError, match=r"cassandra\.write_consistency: got 'MOST'"):
        load_platform_config(path, environ={})


def test_cross_field_rule(tmp_path):
    path = write(tmp_path, "cassandra:\n  username: alice\n")
    with pytest.raises(ConfigError, match="username and password must be given together"):
        load_platform_config(path, environ={})


def test_not_a_mapping(tmp_path):
    path = write(tmp_path, "- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_platform_config(path, environ={})


def test_env_overrides_file(tmp_path):
    path = write(tmp_path, "cassandra:\n  port: 9042\n  keyspace: fromfile\n")
    env = {
        "SLUICE_CASSANDRA__PORT": "9043",
        "SLUICE_CASSANDRA__CONTACT_POINTS": "10.0.0.5, 10.0.0.6",
        "SLUICE_CASSANDRA__REPLICATION__REPLICATION_FACTOR": "3",
        "SLUICE_KAFKA__BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        "UNRELATED": "x",
    }
    cfg = load_platform_config(path, environ=env)
    assert cfg.cassandra.port == 9043
    assert cfg.cassandra.keyspace == "fromfile"
    assert cfg.cassandra.contact_points == ("10.0.0.5", "10.0.0.6")
    assert cfg.cassandra.replication.replication_factor == 3
    assert cfg.kafka.bootstrap_servers == ("k1:9092", "k2:9092")


def test_bad_env_override_names_the_field(tmp_path):
    path = write(tmp_path, "{}\n")
    with pytest.raises(ConfigError, match=r"cassandra\.port: got 'abc'"):
        load_platform_config(path, environ={"SLUICE_CASSANDRA__PORT": "abc"})


def test_kafka_client_settings_security_protocols():
    plain = PlatformConfig().kafka.client_settings()
    assert plain == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT"}
    sasl = PlatformConfig.model_validate(
        {"kafka": {"sasl": {"username": "u", "password": "p"}, "tls": {"enabled": True}}}
    ).kafka.client_settings()
    assert sasl["security.protocol"] == "SASL_SSL"
    assert sasl["sasl.username"] == "u" and sasl["sasl.mechanisms"] == "PLAIN"
