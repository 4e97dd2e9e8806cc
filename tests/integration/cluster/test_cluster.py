"""A 3-node Cassandra ring and a 3-broker Kafka from `sluice local up --cluster`, with
replication 3 from the config, and a node of each SIGKILLed under reads and writes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest
from typer.testing import CliRunner

from sluice.cli import app as cli
from sluice.config import REPO_ROOT
from sluice.contract import load_contract
from sluice.store import apply_schema, session_for
from sluice.stream import ensure_topic, read_topic

pytestmark = pytest.mark.integration


def test_every_node_of_the_cluster_is_up_and_sees_the_others(cluster):
    status = CliRunner().invoke(cli, ["local", "status", "--cluster"])
    assert status.exit_code == 0, status.output
    lines = status.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == [
        "cassandra-1", "cassandra-2", "cassandra-3", "kafka-1", "kafka-2", "kafka-3",
        "ray-1", "ray-2"]  # fmt: skip
    assert all("2 peer(s)" in line for line in lines[:3]), lines
    assert all("3 broker(s)" in line for line in lines[3:6]), lines
    assert [f"127.0.0.{i}" in lines[i - 1] for i in (1, 2, 3)] == [True] * 3


def test_ray_has_a_head_and_a_worker_node_each_taking_its_own_work(cluster):
    """A driver (its own process: this one runs the tests' local Ray) sees both nodes alive,
    a task asking for the worker's resource runs on 127.0.0.2 and one asking for the head's
    on the other node."""
    script = (
        "import json, ray\n"
        f"ray.init(address={cluster.cfg.ray.address!r}, log_to_driver=False)\n"
        "ip = lambda: ray.util.get_node_ip_address()\n"
        "on = {n: ray.get(ray.remote(ip).options(resources={n: 1}).remote())\n"
        "      for n in ('node1', 'node2')}\n"
        "alive = sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])\n"
        "print(json.dumps({'alive': alive, 'on': on}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=180, cwd=REPO_ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # The head reports the host's own address (Ray's choice for a head), the worker its own.
    assert len(seen["alive"]) == 2 and "127.0.0.2" in seen["alive"], seen
    assert seen["on"]["node2"] == "127.0.0.2" and seen["on"]["node1"] in seen["alive"]
    assert seen["on"]["node1"] != "127.0.0.2", seen


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


def topic_config(admin, topic: str) -> dict:
    """The topic's config. The broker asked may not know a topic created a moment ago
    (UNKNOWN_TOPIC_OR_PART, seen in CI): asked again until it does, for up to 30 s."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import ConfigResource

    deadline = time.monotonic() + 30
    while True:
        (future,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
        try:
            return future.result(timeout=10)
        except KafkaException as exc:
            unknown = exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            if not unknown or time.monotonic() >= deadline:
                raise
        time.sleep(0.2)


def test_a_topic_has_three_replicas_and_takes_writes_with_a_broker_killed(cluster):
    """Topics come with the config's replication (3) and min.insync.replicas (2): with one
    broker SIGKILLed, acks=all writes go on (after its partitions' leaders move) and every
    message is read back once."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    kafka = cluster.cfg.kafka
    topic = f"test-cluster-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka, topic, partitions=3)
    admin = AdminClient(kafka.client_settings())
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    assert all(len(p.replicas) == 3 for p in meta.partitions.values())
    assert topic_config(admin, topic)["min.insync.replicas"].value == "2"

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
