"""The alert relay's dedup: a transaction's first candidate is published, later ones dropped."""

from __future__ import annotations

import threading

from confluent_kafka import TopicPartition
from stream_fakes import TOPIC, FakeConsumer, FakeMessage, FakeProducer

from sluice.stream import ConsumerLoop, Deduplicator, Transactions


def candidates(keys: list[bytes | None], start: int = 0) -> list[FakeMessage]:
    return [FakeMessage(0, start + i, b"{}" if k else None, _key=k) for i, k in enumerate(keys)]


def test_a_key_already_published_or_seen_earlier_in_the_batch_is_dropped():
    loads = []

    def published() -> set[bytes]:
        loads.append(1)
        return {b"old"}

    dedup = Deduplicator(published)
    result = dedup(candidates([b"old", b"k1", b"k2", b"k1", None]))
    assert [k for k, _ in result.outbox] == [b"k1", b"k2"]
    assert (dedup.taken, dedup.duplicates, dedup.keyless, result.malformed) == (2, 2, 1, 1)
    assert [k for k, _ in dedup(candidates([b"k2", b"k3"], 5)).outbox] == [b"k3"]
    assert len(loads) == 1  # the topic is read once per assignment
    dedup.forget()  # partitions moved: the next batch reloads what the topic holds
    assert [k for k, _ in dedup(candidates([b"k1", b"old"], 7)).outbox] == [b"k1"]
    assert len(loads) == 2


def test_the_relay_publishes_and_commits_the_candidates_offsets_in_one_transaction():
    consumer = FakeConsumer(batches=[candidates([b"a", b"b", b"a"]),
                                     candidates([b"b", b"c"], start=3)])  # fmt: skip
    producer = FakeProducer(consumer.log)
    stop = threading.Event()
    dedup = Deduplicator(set)
    original = dedup.__call__

    class Process:
        calls = 0

        def __call__(self, batch):
            self.calls += 1
            if self.calls == 2:
                stop.set()
            return original(batch)

    loop = ConsumerLoop(consumer, Process(), job="relay", max_messages=10, max_wait_s=0.01,
                        store_outage_max_s=1.0, on_partitions_moved=dedup.forget,
                        transactions=Transactions(producer, consumer, "alerts", 5.0))  # fmt: skip
    loop.on_assign(consumer, [TopicPartition(TOPIC, 0)])
    loop.run(stop)
    steps = [e for e in consumer.log if e[0] in ("begin", "produce", "send offsets", "commit txn")]
    assert steps == [
        ("begin",), ("produce", "a"), ("produce", "b"), ("send offsets", {(TOPIC, 0): 3}),
        ("commit txn",),
        ("begin",), ("produce", "c"), ("send offsets", {(TOPIC, 0): 5}), ("commit txn",),
    ]  # fmt: skip
    assert {t for t, _, _ in producer.produced} == {"alerts"}
