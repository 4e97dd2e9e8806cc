"""Alerts on Kafka: each batch's alerts and offsets commit in one transaction, or neither."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import TopicPartition
from stream_fakes import TOPIC, FakeConsumer, FakeProducer, messages

from sluice.config import KafkaConfig
from sluice.contract import load_contract
from sluice.errors import StreamError, WriteFailed
from sluice.stream import (
    EXIT_KAFKA_HUNG,
    BatchResult,
    ConsumerLoop,
    Transactions,
    alert_message,
    alert_messages,
    alert_topic,
    candidate_topic,
)
from tests.unit.alert_tables import alerts as alert_table

FRAUD = load_contract("fraud")
WHEN = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)


def alerts(keys: list[str]) -> pa.Table:
    return alert_table(keys, WHEN, "stream:unit", score=0.93,
                       reasons=[{"feature": "amount", "value": 900.0, "contribution": 0.4}])


class AlertingProcess:
    """Writes (logs) the batch and returns one alert per message, as MicroBatchScorer does;
    ``fail_on`` fails that call, ``outage_on`` fails it as a Cassandra outage (retried)."""

    def __init__(self, consumer: FakeConsumer, stop: threading.Event, batches: int,
                 fail_on: int | None = None, outage_on: int | None = None) -> None:  # fmt: skip
        self.consumer, self.stop = consumer, stop
        self.batches, self.fail_on, self.outage_on, self.calls = batches, fail_on, outage_on, 0

    def __call__(self, batch) -> BatchResult:
        self.calls += 1
        if self.calls == self.fail_on:
            raise OSError("scoring failed")
        if self.calls == self.outage_on:
            self.consumer.log.append(("store down", len(batch)))
            raise WriteFailed("cannot write to ks.alerts", 0, ["k"])
        self.consumer.log.append(("writes done", len(batch)))
        if self.calls >= self.batches:
            self.stop.set()
        return BatchResult(messages=len(batch), scored=len(batch), quarantined=0, malformed=0,
                           engine="compiled", written_at=0.0,
                           outbox=alert_messages(alerts([f"tx_{m.partition()}_{m.offset()}"
                                                         for m in batch])))  # fmt: skip


def run(consumer: FakeConsumer, producer: FakeProducer, batches: int, **kw):
    stop = threading.Event()
    txn = Transactions(producer, consumer, "sluice-fraud-alerts", timeout_s=5.0)
    committed: list[dict] = []
    loop = ConsumerLoop(consumer, AlertingProcess(consumer, stop, batches, **kw),
                        job="unit", max_messages=4, max_wait_s=0.01, store_outage_max_s=5.0,
                        backoff_s=(0.001, 0.004), on_commit=committed.append,
                        transactions=txn)  # fmt: skip
    loop.on_assign(consumer, [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
    loop.run(stop)
    return loop, committed


def test_a_batch_is_one_transaction_its_alerts_after_its_writes_then_its_offsets():
    batch2 = messages([b"{}"] * 2, start_ms=0)
    for m in batch2:
        m._offset += 2
    consumer = FakeConsumer(batches=[messages([b"{}"] * 4), batch2])
    producer = FakeProducer(consumer.log)
    loop, committed = run(consumer, producer, batches=2)
    steps = [e for e in consumer.log if e[0] not in ("consume",)]
    assert steps == [
        ("writes done", 4), ("begin",), ("produce", "tx_0_0"), ("produce", "tx_1_0"),
        ("produce", "tx_0_1"), ("produce", "tx_1_1"),
        ("send offsets", {(TOPIC, 0): 2, (TOPIC, 1): 2}), ("commit txn",),
        ("writes done", 2), ("begin",), ("produce", "tx_0_2"), ("produce", "tx_1_2"),
        ("send offsets", {(TOPIC, 0): 3, (TOPIC, 1): 3}), ("commit txn",), ("close",),
    ]  # fmt: skip
    assert consumer.commits() == []  # the transaction moves the group's offsets, alone
    assert committed == [{(TOPIC, 0): 2, (TOPIC, 1): 2}, {(TOPIC, 0): 3, (TOPIC, 1): 3}]
    assert loop.stats.commits == 2 and {t for t, _, _ in producer.produced} == \
        {"sluice-fraud-alerts"}  # fmt: skip


def test_a_failed_batch_aborts_its_transaction_and_commits_nothing():
    consumer = FakeConsumer(batches=[messages([b"{}"] * 2), messages([b"{}"] * 2)])
    producer = FakeProducer(consumer.log)
    with pytest.raises(OSError, match="scoring failed"):
        run(consumer, producer, batches=3, fail_on=2)
    txn_steps = [e[0] for e in consumer.log if e[0] in ("begin", "commit txn", "abort")]
    assert txn_steps == ["begin", "commit txn"]  # batch 2 never opened one
    assert [k for _, k, _ in producer.produced] == [b"tx_0_0", b"tx_1_0"]
    assert consumer.closed and consumer.commits() == []


def test_a_transaction_that_does_not_commit_is_aborted_and_stops_the_consumer():
    consumer = FakeConsumer(batches=[messages([b"{}"] * 2)])
    producer = FakeProducer(consumer.log, fail_commit=True)
    with pytest.raises(StreamError, match="committing the transaction of offsets .* replayed"):
        run(consumer, producer, batches=1)
    assert [e[0] for e in consumer.log if e[0] in ("begin", "abort")] == ["begin", "abort"]
    assert consumer.commits() == []


def test_a_commit_stuck_past_its_timeout_is_reported_at_the_deadline():
    """librdkafka's send_offsets_to_transaction can block for good (#5456): the caller
    gets on_hang at timeout_s + hang_grace_s, not never."""
    stuck = threading.Event()
    consumer = FakeConsumer(batches=[])
    hung: list[str] = []

    def on_hang(what: str) -> None:
        hung.append(what)

    txn = Transactions(FakeProducer(consumer.log, hang=stuck), consumer, "t", timeout_s=0.2,
                       hang_grace_s=0.3, on_hang=on_hang)  # fmt: skip
    txn.begin()
    began = time.monotonic()
    with pytest.raises(StreamError, match="send_offsets_to_transaction blocked past its timeout"):
        txn.commit({(TOPIC, 0): 5})
    assert 0.5 <= time.monotonic() - began < 3.0
    assert hung == ["send_offsets_to_transaction still blocked after 0.5 s (its timeout 0.2 s)"]
    assert ("commit txn",) not in consumer.log
    stuck.set()


def test_a_stuck_client_ends_its_process_with_exit_code_70():
    """The default on_hang: the process exits at once (a supervisor replaces it), naming
    the call; nothing else runs after it."""
    script = """
