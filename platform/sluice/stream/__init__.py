"""The stream path: Kafka micro-batches scored by the contract's Scorer, written to Cassandra.

At-least-once delivery, exactly-once results (DESIGN.md "Stream")::

    poll a micro-batch (collect_batch)  ->  decode (decode_messages: the contract's fields of
    JSON objects; malformed, too large or too wide messages -> quarantine with their raw
    bytes, bounded)  ->  Scorer.score (records valid events in the feature store,
    computes features, predicts, decides)  ->  upsert predictions, quarantine rows and
    alerts and wait  ->  commit the batch's offsets (ConsumerLoop; while Cassandra is
    down the batch is retried with backoff, uncommitted, for up to the job's
    store_outage_max_s). A contract with a decision policy also proposes the batch's
    alerts to Kafka (candidate_topic), and the commit is a Kafka transaction holding those
    candidates and the offsets (Transactions): exactly once for read_committed readers.
    The alert relay (AlertRelay) publishes each transaction's first candidate, from any
    path, on the alert topic (alert_topic).

Every write is an idempotent upsert keyed by the event id (quarantine: the event id or
``topic:partition:offset``; feature events: card, time, event id), so a replay after a
crash rewrites the same rows. Public surface::

    StreamConsumer(cfg, job, member, model_ref)  # Ray actor body: run() / stop() / stats()
    RestartBudget(limit, window_s)            # the driver's restarts within a sliding window
    LagScaler(job.autoscale, partitions)      # the consumer count the lag wants (autoscale)
    ConsumerLoop(consumer, process, ...)      # poll -> process -> commit, revoke, stop
    MicroBatchScorer(scorer, outputs, ...)    # one batch scored and written
    consumer_settings, ensure_topic, topic_partitions, GroupLag, produce_messages,
    event_messages                            # Kafka helpers (`sluice produce`)

Ordering: an event's aggregates only look at strictly earlier events of its card;
producers key events by card id, so a card's events sit in one partition, in order, and
one consumer at a time reads them. Known limit: an event id re-used by a *different*
event is refused only when both land in one micro-batch (the batch job refuses it across
its whole input); across batches the later upsert wins.
"""

from sluice.stream._alerts import (
    EXIT_KAFKA_HUNG,
    AlertPublisher,
    Transactions,
    alert_message,
    alert_messages,
    alert_topic,
    candidate_topic,
    ensure_alert_topics,
)
from sluice.stream._consumer import RestartBudget, StreamConsumer
from sluice.stream._kafka import (
    GroupLag,
    ProduceReport,
    consumer_settings,
    ensure_topic,
    event_messages,
    produce_messages,
    topic_partitions,
)
from sluice.stream._loop import (
    HOLD_COMMITS_ENV,
    ConsumerLoop,
    KafkaConsumer,
    LoopStats,
    install_stop_signals,
)
from sluice.stream._messages import (
    MALFORMED_EXPECTATION,
    Decoded,
    MalformedKind,
    Message,
    MessageLimits,
    collect_batch,
    decode_messages,
    malformed_quarantine,
    next_offsets,
    position_key,
)
from sluice.stream._relay import AlertRelay, Deduplicator, RelayStats, pending_messages, read_topic
from sluice.stream._scaling import LagScaler
from sluice.stream._scoring import (
    BatchResult,
    CassandraOutputs,
    MicroBatchScorer,
    OutputWriter,
    pick_engine,
)

__all__ = [
    "AlertPublisher",
    "AlertRelay",
    "Deduplicator",
    "RelayStats",
    "alert_messages",
    "candidate_topic",
    "ensure_alert_topics",
    "pending_messages",
    "read_topic",
    "MALFORMED_EXPECTATION",
    "BatchResult",
    "CassandraOutputs",
    "ConsumerLoop",
    "HOLD_COMMITS_ENV",
    "Decoded",
    "EXIT_KAFKA_HUNG",
    "GroupLag",
    "KafkaConsumer",
    "LagScaler",
    "LoopStats",
    "MalformedKind",
    "Message",
    "MessageLimits",
    "MicroBatchScorer",
    "OutputWriter",
    "ProduceReport",
    "RestartBudget",
    "StreamConsumer",
    "Transactions",
    "alert_message",
    "alert_topic",
    "collect_batch",
    "consumer_settings",
    "decode_messages",
    "ensure_topic",
    "event_messages",
    "install_stop_signals",
    "malformed_quarantine",
    "next_offsets",
    "pick_engine",
    "position_key",
    "produce_messages",
    "topic_partitions",
]
