"""Alerts on Kafka, exactly once: every path proposes, one relay publishes.

    batch ScoreStage  ─┐  AlertPublisher: idempotent producer (a re-run proposes again)
    online log thread ─┼─>  <alerts>-candidates  ──>  AlertRelay  ──>  <alerts>
    stream consumer   ─┘  Transactions, with the batch's offsets    (dedup by key, in
                                                                     Kafka transactions)
    (<alerts>: kafka.alerts_topic, sluice-<contract>-alerts by default)

Every path writes its alert rows to Cassandra (idempotent upserts keyed by the
transaction) and proposes them as *candidates* on ``candidate_topic``, at least once: a
batch re-run, an online retry, a stream replay may each propose an alert again. The relay
(``_relay.AlertRelay``) is the alert topic's only writer: it publishes a transaction's
first candidate and drops the rest, so a ``read_committed`` reader of ``alert_topic``
sees each transaction's alert once, whichever path or paths scored it.

``Transactions`` is Kafka's consume–transform–produce, used by both loops that read
Kafka: the stream consumer (its batch's candidates, after its Cassandra writes) and the
relay (its batch's new alerts). Per batch: ``begin()``, produce (``publish``), then
``commit(offsets)`` sends the consumed offsets into the transaction
(``send_offsets_to_transaction`` with the consumer's group metadata) and commits it. A
crash or any failure before the commit aborts both: the messages are never visible to a
``read_committed`` reader, the group's offsets do not move, and the batch is replayed.

Fencing is the consumer group's (KIP-447): the offsets carry the group's generation, so a
consumer whose partitions moved cannot commit, and its transaction aborts. Each consumer
instance has a ``transactional.id`` of its own (``sluice-<job>-<member>-<random>``): two
drivers of one job run side by side without fencing each other. A transaction is open only
for the produce and the commit (milliseconds), and one left open by a killed consumer
aborts after ``transaction.timeout.ms`` (15 s).

A stuck client ends its process. librdkafka's transactional calls take a timeout but do not
always keep it: ``send_offsets_to_transaction`` can block for good when the group
coordinator's broker dies mid-transaction (librdkafka #5456 and #5511, open in the pinned
2.16; a CI run's broker-kill test saw a consumer stuck past 110 s, its group's rebalance
stalled behind it). ``Transactions`` therefore runs each of them on its own thread and
waits ``timeout_s + hang_grace_s``; past that the process cannot trust its Kafka clients
(nor close them: that may block too) and exits with ``EXIT_KAFKA_HUNG`` (70) after one
critical log line. Its supervisor (the stream driver for a consumer actor, whoever runs
``sluice alerts relay`` for the relay) starts a replacement, which resumes from the committed
offsets while the dead one's open transaction aborts (15 s).

Messages are keyed by the transaction key; the value is the alert as JSON
(``alert_message``): key, contract, score, decision, model version, policy id, reasons,
event time and the path that scored it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as Overran
from typing import Any

import pyarrow as pa

from sluice.config import KafkaConfig
from sluice.errors import StreamError

__all__ = [
    "EXIT_KAFKA_HUNG",
    "AlertPublisher",
    "Transactions",
    "alert_message",
    "alert_messages",
    "alert_topic",
    "candidate_topic",
    "ensure_alert_topics",
    "producer_settings",
]

log = logging.getLogger(__name__)

Outgoing = Sequence[tuple[bytes, bytes]]
"""Messages to produce: (key, value) pairs."""

EXIT_KAFKA_HUNG = 70  # a transactional call blocked past its timeout (EX_SOFTWARE)
HANG_GRACE_S = 10.0  # how long past its own timeout a call may take before the process ends


def exit_hung(what: str) -> None:
    """The default ``on_hang``: one critical line, then the process ends at once (no
    cleanup: closing the stuck clients may block as well)."""
    log.critical("%s; the Kafka client is stuck (librdkafka #5456): exiting with %d so that "
                 "a replacement resumes from the committed offsets", what, EXIT_KAFKA_HUNG)
    logging.shutdown()
    os._exit(EXIT_KAFKA_HUNG)


def alert_topic(kafka: KafkaConfig, contract: str) -> str:
    """The contract's alert topic (``kafka.alerts_topic``: ``sluice-<contract>-alerts``)."""
    return kafka.alerts_topic.replace("{contract}", contract)


def candidate_topic(kafka: KafkaConfig, contract: str) -> str:
    """Where every path proposes the contract's alerts, for the relay."""
    return f"{alert_topic(kafka, contract)}-candidates"


def ensure_alert_topics(kafka: KafkaConfig, contract: str, partitions: int = 4) -> None:
    """Create the contract's candidate and alert topics unless they exist."""
    from sluice.stream._kafka import ensure_topic

    for topic in (candidate_topic(kafka, contract), alert_topic(kafka, contract)):
        ensure_topic(kafka, topic, partitions)


def producer_settings(client: dict[str, Any], job: str, member: str,
                      timeout_ms: int) -> dict[str, Any]:  # fmt: skip
    """A consumer's transactional producer (idempotence comes with ``transactional.id``)."""
    return client | {"transactional.id": f"sluice-{job}-{member}", "acks": "all",
                     "transaction.timeout.ms": timeout_ms}  # fmt: skip