import threading
from stream_fakes import FakeConsumer, FakeProducer
from sluice.stream import Transactions
consumer = FakeConsumer(batches=[])
txn = Transactions(FakeProducer(consumer.log, hang=threading.Event()), consumer, "t",
                   timeout_s=0.1, hang_grace_s=0.2)
txn.begin()
try:
    txn.commit({("events", 0): 1})
finally:
    print("after the hang")
"""
    here = str(Path(__file__).parent)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=os.environ | {"PYTHONPATH": here})  # fmt: skip
    assert done.returncode == EXIT_KAFKA_HUNG == 70, done.stderr
    assert "send_offsets_to_transaction still blocked after 0.3 s" in done.stderr
    assert "the Kafka client is stuck" in done.stderr
    assert "after the hang" not in done.stdout


def test_alerts_cannot_be_produced_outside_a_transaction():
    txn = Transactions(FakeProducer([]), FakeConsumer(batches=[]), "t", timeout_s=1.0)
    with pytest.raises(StreamError, match="outside a transaction"):
        txn.publish(alert_messages(alerts(["tx_1"])))


def test_the_alert_message_carries_the_decision_and_its_reasons():
    (row,) = alerts(["tx_9"]).to_pylist()
    message = json.loads(alert_message(row))
    assert message == {
        "key": "tx_9", "contract": "fraud", "score": 0.93, "decision": "block",
        "model_version": "fraud/2", "policy_id": "dp-1",
        "reasons": [{"feature": "amount", "value": 900.0, "contribution": 0.4}],
        "event_time": "2026-05-06T07:08:09+00:00", "path": "stream:unit",
    }  # fmt: skip
    kafka = KafkaConfig()
    assert alert_topic(kafka, "fraud") == "sluice-fraud-alerts"
    assert candidate_topic(kafka, "fraud") == "sluice-fraud-alerts-candidates"
    mine = KafkaConfig(alerts_topic="team-{contract}.alerts")
    assert (alert_topic(mine, "fraud"), candidate_topic(mine, "fraud")) == \
        ("team-fraud.alerts", "team-fraud.alerts-candidates")  # fmt: skip


def test_a_batch_retried_through_an_outage_produces_its_alerts_once():
    """The transaction opens once the batch's writes are acknowledged: the failed attempt
    produced nothing, the retry produces each alert once."""
    consumer = FakeConsumer(batches=[messages([b"{}"] * 2)])
    producer = FakeProducer(consumer.log)
    run(consumer, producer, batches=2, outage_on=1)
    steps = [e[0] for e in consumer.log if e[0] != "consume"]
    assert steps == ["store down", "writes done", "begin", "produce", "produce",
                     "send offsets", "commit txn", "close"]  # fmt: skip
    assert [k for _, k, _ in producer.produced] == [b"tx_0_0", b"tx_1_0"]


def test_the_scorer_hands_its_alerts_to_the_loop(stream_registry):
    from sluice.decisions import DecisionPolicy
    from sluice.features import InMemoryFeatureStore
    from sluice.scoring import Scorer
    from sluice.stream import MicroBatchScorer

    alert_all = DecisionPolicy.model_validate([{"label": "review", "min_score": 0.0}])
    scorer = Scorer(FRAUD.model_copy(update={"decision": alert_all}), stream_registry,
                    InMemoryFeatureStore(), "compiled")  # fmt: skip

    class Outputs:
        def write(self, predictions, quarantine, alerts) -> None:
            self.alerts = alerts

    outputs = Outputs()
    process = MicroBatchScorer(scorer, outputs, source="stream:unit", gx_min_rows=10_000,
                               max_message_bytes=65_536, max_unknown_fields=64)  # fmt: skip
    from sluice.datagen import generate_dataset, to_json_messages

    result = process(messages(to_json_messages(generate_dataset(20, seed=4).table).payloads))
    assert outputs.alerts.num_rows == result.scored == 20
    assert result.outbox == alert_messages(outputs.alerts)  # the rows Cassandra got
