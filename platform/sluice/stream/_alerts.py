"""Alerts on Kafka, exactly once: a micro-batch's alert messages and the offsets it consumed
commit in one Kafka transaction (consume–transform–produce), after its Cassandra writes.

Per batch (``ConsumerLoop`` with ``transactions=``): the batch is scored and written to
Cassandra (idempotent upserts, retried through outages); once every write is
acknowledged, ``begin()``, its alerts are produced (``publish``), and ``commit(offsets)``
sends the consumed offsets into the transaction (``send_offsets_to_transaction`` with the
consumer's group metadata) and commits it. A crash or any failure before the commit
aborts both: a reader with ``isolation.level=read_committed`` never sees the alerts, the
group's offsets do not move, and the batch is replayed, its Cassandra rows rewritten, its
alerts produced again in a new transaction. So the topic holds each alert once, whatever
crashes.

Fencing is the consumer group's (KIP-447): the offsets carry the group's generation, so a
consumer whose partitions moved cannot commit, and its transaction aborts. Each consumer
instance has a ``transactional.id`` of its own (``sluice-<job>-<member>-<random>``): two
drivers of one job run side by side without fencing each other. A transaction is open only
for the produce and the commit (milliseconds), and one left open by a killed consumer
aborts after ``transaction.timeout.ms`` (15 s).

Messages are keyed by the transaction key; the value is the alert as JSON
(``alert_message``): key, contract, score, decision, model version, policy id, reasons,
event time and the path that scored it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow as pa

from sluice.errors import StreamError

__all__ = ["Transactions", "alert_message", "alert_topic", "producer_settings"]

log = logging.getLogger(__name__)


def alert_topic(contract: str, configured: str | None = None) -> str:
    """The job's alert topic: ``configured``, or ``sluice-<contract>-alerts``."""
    return configured or f"sluice-{contract}-alerts"


def producer_settings(client: dict[str, Any], job: str, member: str,
                      timeout_ms: int) -> dict[str, Any]:  # fmt: skip
    """A consumer's transactional producer (idempotence comes with ``transactional.id``)."""
    return client | {"transactional.id": f"sluice-{job}-{member}", "acks": "all",
                     "transaction.timeout.ms": timeout_ms}  # fmt: skip


def alert_message(row: dict[str, Any]) -> bytes:
    """One alert row (``sluice.store.alert_rows``) as the topic's JSON value."""
    return json.dumps({
        "key": row["key"], "contract": row["contract"], "score": row["score"],
        "decision": row["decision"], "model_version": row["model_version"],
        "policy_id": row["policy_id"],
        "reasons": json.loads(row["reasons"]) if row["reasons"] else [],
        "event_time": row["event_time"].isoformat(), "path": row["source"],
    }, separators=(",", ":")).encode()  # fmt: skip


class Transactions:
    """One consumer's transactional producer, used by ``ConsumerLoop`` around each batch."""

    def __init__(self, producer: Any, consumer: Any, topic: str, timeout_s: float) -> None:
        self.producer, self.consumer, self.topic = producer, consumer, topic
        self.timeout_s = timeout_s
        self.open = False
        self.published = 0

    def start(self) -> None:
        """Once, before the first batch: finishes (aborts) what a predecessor left open."""
        self.producer.init_transactions(self.timeout_s)

    def begin(self) -> None:
        self.producer.begin_transaction()
        self.open = True

    def publish(self, alerts: pa.Table) -> None:
        """Produce the batch's alerts into the open transaction."""
        if not self.open:
            raise StreamError("alerts produced outside a transaction")
        for row in alerts.to_pylist():
            self.producer.produce(self.topic, key=row["key"].encode(), value=alert_message(row))
        self.producer.poll(0)  # serve delivery callbacks; the commit flushes
        self.published += alerts.num_rows

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """The consumed ``offsets`` (next to read, per partition) and the alerts, at once."""
        from confluent_kafka import TopicPartition

        tps = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        self.producer.send_offsets_to_transaction(tps, self.consumer.consumer_group_metadata(),
                                                  self.timeout_s)  # fmt: skip
        self.producer.commit_transaction(self.timeout_s)
        self.open = False

    def abort(self) -> None:
        """Drop the open transaction (its alerts and offsets); a failure here is logged:
        the transaction times out, or the next ``init_transactions`` aborts it."""
        if not self.open:
            return
        self.open = False
        try:
            self.producer.abort_transaction(self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - the caller is already failing the batch
            log.warning("aborting the alert transaction failed (%s); it times out or the "
                        "consumer's replacement aborts it", exc)  # fmt: skip
