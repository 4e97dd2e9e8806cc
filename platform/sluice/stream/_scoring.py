"""One micro-batch scored and written: decode -> Scorer -> predictions + quarantine rows.

``MicroBatchScorer(batch)`` returns only when every output of the batch is written:
- the Scorer records the batch's valid events in the consumer's keyed state
  (``sluice.features.KeyedFeatureStore``: its cards' recent events in memory, loaded from
  Cassandra on first sight), which starts their write to the feature table (an idempotent
  upsert keyed by (card, event time, event id), so a replay stores each event once), then
  computes their features from memory — an event's aggregates only look at *strictly
  earlier* events of its card, which, with card-keyed partitions, were all recorded by an
  earlier batch or earlier in this one;
- predictions (keyed by the event id), quarantine rows (keyed by the event id, or the
  message position) and alerts are upserted at once while the events' write is in flight;
  then all are waited for (one round of writes per batch).
Only then may the consumer commit the batch's offsets (``ConsumerLoop``). A replay after
a crash rewrites the same rows: the same features and score for every event.

Validation engine, picked per batch by size: a batch of at least ``gx_min_rows`` events
runs the suite through Great Expectations itself (a fixed cost of >= 45 ms a call,
amortized by a large batch: catch-up after downtime), a smaller one through the compiled
engine (microseconds per row: the usual small, low-latency batch). Both give the same
verdict per row (the validation parity property test).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import pyarrow as pa

from sluice import metrics
from sluice.config import CassandraConfig
from sluice.contract import Contract
from sluice.decisions import decision_counts
from sluice.features import KeyedFeatureStore
from sluice.scoring import Engine, Scorer, reason_counts
from sluice.store import (
    ALERT_COLUMNS,
    QUARANTINE_COLUMNS,
    AlertWriter,
    CassandraWriter,
    WriteOptions,
    alert_rows,
    prediction_columns,
    prediction_rows,
    quarantine_rows,
    session_for,
)
from sluice.stream._alerts import alert_messages
from sluice.stream._messages import (
    Message,
    MessageLimits,
    decode_messages,
    malformed_quarantine,
    restamp_quarantine,
)

__all__ = ["BatchResult", "CassandraOutputs", "MicroBatchScorer", "OutputWriter", "pick_engine"]


def pick_engine(rows: int, gx_min_rows: int) -> Engine:
    """``gx`` for a batch of at least ``gx_min_rows`` events, else ``compiled``."""
    return "gx" if rows >= gx_min_rows else "compiled"


class OutputWriter(Protocol):
    """Writes a batch's rows and returns once all are written (raises otherwise)."""

    def write(self, predictions: pa.Table, quarantine: pa.Table, alerts: pa.Table) -> None: ...


class CassandraOutputs:
    """The contract's predictions and quarantine tables, through ``CassandraWriter``, and
    its alerts (``AlertWriter``), written at once and waited for together.

    Writers are built on first use in the consumer's process (prepared statements belong
    to that process's session) with the contract's consistency level and TTL.
    """

    def __init__(self, cfg: CassandraConfig, contract: Contract) -> None:
        self.cfg = cfg
        self.contract = contract
        self._writers: tuple[Any, CassandraWriter, CassandraWriter] | None = None
        self.alerts = AlertWriter(cfg, contract)
        # The three writes wait on Cassandra, not on a CPU: one round instead of three.
        self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="outputs-write")

    def _for_session(self) -> tuple[CassandraWriter, CassandraWriter]:
        session = session_for(self.cfg)
        if self._writers is None or self._writers[0] is not session:
            out = self.contract.output
            opts = WriteOptions.from_config(self.cfg, out.consistency, out.ttl_s)
            ks = self.cfg.keyspace
            pred_cols = prediction_columns(self.contract)
            quar_cols = list(QUARANTINE_COLUMNS)
            self._writers = (
                session,
                CassandraWriter(session, ks, out.predictions_table, pred_cols, opts),
                CassandraWriter(session, ks, out.quarantine_table, quar_cols, opts),
            )
        return self._writers[1], self._writers[2]

    def write(self, predictions: pa.Table, quarantine: pa.Table, alerts: pa.Table) -> None:
        """Returns once every row is written; otherwise raises the first error (predictions,
        then quarantine, then alerts) after all three writes have ended."""
        preds, quar = self._for_session()
        jobs = [(preds.write, predictions), (quar.write, quarantine), (self.alerts.write, alerts)]
        futures = [self._pool.submit(fn, rows) for fn, rows in jobs if rows.num_rows]
        errors = [f.exception() for f in futures]  # waits for each
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first


