"""Kafka around the stream: client settings, topics, group lag, and the event producer.

- ``consumer_settings(kafka, job)``: a stream consumer's confluent-kafka settings —
  manual commits only (``enable.auto.commit`` and ``enable.auto.offset.store`` off).
- ``ensure_topic`` / ``topic_partitions``: create a topic, read its partition count.
- ``GroupLag``: per partition, log end offset minus the group's committed offset, read
  without joining the group (``--until-caught-up``, tests, the bench).
- ``produce_messages``: payloads keyed by card id (a card's events stay in order in one
  partition), at a steady rate, every delivery confirmed; ``sluice produce`` feeds it
  generated events (``event_messages``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sluice.config import KafkaConfig
from sluice.errors import StreamError
from sluice.jobs import StreamJob

T = TypeVar("T")

__all__ = [
    "GroupLag",
    "ProduceReport",
    "consumer_settings",
    "ensure_topic",
    "event_messages",
    "produce_messages",
    "topic_partitions",
]

log = logging.getLogger(__name__)

_OFFSET_INVALID = -1001


def consumer_settings(kafka: KafkaConfig, job: StreamJob, client_id: str) -> dict[str, Any]:
    return kafka.client_settings() | {
        "group.id": job.group,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": job.auto_offset_reset,
        "session.timeout.ms": job.session_timeout_ms,
        "heartbeat.interval.ms": max(500, job.session_timeout_ms // 4),
        "max.poll.interval.ms": job.max_poll_interval_ms,
        "socket.timeout.ms": int(kafka.request_timeout_s * 1000),
    }


def _admin(kafka: KafkaConfig) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(kafka.client_settings())


def topic_partitions(kafka: KafkaConfig, topic: str) -> int | None:
    """The topic's partition count; None when it does not exist."""
    from confluent_kafka import KafkaException

    try:
        # All topics' metadata: a request naming the topic would make a broker with
        # auto.create.topics.enable create it (with its default partition count).
        meta = _admin(kafka).list_topics(timeout=kafka.request_timeout_s)
    except KafkaException as exc:
        raise StreamError(f"Kafka at {','.join(kafka.bootstrap_servers)}: {exc}") from exc
    found = meta.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        return None
    return len(found.partitions)


def ensure_topic(kafka: KafkaConfig, topic: str, partitions: int = 4) -> int:
    """Create ``topic`` unless it exists, with the config's replication factor and
    ``min.insync.replicas``; returns its partition count."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    have = topic_partitions(kafka, topic)
    if have is not None:
        return have
    admin = _admin(kafka)  # keep the handle alive until the future resolves
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=kafka.replication_factor,
                  config={"min.insync.replicas": str(kafka.min_insync_replicas)})],
        operation_timeout=kafka.request_timeout_s,
    )
    try:
        futures[topic].result(timeout=kafka.request_timeout_s * 2)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise StreamError(f"creating topic {topic}: {exc}") from exc
    deadline = time.monotonic() + kafka.request_timeout_s
    while time.monotonic() < deadline:  # metadata reaches every client shortly after
        have = topic_partitions(kafka, topic)
        if have:
            return have
        time.sleep(0.1)
    raise StreamError(f"topic {topic} was created but its metadata did not appear")


def _transient(exc: Exception) -> bool:
    """A Kafka error worth retrying: flagged retriable, or the group coordinator moving."""
    from confluent_kafka import KafkaError

    error = exc.args[0] if exc.args else None
    if not isinstance(error, KafkaError):
        return False
    coordinator = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                   KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT)  # fmt: skip
    return error.retriable() or error.code() in coordinator


class GroupLag:
    """Per-partition lag of a consumer group on a topic, read without joining the group."""

    def __init__(self, kafka: KafkaConfig, group: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.kafka, self.group, self.topic = kafka, group, topic
        # read_uncommitted: librdkafka asks for *stable* offsets (KIP-447) only under
        # read_committed, and a group whose consumer died inside a transaction has no stable
        # offsets until that transaction times out (15 s): the read would wait that long.
        # The last committed offsets are what lag is measured from.
        self._open = lambda: Consumer(kafka.client_settings() | {
            "group.id": group, "enable.auto.commit": False, "client.id": f"lag-{group}",
            "isolation.level": "read_uncommitted",
        })  # fmt: skip
        self._consumer = self._open()

    def committed(self) -> dict[int, int]:
        """Partition -> committed offset (-1001 where the group committed none)."""
        from confluent_kafka import TopicPartition

        n = topic_partitions(self.kafka, self.topic) or 0
        tps = [TopicPartition(self.topic, p) for p in range(n)]
        if not tps:
            return {}
        timeout = self.kafka.request_timeout_s
        got = self._retrying(lambda: self._consumer.committed(tps, timeout=timeout),
                             f"reading offsets of group {self.group}")  # fmt: skip
        return {tp.partition: tp.offset for tp in got}

    def end_offsets(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Partition -> (low, high) watermarks."""
        from confluent_kafka import TopicPartition

        timeout = self.kafka.request_timeout_s
        return self._retrying(
            lambda: {p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                             timeout=timeout)
                     for p in partitions},
            f"reading the end offsets of {self.topic}")  # fmt: skip

    def _retrying(self, call: Callable[[], T], what: str) -> T:
        """``call()``, with transient errors (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS
        while the group coordinator moves or loads; a partition's leader moving after a
        broker dies) retried within the request timeout; else StreamError naming ``what``.

        A partition the client's metadata does not know (_UNKNOWN_PARTITION: partitions
        added to the topic, or metadata cached while a broker restarted) is asked again on a
        new client: librdkafka does not refresh the metadata of a topic this client never
        subscribed to, so the old one would answer the same until it is closed."""
        from confluent_kafka import KafkaError, KafkaException

        deadline = time.monotonic() + self.kafka.request_timeout_s
        while True:
            try:
                return call()
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                stale = isinstance(error, KafkaError) and (
                    error.code() == KafkaError._UNKNOWN_PARTITION)
                if stale:
                    self._consumer.close()
                    self._consumer = self._open()
                if not (stale or _transient(exc)) or time.monotonic() >= deadline:
                    raise StreamError(f"{what}: {exc}") from exc
                time.sleep(0.2)

    def lag(self) -> dict[int, int]:
        """Partition -> messages not yet committed (end offset - committed offset)."""
        committed = self.committed()
        out = {}
        for p, (low, high) in self.end_offsets(sorted(committed)).items():
            start = committed[p] if committed[p] >= 0 else low
            out[p] = max(high - start, 0)
        return out

    def close(self) -> None:
        self._consumer.close()


