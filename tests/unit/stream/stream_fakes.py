"""Small fakes behind the stream's Protocols: Kafka messages and a consumer (no network)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException

TOPIC = "events"
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass
class FakeMessage:
    """A consumed message: ``confluent_kafka.Message``'s accessors."""

    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _topic: str = TOPIC
    _timestamp_ms: int | None = None
    _error: Any = None

    def error(self) -> Any:
        return self._error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        if self._timestamp_ms is None:
            return (0, -1)  # TIMESTAMP_NOT_AVAILABLE
        return (1, self._timestamp_ms)  # TIMESTAMP_CREATE_TIME


def messages(values: list[bytes | None], partitions: int = 2, start_ms: int = T0_MS) -> list:
    """Values spread round-robin over partitions, offsets counting up per partition."""
    next_offset = [0] * partitions
    out = []
    for i, value in enumerate(values):
        p = i % partitions
        out.append(FakeMessage(p, next_offset[p], value, _timestamp_ms=start_ms + i))
        next_offset[p] += 1
    return out


class ErrorEvent(FakeMessage):
    def __init__(self, code: int, fatal: bool = False) -> None:
        super().__init__(0, -1, None, _error=_Err(code, fatal))


@dataclass
class _Err:
    _code: int
    _fatal: bool

    def code(self) -> int:
        return self._code

    def fatal(self) -> bool:
        return self._fatal

    def __str__(self) -> str:
        return f"error {self._code}"


@dataclass
class FakeConsumer:
    """Hands out ``batches`` as arrivals, records every call.

    A blocking ``consume`` (timeout > 0) waits for the next arrival: the next list of
    ``batches``; a ``consume`` with timeout 0 takes only what is left of the current one
    (nothing new arrives while the consumer does not wait), so each list is one
    micro-batch of ``collect_batch``. ``log`` is the ordered story of calls: ("consume", n)
    for each blocking call, ("commit", {(t, p): offset}), ("close",) — plus whatever the
    test's process function appends; ``drains`` lists the timeout-0 calls' sizes.
    ``refuse_commits`` makes that many commits fail with REBALANCE_IN_PROGRESS first.
    ``on_consume(call_number)`` runs before each blocking consume returns (e.g. to send a
    signal); ``consumed_calls`` counts those. ``on_drain()`` runs inside each timeout-0
    consume before it returns (e.g. a rebalance served while a batch is collected).
    """

    batches: list[list[Any]]
    log: list[tuple] = field(default_factory=list)
    refuse_commits: int = 0
    fatal_commit: bool = False
    on_consume: Callable[[int], None] | None = None
    on_drain: Callable[[], None] | None = None
    high_watermark: int = 100
    closed: bool = False
    consumed_calls: int = 0
    drains: list[int] = field(default_factory=list)
    _arrived: list[Any] = field(default_factory=list)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        if self.closed:
            raise RuntimeError("consume on a closed consumer")
        if timeout == 0:
            self.drains.append(num_messages)
            if self.on_drain is not None:
                self.on_drain()
        else:
            self.consumed_calls += 1
            self.log.append(("consume", num_messages))
            if self.on_consume is not None:
                self.on_consume(self.consumed_calls)
            if not self._arrived and self.batches:
                self._arrived = list(self.batches.pop(0))
        taken, self._arrived = self._arrived[:num_messages], self._arrived[num_messages:]
        return taken

    def commit(self, *, offsets: list[Any], asynchronous: bool = True) -> list[Any]:
        assert asynchronous is False, "the stream must commit synchronously"
        if self.fatal_commit:
            raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
        if self.refuse_commits:
            self.refuse_commits -= 1
            self.log.append(("commit refused", {(tp.topic, tp.partition): tp.offset
                                                for tp in offsets}))  # fmt: skip
            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
        self.log.append(("commit", {(tp.topic, tp.partition): tp.offset for tp in offsets}))
        return offsets

    def close(self) -> None:
        self.closed = True
        self.log.append(("close",))

    def get_watermark_offsets(self, partition: Any, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]:  # fmt: skip
        return (0, self.high_watermark)

    def commits(self) -> list[dict]:
        return [entry[1] for entry in self.log if entry[0] == "commit"]

    def consumer_group_metadata(self) -> str:
        return "group-metadata"


@dataclass
class FakeProducer:
    """A transactional producer that logs into its consumer's ``log``: ("begin",),
    ("produce", key), ("send offsets", {(t, p): offset}), ("commit txn",), ("abort",).
    ``fail_commit`` makes ``commit_transaction`` fail; ``hang`` makes
    ``send_offsets_to_transaction`` block, whatever its timeout, until ``hang`` is set (as
    librdkafka's can when the group coordinator dies: librdkafka #5456)."""

    log: list[tuple]
    fail_commit: bool = False
    hang: threading.Event | None = None
    produced: list[tuple[str, bytes, bytes]] = field(default_factory=list)

    def init_transactions(self, timeout: float) -> None:
        self.log.append(("init",))

    def begin_transaction(self) -> None:
        self.log.append(("begin",))

    def produce(self, topic: str, key: bytes, value: bytes) -> None:
        self.produced.append((topic, key, value))
        self.log.append(("produce", key.decode()))

    def poll(self, timeout: float) -> int:
        return 0

    def send_offsets_to_transaction(self, positions: list[Any], metadata: Any,
                                    timeout: float) -> None:  # fmt: skip
        assert metadata == "group-metadata"
        if self.hang is not None:
            self.hang.wait()
        self.log.append(("send offsets", {(tp.topic, tp.partition): tp.offset
                                          for tp in positions}))  # fmt: skip

    def commit_transaction(self, timeout: float) -> None:
        if self.fail_commit:
            raise KafkaException(KafkaError(KafkaError._FENCED))
        self.log.append(("commit txn",))

    def abort_transaction(self, timeout: float) -> None:
        self.log.append(("abort",))
