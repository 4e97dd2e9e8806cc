"""The real local servers, started by the same code the CLI uses."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from typer.testing import CliRunner

from sluice.cli import app
from sluice.config import PlatformConfig
from sluice.errors import LocalServiceError
from sluice.local import LocalServices
from sluice.local._jvm import ProcessRecord, group_members

pytestmark = pytest.mark.integration


def test_cql_round_trip(local_services, platform_config):
    from cassandra.cluster import Cluster

    c = platform_config.cassandra
    cluster = Cluster(list(c.contact_points), port=c.port, protocol_version=c.protocol_version)
    try:
        s = cluster.connect()
        s.execute(
            "CREATE KEYSPACE IF NOT EXISTS sluice_test WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        s.execute("CREATE TABLE IF NOT EXISTS sluice_test.rt (id uuid PRIMARY KEY, v double)")
        key = uuid.uuid4()
        s.execute("INSERT INTO sluice_test.rt (id, v) VALUES (%s, %s)", (key, 1.5))
        row = s.execute("SELECT v FROM sluice_test.rt WHERE id = %s", (key,)).one()
        assert row.v == 1.5
        assert s.execute("SELECT release_version FROM system.local").one()[0].startswith("5.0.")
    finally:
        cluster.shutdown()


def test_kafka_round_trip(local_services, platform_config):
    from confluent_kafka import Consumer, Producer

    topic = f"test.rt.{uuid.uuid4().hex[:8]}"
    payloads = [f"m{i}".encode() for i in range(10)]
    producer = Producer(platform_config.kafka.client_settings())
    for p in payloads:
        producer.produce(topic, value=p, key=b"k")  # one key: one partition, ordered
    assert producer.flush(15) == 0
    consumer = Consumer({
        **platform_config.kafka.client_settings(), "group.id": f"g-{topic}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })  # fmt: skip
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < len(payloads) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                got.append(msg.value())
    finally:
        consumer.close()
    assert got == payloads


def test_status_reports_both_up(local_services):
    result = CliRunner().invoke(app, ["local", "status"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert " up " in lines["cassandra"] and "Cassandra 5.0." in lines["cassandra"]
    assert " up " in lines["kafka"] and "broker" in lines["kafka"]


def test_up_again_is_idempotent(local_services):
    before = {s.name: s.pid for s in local_services.status()}
    messages: list[str] = []
    LocalServices(local_services.cfg, echo=messages.append).up()
    assert {s.name: s.pid for s in local_services.status()} == before
    assert any("already running" in m for m in messages)


def test_tiny_ray_data_job(ray_session):
    import ray

    ds = ray.data.range(1000).map_batches(lambda b: {"x": b["id"] * 2})
    assert ds.sum("x") == 999_000


@pytest.fixture(scope="module")
def lifecycle_config(tmp_path_factory) -> PlatformConfig:
    """A second pair of servers on other ports, so stopping them leaves the shared pair alone."""
    state = tmp_path_factory.mktemp("local-lifecycle")
    return PlatformConfig.model_validate({
        "cassandra": {"port": 19042},
        "kafka": {"bootstrap_servers": ["127.0.0.1:19092"]},
        "local": {"state_dir": str(state), "cassandra_storage_port": 17000,
                  "kafka_controller_port": 19093, "cassandra_heap_mb": 512,
                  "kafka_heap_mb": 256},
    })  # fmt: skip


def test_port_taken_by_another_program_names_it(lifecycle_config):
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", 19092))
        squatter.listen()
        expected = r"port 19092 \(kafka broker\) is already taken"
        with pytest.raises(LocalServiceError, match=expected):
            LocalServices(lifecycle_config, echo=lambda _: None).up()


def test_up_status_down_leaves_nothing_running(lifecycle_config):
    services = LocalServices(lifecycle_config, echo=lambda _: None)
    try:
        timings = services.up()
        assert set(timings) == {"cassandra", "kafka"}
        status = {s.name: s for s in services.status()}
        assert all(s.healthy for s in status.values()), status
        records = [ProcessRecord.load(services.run_dir, n) for n in ("cassandra", "kafka")]
        assert all(r is not None and r.alive() for r in records)
    finally:
        stopped = services.down()
    assert sorted(stopped) == ["cassandra", "kafka"]
    status = {s.name: s for s in services.status()}
    assert not any(s.running or s.healthy for s in status.values()), status
    for rec in records:
        assert rec is not None and not rec.alive()
        # Nothing left in the server's process group either.
        assert group_members(rec.pid) == []
    env = {
        "SLUICE_LOCAL__STATE_DIR": str(services.state),
        "SLUICE_CASSANDRA__PORT": "19042",
        "SLUICE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:19092",
    }
    result = CliRunner().invoke(app, ["local", "status", "--config", "/dev/null"], env=env)
    assert result.exit_code == 1
    assert all(" down " in line for line in result.output.strip().splitlines()), result.output