@dataclass
class BatchResult:
    """What one micro-batch did; ``written_at`` is the wall time its writes completed."""

    messages: int
    scored: int
    quarantined: int  # events refused by the contract (not counting malformed messages)
    malformed: int
    engine: Engine
    written_at: float
    late: int = 0  # events older than one their card already had (KeyedFeatureStore)
    reasons: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)  # producer timestamp -> written
    sent_at_s: list[float] = field(default_factory=list)  # the producer timestamps (epoch s)
    # Messages (key, value) that ConsumerLoop produces in the Kafka transaction committing
    # the batch's offsets: the stream's alert candidates (written to Cassandra already),
    # the relay's new alerts.
    outbox: list[tuple[bytes, bytes]] = field(default_factory=list)


class MicroBatchScorer:
    """Scores and writes micro-batches of one stream job (``source`` e.g. ``stream:<job>``).

    ``max_message_bytes`` / ``max_unknown_fields``: the job's limits on one message
    (``MessageLimits``); records keep only the contract's input fields.
    """

    def __init__(
        self,
        scorer: Scorer,
        outputs: OutputWriter,
        *,
        source: str,
        gx_min_rows: int,
        max_message_bytes: int,
        max_unknown_fields: int,
    ) -> None:
        self.scorer = scorer
        self.contract: Contract = scorer.contract
        self.outputs = outputs
        # The consumer's keyed state, if its Scorer records into one: flushed before the
        # batch counts as written.
        store = scorer.store
        self.state = store if isinstance(store, KeyedFeatureStore) else None
        # Late events the state counted that a written batch has reported: a batch retried
        # through an outage counts its late events in its first attempt's record.
        self._late_reported = self.state.late_events if self.state else 0
        self.source = source
        self.gx_min_rows = gx_min_rows
        fields = frozenset(self.contract.scoring_schema.names)
        self.limits = MessageLimits(fields, max_message_bytes, max_unknown_fields)
        metrics.models_in_use("stream", self.contract.name, [scorer.model.ref])

    def __call__(self, messages: Sequence[Message]) -> BatchResult:
        try:
            decoded, engine, predictions, quarantine, alerts = self._score(messages)
            self.outputs.write(predictions, quarantine_rows(self.contract, quarantine), alerts)
        finally:
            if self.state is not None:  # no write of this batch outlives it, even on error
                self.state.flush()  # the feature events' write, started by Scorer.record
        late = self.state.late_events - self._late_reported if self.state else 0
        self._late_reported += late
        scored_rows = predictions.num_rows
        model_version = self.scorer.model.ref
        written_at = time.time()
        sent_at = _sent_at(messages)
        reasons = _reasons(quarantine)
        metrics.record_rows(self.source, self.contract.name, model_version, scored_rows, reasons,
                            decision_counts(predictions) if predictions.num_rows else {})
        if late:
            metrics.LATE_EVENTS.inc(late, source=self.source, contract=self.contract.name)
        return BatchResult(
            messages=len(messages),
            scored=scored_rows,
            quarantined=quarantine.num_rows - len(decoded.malformed),
            malformed=len(decoded.malformed),
            engine=engine,
            written_at=written_at,
            late=late,
            reasons=reasons,
            latencies_s=[written_at - t for t in sent_at],
            sent_at_s=sent_at,
            outbox=alert_messages(alerts),
        )

    def _score(self, messages: Sequence[Message]):
        """(decoded, engine, prediction rows, quarantine rows before ``quarantine_rows``,
        alert rows)."""
        now = datetime.now(UTC)
        decoded = decode_messages(messages, self.limits)
        engine = pick_engine(len(decoded.records), self.gx_min_rows)
        quarantined = [malformed_quarantine(decoded, self.source, now, self.limits.max_bytes)]
        predictions = pa.table({})
        alerts = pa.table({c: [] for c in ALERT_COLUMNS})
        if decoded.records:
            t0 = time.perf_counter()
            result = self.scorer.score(decoded.records, engine, source=self.source, now=now)
            metrics.SCORE_BATCH_SECONDS.observe(time.perf_counter() - t0, path="stream",
                                                contract=self.contract.name)  # fmt: skip
            predictions = prediction_rows(self.contract, result.scored, scored_at=now)
            alerts = alert_rows(self.contract, result.scored, self.source, alerted_at=now)
            key_column = self.contract.key_column
            quarantined.append(restamp_quarantine(result.quarantined, decoded, key_column, now))
        return decoded, engine, predictions, pa.concat_tables(quarantined), alerts


def _reasons(quarantine: pa.Table) -> Counter[str]:
    """Quarantined messages by reason: ``malformed:<kind>`` or ``<expectation>:<column>``."""
    return reason_counts(quarantine.column("reasons").to_pylist())


def _sent_at(messages: Sequence[Message]) -> list[float]:
    """Producer (or log-append) timestamps in epoch seconds, of messages that carry one."""
    out = []
    for msg in messages:
        kind, ms = msg.timestamp()
        if kind and ms is not None and ms >= 0:  # 0: TIMESTAMP_NOT_AVAILABLE
            out.append(ms / 1000)
    return out
