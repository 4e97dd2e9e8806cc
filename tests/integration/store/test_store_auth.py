"""PasswordAuthenticator on a Cassandra of its own: wrong credentials are named, right ones work."""

from __future__ import annotations

import pyarrow as pa
import pytest
from store_helpers import extra_services, stop_kafka

from sluice.config import CassandraConfig
from sluice.errors import ConfigError
from sluice.store import CassandraWriter, CredentialsRefused, WriteOptions, connect

pytestmark = pytest.mark.integration

CQL_PORT = 19242


@pytest.fixture(scope="module")
def auth_cassandra(platform_config, tmp_path_factory):
    services = extra_services(platform_config, tmp_path_factory.mktemp("store-auth") / "state",
                              CQL_PORT, 17242, 19292)  # fmt: skip
    try:
        services.up(auth=True)
        stop_kafka(services)
        yield services
    finally:
        services.down()


def cfg(**kw) -> CassandraConfig:
    return CassandraConfig(port=CQL_PORT, keyspace="sluice_test_store_auth",
                           write_consistency="ONE", connect_timeout_s=5, **kw)  # fmt: skip


def test_wrong_password_is_refused_clearly(auth_cassandra) -> None:
    with pytest.raises(CredentialsRefused) as info:
        connect(cfg(username="cassandra", password="wrong"))
    msg = str(info.value)
    assert f"Cassandra at 127.0.0.1:{CQL_PORT} refused the credentials (user 'cassandra')" in msg
    assert "cassandra.username / cassandra.password" in msg
    assert isinstance(info.value, ConfigError)  # fix the config; retrying will not help


def test_missing_credentials_are_refused_clearly(auth_cassandra) -> None:
    with pytest.raises(CredentialsRefused, match=r"refused the credentials \(no credentials"):
        connect(cfg())


def test_right_credentials_work(auth_cassandra) -> None:
    c = cfg(username="cassandra", password="cassandra")
    cluster, session = connect(c)
    try:
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {c.keyspace} WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute(f"CREATE TABLE IF NOT EXISTS {c.keyspace}.kv (k text PRIMARY KEY, v int)")
        session.cluster.refresh_table_metadata(c.keyspace, "kv")
        writer = CassandraWriter(session, c.keyspace, "kv", ["k", "v"], WriteOptions.from_config(c))
        assert writer.write(pa.table({"k": ["a", "b"], "v": pa.array([1, 2], pa.int32())})) == 2
        rows = dict(session.execute(f"SELECT k, v FROM {c.keyspace}.kv"))
        assert rows == {"a": 1, "b": 2}
    finally:
        cluster.shutdown()
