"""The stream job on the 3-node cluster while a Kafka broker, a Cassandra node and (twice)
a consumer actor are SIGKILLed: once the lag is 0, the committed offsets equal the log end
and predictions, quarantine and feature events hold each event exactly once."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from stream.stream_helpers import (  # noqa: I001 - tests/integration/stream, by path
    Driver,
    consumer_actor_pids,
    feature_event_keys,
    lost_acknowledged,
    make_messages,
    new_topic,
    prediction_keys,
    produce,
    quarantine,
    wait_for,
    write_job,
)

from sluice.stream import GroupLag

from .conftest import Cluster, Meter

pytestmark = pytest.mark.integration

EVENTS = 7_000  # proof, not load: docs/scaling.md has the stream's rate on this cluster
PARTITIONS = 4
RATE = 50.0  # events/s while the faults are under way; once the last has healed, the rest
# is sent at once (a backlog to catch up on, not more waiting)
FAULTS_AT = (0.1, 0.25, 0.45, 0.65)  # shares of the stream produced when each fault lands
AHEAD = 0.05  # how far past the next fault's share the producer may run before that fault


def test_stream_keeps_exact_accounting_through_broker_node_and_consumer_kills(cluster: Cluster,
                                                                              tmp_path):
    from confluent_kafka.admin import AdminClient, ConfigResource

    keyspace = "sluice_test_stream_faults"
    cfg = cluster.config(keyspace)
    topic = new_topic(cfg, PARTITIONS)  # replication and min.insync.replicas from the config

    produced = make_messages(EVENTS, seed=61, invalid=0.01, wrong_types=0.0, malformed=0.01,
                             topic=topic)  # fmt: skip
    total = len(produced.payloads)
    produced.positions[:] = [(-1, -1)] * total

    sent: list = [0, None]  # messages delivered, the producer's error
    # The producer holds a little past the next fault's share until that fault has landed:
    # a slow restart (a Cassandra node on a loaded machine: a minute or more) must not let
    # the whole stream be sent before the next fault (it was, twice, pacing alone).
    gate = threading.Condition()
    limit = [FAULTS_AT[0] + AHEAD]  # the share the producer may reach; 1.0 once all healed

    def allow(share: float) -> None:
        with gate:
            limit[0] = share
            gate.notify_all()

    def produce_all() -> None:  # a live stream at a bounded rate, lasting through the faults
        try:
            for start in range(0, total, 250):
                with gate:
                    gate.wait_for(lambda: start < limit[0] * total)  # noqa: B023 - this start
                rate = None if limit[0] >= 1.0 else RATE
                produce(cfg, produced, start, min(start + 250, total), rate=rate)
                sent[0] = min(start + 250, total)
        except Exception as exc:  # noqa: BLE001 - reported by the test's waits
            sent[1] = repr(exc)
            raise

    # A 12 s session: under this load a 6 s one (the stream tests') lost partitions unprovoked;
    # a killed consumer's partitions wait that long for the group to move them.
    job = write_job(tmp_path, "cluster_faults", topic, consumers=2, session_timeout_ms=12_000)
    log = tmp_path / "stream.log"
    group = "sluice-cluster_faults"
    offsets = GroupLag(cfg.kafka, group, topic)
    meter = Meter(lambda: sum(max(o, 0) for o in offsets.committed().values()))
    producer = threading.Thread(target=produce_all, daemon=True)
    driver = Driver(job, cluster.env(keyspace), log, "--max-seconds", "600")
    producer.start()
    faults = []

    def at(fraction: float) -> None:
        """Once that much of the stream is produced (and some of it committed): each fault
        lands while events are still coming, up to a little past the next fault's share."""
        wait_for(lambda: not driver.alive() or (sent[0] >= fraction * total and meter.now() > 0),
                 300, f"{fraction:.0%} of the messages produced")  # fmt: skip
        assert driver.alive(), driver.tail()
        assert producer.is_alive(), f"every event was sent before this fault (error {sent[1]})"
        later = [f for f in FAULTS_AT if f > fraction]
        allow(later[0] + AHEAD if later else 1.0 - 1e-9)  # the last: paced until it heals

    def resumed(since: int) -> float:
        wait_for(lambda: meter.now() > since, 120, "commits after the fault", detail=lambda: (
            f"committed {meter.now()} (sampled {time.monotonic() - meter.samples[-1][0]:.1f} s "
            f"ago; last sampling error {meter.last_error}), produced {sent[0]} of {total} "
            f"(log ends {sum(h for _, h in offsets.end_offsets(range(PARTITIONS)).values())}), "
            f"producer alive {producer.is_alive()} (error {sent[1]}), driver alive "
            f"{driver.alive()}"))
        return time.monotonic()

    try:
        broker_at, node_at, *consumers_at = FAULTS_AT
        at(broker_at)
        t = cluster.kill("kafka-2")  # leaders and maybe the group/transaction coordinator
        resumed(meter.now())
        faults.append(("kafka-2 SIGKILL", t, cluster.restart()))
        at(node_at)
        t = cluster.kill("cassandra-2")
        resumed(meter.now())
        faults.append(("cassandra-2 SIGKILL", t, cluster.restart()))
        for fraction in consumers_at:
            at(fraction)
            pids = consumer_actor_pids()
            assert pids, "no consumer actor to kill"
            os.kill(pids[0], signal.SIGKILL)
            t = time.monotonic()
            faults.append(("consumer actor SIGKILL", t, resumed(meter.now())))
        allow(1.0)  # the rest at once
        producer.join(timeout=300)
        assert not producer.is_alive(), "producing took over 5 minutes"
        assert sent[1] is None, f"producing failed: {sent[1]}"
        lag = GroupLag(cfg.kafka, group, topic)
        wait_for(lambda: driver.alive() and sum(lag.lag().values()) == 0, 300, "lag 0")
        committed = lag.committed()
        ends = lag.end_offsets(sorted(committed))
        lag.close()
        end = time.monotonic()
        driver.signal(signal.SIGTERM)
        assert driver.wait(timeout=120) == 0, driver.tail()
    finally:
        meter.stop()
        offsets.close()
        driver.kill()
    summary = driver.summary()
    # Each fault's window ends where the next one starts: its recovery is its own.
    untils = [t for _, t, _ in faults[1:]] + [end]
    figures = [meter.report(name, t, healed, until)
               for (name, t, healed), until in zip(faults, untils, strict=True)]  # fmt: skip
    print(json.dumps({"stream_faults": figures, "restarts": summary["restarts"],
                      "events_per_s_overall": round(total / (end - meter.samples[0][0]), 1)}))

    # The topic came with the config's replication 3 and min.insync.replicas 2: acks=all
    # production went on with a broker dead.
    admin = AdminClient(cfg.kafka.client_settings())
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    assert all(len(p.replicas) == 3 for p in meta.partitions.values())
    (conf,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
    assert conf.result(timeout=30)["min.insync.replicas"].value == "2"

    # The brokers kept every message they acknowledged (acks=all, idempotent producer): a
    # loss there is Kafka's, not the stream job's, and this says so by name.
    lost = lost_acknowledged(cfg, produced)
    assert not lost, f"Kafka lost {len(lost)} acknowledged message(s): {lost[:10]}"
    # Committed offsets == log end on every partition; the supervisor replaced the actors.
    assert committed == {p: high for p, (_, high) in ends.items()}
    assert sum(committed.values()) == total
    assert summary["restarts"] >= 2
    # Predictions: exactly the valid events; quarantine: the invalid and malformed, once.
    assert prediction_keys(cfg) == produced.valid_keys
    rows = quarantine(cfg, "stream:cluster_faults")
    keys = [k for k, _ in rows]
    assert len(keys) == len(set(keys)), "a quarantined message was stored twice"
    assert set(keys) == produced.invalid_keys | produced.malformed_keys
    # Each valid event recorded once in the feature store despite the replays.
    assert sorted(feature_event_keys(cfg)) == sorted(produced.valid_keys)
