from pathlib import Path

import pytest

from sluice import config
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


def test_env_overrides_merge_into_an_optional_section(tmp_path):
    # The password from the environment, the rest of kafka.sasl from the file.
    path = write(tmp_path, "kafka:\n  sasl: {mechanism: SCRAM-SHA-512, username: svc}\n")
    cfg = load_platform_config(path, environ={"SLUICE_KAFKA__SASL__PASSWORD": "s3cret"})
    assert (cfg.kafka.sasl.mechanism, cfg.kafka.sasl.username, cfg.kafka.sasl.password) == (
        "SCRAM-SHA-512", "svc", "s3cret")
    # A section that stays invalid names its field, never the values (a password).
    with pytest.raises(ConfigError, match=r"kafka\.sasl\.username: got an object with keys "
                                          r"\['password'\]; expected Field required") as err:
        load_platform_config(write(tmp_path, "{}\n"),
                             environ={"SLUICE_KAFKA__SASL__PASSWORD": "s3cret"})
    assert "s3cret" not in str(err.value)


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


# -- config paths: a given path must exist; only the default may be absent -------------------
def test_given_path_that_does_not_exist_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"{missing}: no such file"):
        load_platform_config(missing, environ={})


def test_sluice_config_that_does_not_exist_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"{missing}: no such file"):
        load_platform_config(environ={"SLUICE_CONFIG": str(missing)})


def test_sluice_config_is_read(tmp_path):
    path = write(tmp_path, "cassandra:\n  keyspace: from_env_file\n")
    assert load_platform_config(environ={"SLUICE_CONFIG": str(path)}).cassandra.keyspace == (
        "from_env_file"
    )


def test_only_the_default_path_may_be_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.yaml")
    assert load_platform_config(environ={}) == PlatformConfig()


# -- names that reach CQL ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("cassandra:\n  keyspace: Sluice\n", "cassandra.keyspace"),
        ("cassandra:\n  keyspace: select\n", "cassandra.keyspace"),
        ('cassandra:\n  local_datacenter: "dc1\'; DROP"\n', "cassandra.local_datacenter"),
        (
            "cassandra:\n  replication:\n    strategy: NetworkTopologyStrategy\n"
            '    datacenters: {"dc 1": 3}\n',
            "cassandra.replication.datacenters.dc 1",
        ),
    ],
    ids=["upper-case-keyspace", "reserved-keyspace", "quote-in-dc", "space-in-dc-key"],
)
def test_names_that_reach_cql_are_checked_at_load(tmp_path, text, field):
    with pytest.raises(ConfigError) as err:
        load_platform_config(write(tmp_path, text), environ={})
    assert field in str(err.value)


def test_usual_datacenter_names_load(tmp_path):
    text = (
        "cassandra:\n  local_datacenter: us-east-1\n  replication:\n"
        "    strategy: NetworkTopologyStrategy\n    datacenters: {us-east-1: 3, DC2: 3}\n"
    )
    cfg = load_platform_config(write(tmp_path, text), environ={}).cassandra
    assert cfg.replication.datacenters == {"us-east-1": 3, "DC2": 3}


# -- read-your-writes: R + W > RF for the reads that feed features ----------------------------
def nts(local: str, **factors: int) -> str:
    dcs = ", ".join(f"{k}: {v}" for k, v in factors.items())
    return (
        f"cassandra:\n  local_datacenter: {local}\n  replication:\n"
        f"    strategy: NetworkTopologyStrategy\n    datacenters: {{{dcs}}}\n"
    )


def test_default_levels_are_quorum_reads_and_writes():
    for cfg in (PlatformConfig(), load_platform_config(REPO / "configs" / "platform.yaml", {})):
        assert cfg.cassandra.read_consistency is ConsistencyLevel.LOCAL_QUORUM
        assert cfg.cassandra.write_consistency is ConsistencyLevel.LOCAL_QUORUM


@pytest.mark.parametrize("rf", [1, 2, 3, 4, 5])
def test_default_levels_hold_at_any_replication_factor(tmp_path, rf):
    simple = {"SLUICE_CASSANDRA__REPLICATION__REPLICATION_FACTOR": str(rf)}
    load_platform_config(REPO / "configs" / "platform.yaml", environ=simple)
    load_platform_config(write(tmp_path, nts("dc1", dc1=rf, dc2=3)), environ={})


@pytest.mark.parametrize(
    ("text", "read", "write_level", "rf"),
    [
        (
            "cassandra:\n  replication: {replication_factor: 3}\n"
            "  read_consistency: LOCAL_ONE\n  write_consistency: LOCAL_QUORUM\n",
            "LOCAL_ONE", "LOCAL_QUORUM", 3,
        ),
        (
            nts("dc1", dc1=3) + "  read_consistency: ONE\n  write_consistency: LOCAL_QUORUM\n",
            "ONE", "LOCAL_QUORUM", 3,
        ),
        # A QUORUM write over 3 + 3 replicas may leave 3 of its 4 in the other DC.
        (
            nts("dc1", dc1=3, dc2=3) + "  write_consistency: QUORUM\n",
            "LOCAL_QUORUM", "QUORUM", 3,
        ),
    ],
    ids=["local-one-reads-rf3", "one-reads-nts", "quorum-writes-two-dcs"],
)  # fmt: skip
def test_levels_that_break_read_your_writes_are_refused(tmp_path, text, read, write_level, rf):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_platform_config(path, environ={})
    msg = str(err.value)
    assert str(path) in msg
    assert f"read_consistency {read}" in msg and f"write_consistency {write_level}" in msg
    assert f"RF {rf}" in msg and "R + W > RF" in msg


def test_quorum_over_every_dc_reads_its_writes(tmp_path):
    text = nts("dc1", dc1=3, dc2=3) + "  read_consistency: QUORUM\n  write_consistency: QUORUM\n"
    load_platform_config(write(tmp_path, text), environ={})


def test_local_datacenter_must_hold_replicas(tmp_path):
    with pytest.raises(ConfigError, match=r"local_datacenter 'dc3' is not one of .*dc1, dc2"):
        load_platform_config(write(tmp_path, nts("dc3", dc1=3, dc2=3)), environ={})


def test_level_that_needs_more_replicas_than_kept_is_refused(tmp_path):
    path = write(tmp_path, "cassandra:\n  write_consistency: THREE\n")
    with pytest.raises(ConfigError, match="write_consistency THREE needs 3 replicas.* keeps 1"):
        load_platform_config(path, environ={})


def test_feature_events_are_written_at_the_checked_level():
    from sluice.contract import load_contract
    from sluice.store import CassandraFeatureStore

    contract = load_contract("fraud")
    contract = contract.model_copy(
        update={"output": contract.output.model_copy(update={"consistency": "ONE"})}
    )
    cfg = PlatformConfig().cassandra
    store = CassandraFeatureStore.for_contract(cfg, contract)
    assert store.consistency is cfg.write_consistency


def test_dev_null_is_an_empty_config():
    assert load_platform_config("/dev/null", environ={}) == PlatformConfig()


def test_a_directory_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError, match=f"{tmp_path}: is a directory"):
        load_platform_config(tmp_path, environ={})
