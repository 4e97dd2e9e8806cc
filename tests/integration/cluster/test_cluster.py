"""A 3-node Cassandra ring and a 3-broker Kafka from `sluice local up --cluster`, with
replication 3 from the config, and a node of each SIGKILLed under reads and writes."""

from __future__ import annotations

import time
import uuid

import pytest
from typer.testing import CliRunner

from sluice.cli import app as cli
from sluice.contract import load_contract
from sluice.store import apply_schema, session_for
from sluice.stream import ensure_topic, read_topic

pytestmark = pytest.mark.integration


def test_every_node_of_the_cluster_is_up_and_sees_the_others(cluster):
    status = CliRunner().invoke(cli, ["local", "status", "--cluster"])
    assert status.exit_code == 0, status.output
    lines = status.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == [
        "cassandra-1", "cassandra-2", "cassandra-3", "kafka-1", "kafka-2", "kafka-3"]
    assert all("2 peer(s)" in line for line in lines[:3]), lines
    assert all("3 broker(s)" in line for line in lines[3:]), lines
    assert [f"127.0.0.{i}" in lines[i - 1] for i in (1, 2, 3)] == [True] * 3


def test_a_write_at_local_quorum_is_read_after_its_coordinator_is_killed(cluster):
    """R + W > RF on three nodes: the write's coordinator is SIGKILLed right after the
    write is acknowledged, and a LOCAL_QUORUM read on the two left still returns it."""
    cfg = cluster.cfg.cassandra
    session = session_for(cfg)
    apply_schema(session, cfg, [load_contract("fraud")])  # RF 3 from the config
    replication = session.execute("SELECT replication FROM system_schema.keyspaces WHERE "
                                  "keyspace_name = %s", (cfg.keyspace,)).one().replication
    assert replication["datacenter1"] == "3"
    session.execute(f"CREATE TABLE IF NOT EXISTS {cfg.keyspace}.ryw (k text PRIMARY KEY, "
                    "v int)")  # fmt: skip
    key = uuid.uuid4().hex
    write = session.prepare(f"INSERT INTO {cfg.keyspace}.ryw (k, v) VALUES (?, ?)")
    done = session.execute(write, (key, 7))
    coordinator = done.response_future.coordinator_host.address  # 127.0.0.N: node N
    node = f"cassandra-{coordinator.rsplit('.', 1)[1]}"
    cluster.kill(node)
    read = session.prepare(f"SELECT v FROM {cfg.keyspace}.ryw WHERE k = ?")
    row = session.execute(read, (key,), timeout=30).one()
    assert row is not None and row.v == 7, f"the write was lost with {node}"
    cluster.restart()
    status = CliRunner().invoke(cli, ["local", "status", "--cluster"])
    assert status.exit_code == 0, status.output


def test_a_topic_has_three_replicas_and_takes_writes_with_a_broker_killed(cluster):
    """Topics come with the config's replication (3) and min.insync.replicas (2): with one
    broker SIGKILLed, acks=all writes go on (after its partitions' leaders move) and every
    message is read back once."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, ConfigResource

    kafka = cluster.cfg.kafka
    topic = f"test-cluster-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka, topic, partitions=3)
    admin = AdminClient(kafka.client_settings())
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    assert all(len(p.replicas) == 3 for p in meta.partitions.values())
    (conf,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
    assert conf.result(timeout=10)["min.insync.replicas"].value == "2"

    producer = Producer(kafka.client_settings() | {"enable.idempotence": True, "acks": "all"})
    sent = [f"m{i}".encode() for i in range(300)]
    for value in sent[:100]:
        producer.produce(topic, key=value, value=value)
    assert producer.flush(30) == 0
    cluster.kill("kafka-2")
    t0 = time.monotonic()
    failed: list[str] = []
    for value in sent[100:]:
        producer.produce(topic, key=value, value=value,
                         on_delivery=lambda err, msg: err and failed.append(str(err)))
    assert producer.flush(60) == 0 and not failed, failed
    took = time.monotonic() - t0
    got = sorted(m.value() for m in read_topic(kafka, topic))
    assert got == sorted(sent), "a message was lost or written twice"
    print(f"200 acks=all messages with kafka-2 killed: {took:.1f} s")
    cluster.restart()