def alert_message(row: dict[str, Any]) -> bytes:
    """One alert row (``sluice.store.alert_rows``) as the topics' JSON value."""
    return json.dumps({
        "key": row["key"], "contract": row["contract"], "score": row["score"],
        "decision": row["decision"], "model_version": row["model_version"],
        "policy_id": row["policy_id"],
        "reasons": json.loads(row["reasons"]) if row["reasons"] else [],
        "event_time": row["event_time"].isoformat(), "path": row["source"],
    }, separators=(",", ":")).encode()  # fmt: skip


def alert_messages(alerts: pa.Table | None) -> list[tuple[bytes, bytes]]:
    """Alert rows as (key, value) messages."""
    if alerts is None:
        return []
    return [(row["key"].encode(), alert_message(row)) for row in alerts.to_pylist()]


class AlertPublisher:
    """Proposes alert rows on the candidate topic, every delivery confirmed or raise
    (batch and online; the stream proposes in its transactions). Idempotent producer: a
    retry inside the client never duplicates; a retry of ``publish`` may, and the relay
    drops it. Picklable until first used (the producer is built in the process using it).
    """

    def __init__(self, kafka: KafkaConfig, contract: str) -> None:
        self.kafka, self.contract = kafka, contract
        self.topic = candidate_topic(kafka, contract)
        self._producer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"kafka": self.kafka, "contract": self.contract, "topic": self.topic,
                "_producer": None}  # fmt: skip

    def publish(self, alerts: pa.Table) -> None:
        messages = alert_messages(alerts)
        if not messages:
            return
        if self._producer is None:
            from confluent_kafka import Producer

            ensure_alert_topics(self.kafka, self.contract)
            self._producer = Producer(self.kafka.client_settings() | {
                "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                "message.timeout.ms": int(self.kafka.request_timeout_s * 3000)})  # fmt: skip
        failed: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        for key, value in messages:
            self._producer.produce(self.topic, key=key, value=value, on_delivery=delivered)
        left = self._producer.flush(self.kafka.request_timeout_s * 3)
        if left or failed:
            raise StreamError(f"{self.topic}: {len(failed) + left} of {len(messages)} alert "
                              f"candidate(s) not delivered: {(failed or ['timed out'])[0]}")


class Transactions:
    """One consumer's transactional producer, used by ``ConsumerLoop`` around each batch.
    Each call with a timeout runs on the ``kafka-txn`` thread, bounded (module doc): past
    ``timeout_s + hang_grace_s`` it calls ``on_hang`` (``exit_hung``: the process ends; a
    test's may raise)."""

    def __init__(self, producer: Any, consumer: Any, topic: str, timeout_s: float, *,
                 hang_grace_s: float = HANG_GRACE_S,
                 on_hang: Callable[[str], None] = exit_hung) -> None:  # fmt: skip
        self.producer, self.consumer, self.topic = producer, consumer, topic
        self.timeout_s, self.hang_grace_s, self.on_hang = timeout_s, hang_grace_s, on_hang
        self.open = False
        self.published = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-txn")

    def start(self) -> None:
        """Once, before the first batch: ``init_transactions``. With the transactional id
        of a predecessor (the alert relay's, stable per member) it aborts what that one left
        open; a stream consumer's id is new each start, so its predecessor's transaction
        aborts itself after ``transaction.timeout.ms`` (the module doc)."""
        self._bounded("init_transactions", self.producer.init_transactions)

    def begin(self) -> None:
        self.producer.begin_transaction()
        self.open = True

    def publish(self, messages: Outgoing) -> None:
        """Produce the batch's messages into the open transaction."""
        if not self.open:
            raise StreamError("messages produced outside a transaction")
        for key, value in messages:
            self.producer.produce(self.topic, key=key, value=value)
        self.producer.poll(0)  # serve delivery callbacks; the commit flushes
        self.published += len(messages)

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """The consumed ``offsets`` (next to read, per partition) and the messages, at once."""
        from confluent_kafka import TopicPartition

        tps = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        self._bounded("send_offsets_to_transaction", self.producer.send_offsets_to_transaction,
                      tps, self.consumer.consumer_group_metadata())  # fmt: skip
        self._bounded("commit_transaction", self.producer.commit_transaction)
        self.open = False

    def abort(self) -> None:
        """Drop the open transaction (its messages and offsets); a failure here is logged:
        the transaction times out, or the next ``init_transactions`` aborts it."""
        if not self.open:
            return
        self.open = False
        try:
            self._bounded("abort_transaction", self.producer.abort_transaction)
        except Exception as exc:  # noqa: BLE001 - the caller is already failing the batch
            log.warning("aborting the transaction failed (%s); it times out or the "
                        "consumer's replacement aborts it", exc)  # fmt: skip

    def _bounded(self, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args, timeout_s)`` on the transaction thread; its result or its error, or
        ``on_hang`` once it has run ``hang_grace_s`` past its timeout."""
        future = self._thread.submit(call, *args, self.timeout_s)
        try:
            return future.result(timeout=self.timeout_s + self.hang_grace_s)
        except Overran:
            waited = self.timeout_s + self.hang_grace_s
            self.on_hang(f"{what} still blocked after {waited:g} s (its timeout "
                         f"{self.timeout_s:g} s)")  # fmt: skip
            raise StreamError(f"{what} blocked past its timeout") from None