# -- producing --------------------------------------------------------------------------------
@dataclass
class ProduceReport:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    positions: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset) per msg

    @property
    def rate(self) -> float:
        return self.delivered / self.elapsed_s if self.elapsed_s else 0.0


def produce_messages(
    kafka: KafkaConfig,
    topic: str,
    payloads: Sequence[bytes],
    keys: Sequence[bytes | None],
    *,
    rate: float | None = None,
    record_positions: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Send ``payloads[i]`` with key ``keys[i]``, at about ``rate`` messages/s (None: as fast
    as possible), then wait for every delivery. Raises ``StreamError`` if any failed."""
    from confluent_kafka import Producer

    producer = Producer(kafka.client_settings() | {
        "enable.idempotence": True, "acks": "all", "linger.ms": 5,
        "queue.buffering.max.messages": 500_000,
    })  # fmt: skip
    report = ProduceReport(positions=[(-1, -1)] * len(payloads) if record_positions else [])

    def delivered(err: Any, msg: Any, i: int) -> None:
        if err is not None:
            report.failed += 1
            if len(report.errors) < 10:
                report.errors.append(str(err))
        else:
            report.delivered += 1
            if record_positions:
                report.positions[i] = (msg.partition(), msg.offset())

    started = time.monotonic()
    step = 0.01  # pace in 10 ms slices
    for i, (value, key) in enumerate(zip(payloads, keys, strict=True)):
        if rate:
            due = started + i / rate
            wait = due - time.monotonic()
            if wait > step:
                producer.poll(0)
                time.sleep(wait)
        while True:
            try:
                producer.produce(topic, value=value, key=key,
                                 on_delivery=lambda e, m, i=i: delivered(e, m, i))  # fmt: skip
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.05)
        report.sent += 1
        if i % 1000 == 0:
            producer.poll(0)
            if progress is not None:
                progress(i)
    left = producer.flush(max(30.0, kafka.request_timeout_s * 3))
    report.elapsed_s = time.monotonic() - started
    if left or report.failed:
        raise StreamError(
            f"producing to {topic}: {report.failed} message(s) failed, {left} undelivered "
            f"(e.g. {report.errors[:3]})"
        )
    return report


def event_messages(
    count: int, *, seed: int, invalid: float = 0.0, malformed: float = 0.0
) -> tuple[list[bytes], list[bytes | None], Any]:
    """Generated fraud events as JSON payloads keyed by card id: ``count`` events with
    ``invalid`` of them breaking the contract, plus malformed payloads making up
    ``malformed`` of all messages. Returns (payloads, keys, the ``GeneratedData``).

    Duplicate-key events are left out of the invalid kinds: a stream tells a conflicting
    re-use of an event id from a replay only within one micro-batch (see `sluice.stream`).
    """
    from sluice.datagen import InvalidKind, generate_dataset, to_json_messages

    kinds = [k for k in InvalidKind if k is not InvalidKind.DUPLICATE_KEY]
    data = generate_dataset(count, seed, invalid_fraction=invalid, invalid_kinds=kinds)
    msgs = to_json_messages(data.table, malformed_fraction=malformed, seed=seed)
    return msgs.payloads, msgs.partition_keys, data
