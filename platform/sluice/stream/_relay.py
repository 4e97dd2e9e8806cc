"""``AlertRelay``: the alert topic's one writer. Each transaction's first alert candidate is
published, every later one dropped, in Kafka transactions (see ``_alerts`` for the flow).

The relay is a ``ConsumerLoop`` over the candidate topic, read ``read_committed`` (the
stream proposes in transactions; an aborted proposal is never relayed), in consumer group
``<alert topic>-relay``. Its ``process`` is ``Deduplicator``: it keeps the keys
already on the alert topic and returns, as the batch's ``outbox``, the candidates whose
key is new (the first of several in one batch). The loop produces them and commits the
batch's candidate offsets in one transaction, so the published set and the consumed
offsets move together: after a crash, the relay's replacement rebuilds the set from the
alert topic (``read_topic``, read to its end, ``read_committed``) and resumes from the
committed offsets: what the dead relay published it will not publish again, and what it
had not committed it will.

The set is rebuilt at the first batch after each assignment (the group's committed
offsets are fetched by then, so a transaction of the partitions' previous owner has
finished: KIP-447) and dropped when partitions move. A transaction's candidates always
land in one candidate partition (keyed by its key), so one relay at a time decides on it.
Each relay process has a ``member`` name of its own (``--member``), which is both its
static group membership (``group.instance.id``) and its transactional id: its replacement,
under the same name, takes its partitions back without a rebalance, fences it, and aborts
what it left open, at once (a relay gone for good is noticed after the 10 s session).
Known limit: the dedup window is the alert topic's retention
(7 days by default); a candidate for a transaction whose alert has expired from the topic
is published again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sluice.config import KafkaConfig
from sluice.errors import StreamError
from sluice.stream._alerts import (
    Transactions,
    alert_topic,
    candidate_topic,
    ensure_alert_topics,
    producer_settings,
)
from sluice.stream._kafka import GroupLag
from sluice.stream._loop import ConsumerLoop, LoopStats
from sluice.stream._messages import Message
from sluice.stream._scoring import BatchResult

__all__ = ["AlertRelay", "Deduplicator", "RelayStats", "pending_messages", "read_topic"]

log = logging.getLogger(__name__)

_TXN_TIMEOUT_MS = 15_000


def _reader(kafka: KafkaConfig, what: str) -> Any:
    from confluent_kafka import Consumer

    return Consumer(kafka.client_settings() | {
        "group.id": f"sluice-{what}-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": True})  # fmt: skip


def _partitions(consumer: Any, kafka: KafkaConfig, topic: str) -> list[int]:
    meta = consumer.list_topics(topic, timeout=kafka.request_timeout_s).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise StreamError(f"topic {topic!r} does not exist")
    return sorted(meta.partitions)


def _to_end(consumer: Any, starts: dict[int, int], topic: str,
            timeout_s: float) -> Iterator[Message]:  # fmt: skip
    """The committed messages of ``topic`` from ``starts`` (partition -> offset) to the end
    of each partition (its end-of-partition event)."""
    from confluent_kafka import KafkaError, TopicPartition

    consumer.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
    left, deadline = set(starts), time.monotonic() + timeout_s
    while left:
        if time.monotonic() > deadline:
            raise StreamError(f"{topic}: partitions {sorted(left)} not read to their end in "
                              f"{timeout_s:.0f} s")  # fmt: skip
        for msg in consumer.consume(1000, timeout=0.5):
            err = msg.error()
            if err is None:
                yield msg
            elif err.code() == KafkaError._PARTITION_EOF:
                left.discard(msg.partition())
            elif err.fatal():
                raise StreamError(f"{topic}: {err}")


def read_topic(kafka: KafkaConfig, topic: str, timeout_s: float = 60.0) -> Iterator[Message]:
    """Every committed message of ``topic``, as a ``read_committed`` reader sees it."""
    from confluent_kafka import OFFSET_BEGINNING

    consumer = _reader(kafka, "reader")
    try:
        starts = dict.fromkeys(_partitions(consumer, kafka, topic), OFFSET_BEGINNING)
        yield from _to_end(consumer, starts, topic, timeout_s)
    finally:
        consumer.close()


def pending_messages(kafka: KafkaConfig, group: str, topic: str, timeout_s: float = 30.0) -> int:
    """Committed messages of ``topic`` past ``group``'s committed offsets (0: caught up).
    Exact where offsets and log-end lag are not: transaction markers take offsets too."""
    from confluent_kafka import OFFSET_BEGINNING

    lag = GroupLag(kafka, group, topic)
    try:
        committed = lag.committed()  # -1001 where the group committed none
    finally:
        lag.close()
    if not committed:
        raise StreamError(f"topic {topic!r} does not exist")
    starts = {p: o if o >= 0 else OFFSET_BEGINNING for p, o in committed.items()}
    consumer = _reader(kafka, "lag")
    try:
        return sum(1 for _ in _to_end(consumer, starts, topic, timeout_s))
    finally:
        consumer.close()


class Deduplicator:
    """The relay's ``process``: a batch's candidates whose key is new, as its ``outbox``.

    ``published`` loads the keys already on the alert topic; it is called at the first
    batch, and again after ``forget`` (partitions moved). Keys are added as candidates
    are taken: a failed transaction ends the relay (``ConsumerLoop``), and its replacement
    starts from a fresh load.
    """

    def __init__(self, published: Callable[[], set[bytes]]) -> None:
        self.load = published
        self.keys: set[bytes] | None = None
        self.taken = self.duplicates = self.keyless = 0

    def forget(self) -> None:
        self.keys = None

    def __call__(self, batch: Sequence[Message]) -> BatchResult:
        if self.keys is None:
            self.keys = self.load()
            log.info("alert relay: %d alert(s) already published", len(self.keys))
        outbox, duplicates, keyless = [], 0, 0
        for msg in batch:
            key, value = msg.key(), msg.value()
            if not key or value is None:
                keyless += 1  # not a candidate any path writes: logged and skipped
                log.error("alert relay: candidate at %s:%d:%d has no key or value; skipped",
                          msg.topic(), msg.partition(), msg.offset())  # fmt: skip
            elif key in self.keys:
                duplicates += 1
            else:
                self.keys.add(key)
                outbox.append((key, value))
        self.taken += len(outbox)
        self.duplicates += duplicates
        self.keyless += keyless
        return BatchResult(messages=len(batch), scored=len(outbox), quarantined=0,
                           malformed=keyless, engine="compiled", written_at=time.time(),
                           outbox=outbox)  # fmt: skip


@dataclass
class RelayStats:
    candidates: int = 0
    published: int = 0
    duplicates: int = 0  # candidates of a transaction already published: dropped
    keyless: int = 0
    commits: int = 0


class AlertRelay:
    """Relays ``contract``'s alert candidates until ``stop()``; ``run`` returns its stats and
    raises when a transaction fails (its replacement resumes from the last commit)."""

    def __init__(self, kafka: KafkaConfig, contract: str, *, member: str = "0",
                 max_messages: int = 1000, max_wait_s: float = 0.2) -> None:  # fmt: skip
        self.kafka, self.contract, self.member = kafka, contract, member
        self.source, self.sink = candidate_topic(kafka, contract), alert_topic(kafka, contract)
        self.group = f"{self.sink}-relay"
        self.max_messages, self.max_wait_s = max_messages, max_wait_s
        self._stop = threading.Event()
        self._loop: ConsumerLoop | None = None
        self._dedup: Deduplicator | None = None

    def run(self) -> RelayStats:
        from confluent_kafka import Consumer, Producer

        ensure_alert_topics(self.kafka, self.contract)
        member = self.member
        consumer = Consumer(self.kafka.client_settings() | {
            "group.id": self.group, "client.id": f"{self.group}-{member}",
            "group.instance.id": f"{self.group}-{member}", "session.timeout.ms": 10_000,
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest", "isolation.level": "read_committed"})  # fmt: skip
        # A stable transactional.id: a relay's replacement aborts what it left open at once
        # (init_transactions) instead of after the transaction timeout.
        producer = Producer(producer_settings(self.kafka.client_settings(), self.group,
                                              member, _TXN_TIMEOUT_MS))  # fmt: skip
        txn = Transactions(producer, consumer, self.sink, max(30.0, self.kafka.request_timeout_s))
        txn.start()
        self._dedup = dedup = Deduplicator(
            lambda: {m.key() for m in read_topic(self.kafka, self.sink) if m.key()})
        loop = ConsumerLoop(consumer, dedup, job=self.group, max_messages=self.max_messages,
                            max_wait_s=self.max_wait_s, on_partitions_moved=dedup.forget,
                            transactions=txn, store_outage_max_s=1.0)  # fmt: skip
        consumer.subscribe([self.source], on_assign=loop.on_assign, on_revoke=loop.on_revoke,
                           on_lost=loop.on_lost)  # fmt: skip
        self._loop = loop
        log.info("alert relay %s: %s -> %s", member, self.source, self.sink)
        loop.run(self._stop)
        return self.stats()

    def stop(self) -> None:
        """Finish the batch in flight, commit it, leave the group, return from ``run``."""
        self._stop.set()

    def stats(self) -> RelayStats:
        loop: LoopStats | None = self._loop.stats if self._loop else None
        d = self._dedup
        return RelayStats(candidates=loop.messages if loop else 0,
                          published=d.taken if d else 0, duplicates=d.duplicates if d else 0,
                          keyless=d.keyless if d else 0,
                          commits=loop.commits if loop else 0)  # fmt: skip
