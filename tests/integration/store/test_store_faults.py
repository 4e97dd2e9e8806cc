"""Faults: an unreachable cluster, and a Cassandra stopped in the middle of a write.

The stop/restart test runs its own Cassandra on other ports (never the shared one).
"""

from __future__ import annotations

import socket
import threading
import time

import pyarrow as pa
import pytest
from store_helpers import extra_services, stop_kafka

from sluice.config import CassandraConfig
from sluice.errors import StoreUnavailable, WriteFailed
from sluice.store import CassandraWriter, WriteOptions, connect

pytestmark = pytest.mark.integration

CQL_PORT = 19142


@pytest.mark.parametrize(
    ("hosts", "port"),
    [(("127.0.0.2",), 9042), (("127.0.0.1",), 1), (("127.0.0.2", "127.0.0.3"), 9042)],
)
def test_unreachable_hosts_are_named(hosts: tuple[str, ...], port: int) -> None:
    cfg = CassandraConfig(contact_points=hosts, port=port, connect_timeout_s=2.0)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        connect(cfg)
    assert time.monotonic() - t0 < cfg.connect_timeout_s + 1.0
    for host in hosts:
        assert f"{host}:{port}" in str(info.value)
    assert "cannot reach Cassandra" in str(info.value)


def test_a_silent_server_fails_within_the_connect_timeout() -> None:
    # Accepts TCP connections (kernel backlog) but never answers the CQL handshake.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        cfg = CassandraConfig(port=port, connect_timeout_s=1.5)
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}.*[Tt]imed out"):
            connect(cfg)
        elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < cfg.connect_timeout_s + 1.0, elapsed


def test_unresolvable_host_is_named() -> None:
    cfg = CassandraConfig(contact_points=("no-such-host.invalid",), connect_timeout_s=1.0)
    with pytest.raises(StoreUnavailable, match=r"no-such-host\.invalid:9042"):
        connect(cfg)


@pytest.fixture(scope="module")
def own_cassandra(platform_config, tmp_path_factory):
    services = extra_services(platform_config, tmp_path_factory.mktemp("store-faults") / "state",
                              CQL_PORT, 17142, 19192)  # fmt: skip
    try:
        services.up()
        stop_kafka(services)
        yield services
    finally:
        services.down()


def test_stopped_mid_write_reports_failed_keys_and_loses_no_written_row(own_cassandra) -> None:
    cfg = CassandraConfig(
        port=CQL_PORT, keyspace="sluice_test_store_faults", write_consistency="ONE",
        connect_timeout_s=3, request_timeout_s=3, write_retries=2, retry_backoff_s=0.2,
    )  # fmt: skip
    cluster, session = connect(cfg)
    try:
        session.execute(
            f"CREATE KEYSPACE {cfg.keyspace} WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute(f"CREATE TABLE {cfg.keyspace}.kv (k text PRIMARY KEY, v bigint)")
        session.cluster.refresh_table_metadata(cfg.keyspace, "kv")
        n = 400_000
        keys = [f"k{i:07d}" for i in range(n)]
        data = pa.table({"k": keys, "v": pa.array(range(n), pa.int64())})
        writer = CassandraWriter(session, cfg.keyspace, "kv", ["k", "v"],
                                 WriteOptions.from_config(cfg))  # fmt: skip
        outcome: dict[str, object] = {}

        def write() -> None:
            try:
                outcome["written"] = writer.write(data)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                outcome["error"] = exc

        thread = threading.Thread(target=write)
        thread.start()
        time.sleep(2.0)
        assert thread.is_alive(), "the write finished before Cassandra was stopped"
        assert own_cassandra.down() == ["cassandra"]
        thread.join(120)
        assert not thread.is_alive()
    finally:
        cluster.shutdown()

    err = outcome.get("error")
    assert isinstance(err, WriteFailed), outcome
    assert err.failed_keys and err.written > 0
    assert err.written + len(err.failed_keys) == n
    assert len(set(err.failed_keys)) == len(err.failed_keys)
    assert "sluice_test_store_faults.kv" in str(err)

    own_cassandra.up()
    stop_kafka(own_cassandra)
    cluster, session = connect(cfg)
    try:
        stored = {row.k for row in session.execute(f"SELECT k FROM {cfg.keyspace}.kv",
                                                   timeout=60)}  # fmt: skip
    finally:
        cluster.shutdown()
    reported_written = set(keys) - set(err.failed_keys)
    assert len(reported_written) == err.written
    assert reported_written <= stored, f"{len(reported_written - stored)} written rows are lost"
