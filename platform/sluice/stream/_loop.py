"""The consumer loop: poll a micro-batch, process it (every write waited for), then commit.

The commit rule, the whole of at-least-once delivery: a batch's offsets (per partition,
its last offset + 1) are committed — synchronously — only after ``process`` returned,
that is after all of the batch's rows are written. If ``process`` raises, nothing is
committed and the error propagates: whoever restarts the consumer resumes from the last
commit and replays the batch, whose idempotent upserts rewrite the same rows.

With ``transactions`` (``_alerts.Transactions``: the stream of a contract whose decisions
raise alerts, and the alert relay) the commit is a Kafka transaction instead, opened once
the batch's writes are all acknowledged: its ``BatchResult.outbox`` is produced and its
offsets sent into it, and it commits both at once; any failure aborts it and propagates
(the consumer's replacement replays the batch), so nothing is left pending.

Rebalances: ``on_revoke`` (called by the Kafka client inside ``consume``: between batches,
or while one is collected) commits whatever is done but not yet committed for the revoked
partitions; ``on_lost`` (the group already gave them away) drops it: the new owner
replays. Messages of a partition revoked or lost while its batch was being collected are
dropped from the batch, never scored or committed: they are its new owner's (which
starts from the last commit), and this consumer no longer owns their cards' state. A
commit refused because the group is rebalancing is kept and retried after the next batch
or at revocation; only replays can follow from it, never a loss.

Cassandra outages: a batch whose writes fail because Cassandra is unreachable
(``StoreUnavailable``, or a transient driver error) is retried as a whole — same messages,
idempotent upserts — with backoff (0.5 s doubling to 5 s), nothing committed meanwhile,
for up to ``store_outage_max_s``; only then does the error propagate (and the driver
replaces the consumer). The consumer does not poll while it waits (the job keeps
``store_outage_max_s`` below ``max_poll_interval_ms``); librdkafka's own thread keeps its
group session alive.

Stopping: ``stop`` (a ``threading.Event``: the actor's ``stop()``, or SIGTERM through
``install_stop_signals``) is checked between batches: the batch in flight is finished
and committed, then the consumer is closed (leaving the group at once). A stop while
waiting out an outage leaves that batch uncommitted: whoever owns its partitions next
replays it.

Fault injection (crash tests only): with ``$SLUICE_TESTING_HOLD_COMMITS`` naming a file —
unset in production, as Ray's own ``RAY_testing_*`` variables are — a batch whose rows are
all written waits before its commit for as long as that file exists, so a test can kill
consumers holding rows written but not committed at a moment it chooses.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sluice.errors import StoreUnavailable, StreamError, WriteFailed
from sluice.metrics import CONSUMER_LAG, EVENT_LATENCY_SECONDS
from sluice.stream._alerts import Transactions
from sluice.stream._messages import BatchSource, Message, collect_batch, next_offsets
from sluice.stream._scoring import BatchResult

__all__ = ["ConsumerLoop", "KafkaConsumer", "LoopStats", "install_stop_signals", "store_outage"]

log = logging.getLogger(__name__)

_LATENCY_SAMPLES = 200_000  # kept per consumer for the summary's percentiles
STORE_BACKOFF_S = (0.5, 5.0)  # first and longest wait between retries of a batch
HOLD_COMMITS_ENV = "SLUICE_TESTING_HOLD_COMMITS"  # see the module doc


class KafkaConsumer(BatchSource, Protocol):
    """The part of ``confluent_kafka.Consumer`` the loop uses (unit tests pass a fake)."""

    def commit(self, *, offsets: list[Any], asynchronous: bool = True) -> Any: ...
    def close(self) -> None: ...
    def get_watermark_offsets(self, partition: Any, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]: ...  # fmt: skip


@dataclass
class LoopStats:
    """What one consumer did; returned by ``ConsumerLoop.run`` (and the actor's ``run``)."""

    batches: int = 0
    messages: int = 0
    scored: int = 0
    quarantined: int = 0
    malformed: int = 0
    commits: int = 0
    commit_retries: int = 0
    revocations: int = 0
    store_retries: int = 0  # batches retried because Cassandra was unavailable
    store_wait_s: float = 0.0  # time spent waiting for Cassandra
    late_events: int = 0  # events older than one their card already had (BatchResult.late)
    assigned: list[int] = field(default_factory=list)  # partitions, as last assigned
    reasons: Counter[str] = field(default_factory=Counter)
    engines: Counter[str] = field(default_factory=Counter)
    first_batch_at: float | None = None  # wall time the first batch was polled
    last_commit_at: float | None = None
    latencies_s: list[float] = field(default_factory=list)  # producer timestamp -> written
    sent_at_s: list[float] = field(default_factory=list)  # those producer timestamps


def store_outage(exc: BaseException) -> bool:
    """Cassandra unreachable or refusing for now: worth retrying the batch later.

    Not a write the store refused for good (``WriteFailed`` with ``refused_rows``): no
    wait fixes that, so it fails the batch at once instead of after the outage budget.
    """
    from sluice.store import is_transient

    refused = getattr(exc, "refused_rows", None)
    if isinstance(exc, WriteFailed) and refused is not None and refused.num_rows:
        return False
    return isinstance(exc, StoreUnavailable) or is_transient(exc)


def _retriable_commit_error(exc: BaseException) -> bool:
    """Commit failures after which the offsets may simply be committed later (or replayed)."""
    from confluent_kafka import KafkaError

    err = exc.args[0] if exc.args else None
    if not isinstance(err, KafkaError):
        return False
    return err.retriable() or err.code() in (
        KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID, KafkaError._ASSIGNMENT_LOST, KafkaError._STATE,
        KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError._TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT, KafkaError._WAIT_COORD,
    )  # fmt: skip


class ConsumerLoop:
    """Runs micro-batches of one consumer until ``stop`` is set; see the module doc."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        process: Callable[[list[Message]], BatchResult],
        *,
        job: str,
        max_messages: int,
        max_wait_s: float,
        on_commit: Callable[[dict[tuple[str, int], int]], None] | None = None,
        on_partitions_moved: Callable[[], None] | None = None,
        transactions: Transactions | None = None,
        store_outage_max_s: float,
        backoff_s: tuple[float, float] = STORE_BACKOFF_S,
    ) -> None:
        self.consumer = consumer
        self.process = process
        self.job = job
        self.max_messages = max_messages
        self.max_wait_s = max_wait_s
        self.on_commit = on_commit
        self.on_partitions_moved = on_partitions_moved
        self.transactions = transactions
        self.store_outage_max_s = store_outage_max_s
        self.backoff_s = backoff_s
        self.stats = LoopStats()
        self._pending: dict[tuple[str, int], int] = {}  # done, not yet committed
        self._committed: dict[tuple[str, int], int] = {}
        self._assigned: set[tuple[str, int]] = set()
        self._moves = 0  # partitions revoked or lost so far (``_forget``)
        self._hold = os.environ.get(HOLD_COMMITS_ENV) or None

    # -- the loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> LoopStats:
        try:
            while not stop.is_set():
                moves = self._moves
                batch = collect_batch(self.consumer, self.max_messages, self.max_wait_s)
                if self._moves != moves:  # a rebalance ran inside collect_batch's consume
                    batch = [m for m in batch if (m.topic(), m.partition()) in self._assigned]
                if batch:
                    self._run_batch(batch, stop)
                elif self._pending:
                    self._commit(set(self._pending))  # a commit refused earlier
                self._report_lag()
        finally:
            self._close()
        return self.stats

    def _run_batch(self, batch: list[Message], stop: threading.Event) -> None:
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = time.time()
        result = self._process(batch, stop)  # returns once every row is written
        if result is None:
            return  # stopped while Cassandra was down: not committed, replayed later
        for tp, offset in next_offsets(batch).items():
            self._pending[tp] = max(offset, self._pending.get(tp, -1))
        while self._hold and os.path.exists(self._hold) and not stop.wait(0.01):
            pass  # held by a crash test (module doc)
        if self.transactions is not None:  # no commit is ever pending in this mode
            self._commit_transaction(dict(self._pending), result.outbox)
        else:
            self._commit(set(self._pending))
        self._count(result)

    def _process(self, batch: list[Message], stop: threading.Event) -> BatchResult | None:
        """``process(batch)``, the whole batch retried with backoff while Cassandra is down
        (for up to ``store_outage_max_s``); None if ``stop`` is set while waiting."""
        first, longest = self.backoff_s
        delay, began = first, time.monotonic()
        while True:
            try:
                return self.process(batch)
            except Exception as exc:
                if not store_outage(exc):
                    raise
                waited = time.monotonic() - began
                if waited >= self.store_outage_max_s:
                    raise StoreUnavailable(
                        f"{self.job}: Cassandra still unavailable after {waited:.0f} s "
                        f"(store_outage_max_s {self.store_outage_max_s:g}): {exc}"
                    ) from exc
                self.stats.store_retries += 1
                pause = min(delay * random.uniform(0.5, 1.0), self.store_outage_max_s - waited)
                log.warning("%s: Cassandra unavailable (%s); retrying the batch of %d "
                            "message(s) in %.1f s, nothing committed", self.job, exc,
                            len(batch), pause)  # fmt: skip
                stopped = stop.wait(pause)
                self.stats.store_wait_s += pause
                if stopped:
                    log.warning("%s: stopped while waiting for Cassandra; the batch stays "
                                "uncommitted (its partitions' next owner replays it)",
                                self.job)  # fmt: skip
                    return None
                delay = min(delay * 2, longest)

    def _commit(self, partitions: Iterable[tuple[str, int]]) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        offsets = {tp: self._pending[tp] for tp in partitions if tp in self._pending}
        if not offsets:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        try:
            done = self.consumer.commit(offsets=tps, asynchronous=False) or tps
        except KafkaException as exc:
            if not _retriable_commit_error(exc):
                raise StreamError(f"committing offsets {offsets}: {exc}") from exc
            self.stats.commit_retries += 1
            log.warning("commit of %s refused for now (%s); kept for the next one", offsets, exc)
            return
        committed = {}
        for tp in done:
            key = (tp.topic, tp.partition)
            if getattr(tp, "error", None):
                log.warning("commit of %s failed: %s; kept for the next one", key, tp.error)
                continue
            committed[key] = offsets[key]
            if self._pending.get(key) == offsets[key]:
                del self._pending[key]
            self._committed[key] = offsets[key]
        if committed:
            self.stats.commits += 1
            self.stats.last_commit_at = time.time()
            if self.on_commit is not None:
                self.on_commit(committed)

    def _commit_transaction(self, offsets: dict[tuple[str, int], int],
                            outbox: Sequence[tuple[bytes, bytes]]) -> None:  # fmt: skip
        """One transaction of the batch's ``outbox`` and ``offsets``; on failure abort it
        and stop: the replacement consumer replays the batch (its messages unpublished, its
        offsets not moved), so no commit is ever kept for later."""
        txn = self.transactions
        assert txn is not None
        try:
            txn.begin()
            if outbox:
                txn.publish(outbox)
            txn.commit(offsets)
        except Exception as exc:
            txn.abort()
            for key in offsets:  # never retried here: the replacement replays the batch
                self._pending.pop(key, None)
            raise StreamError(f"{self.job}: committing the transaction of offsets {offsets} "
                              f"failed: {exc}; the batch is replayed") from exc
        for key, offset in offsets.items():
            if self._pending.get(key) == offset:
                del self._pending[key]
            self._committed[key] = offset
        self.stats.commits += 1
        self.stats.last_commit_at = time.time()
        if self.on_commit is not None:
            self.on_commit(offsets)

    def _close(self) -> None:
        try:
            if self._pending:
                self._commit(set(self._pending))
        finally:
            self.consumer.close()  # leaves the group: its partitions move at once

    # -- rebalance callbacks (run inside consume()) -------------------------------------------
    def on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._assigned = {(tp.topic, tp.partition) for tp in partitions}
        self.stats.assigned = sorted(p for _, p in self._assigned)
        log.info("%s: assigned partitions %s", self.job, self.stats.assigned)

    def on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self.stats.revocations += 1
        log.info("%s: partitions %s revoked; committing what is done", self.job,
                 sorted(p for _, p in revoked))  # fmt: skip
        try:
            self._commit(revoked & set(self._pending))
        finally:
            self._forget(revoked)

    def on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        lost = {(tp.topic, tp.partition) for tp in partitions}
        log.warning("%s: partitions %s lost; their new owner replays from the last commit",
                    self.job, sorted(p for _, p in lost))  # fmt: skip
        self._forget(lost)

    def _forget(self, partitions: set[tuple[str, int]]) -> None:
        self._moves += 1
        if self.on_partitions_moved is not None:  # e.g. drop the keyed state of their cards
            self.on_partitions_moved()
        for tp in partitions:
            self._pending.pop(tp, None)
            self._committed.pop(tp, None)
            # Its new owner reports its lag from now on.
            CONSUMER_LAG.retire(job=self.job, topic=tp[0], partition=str(tp[1]))
        self._assigned -= partitions
        self.stats.assigned = sorted(p for _, p in self._assigned)

    # -- metrics ----------------------------------------------------------------------------
    def _count(self, result: BatchResult) -> None:
        s = self.stats
        s.batches += 1
        s.messages += result.messages
        s.scored += result.scored
        s.quarantined += result.quarantined
        s.malformed += result.malformed
        s.late_events += result.late
        s.reasons.update(result.reasons)
        s.engines[result.engine] += 1
        room = _LATENCY_SAMPLES - len(s.latencies_s)
        s.latencies_s.extend(result.latencies_s[:room])
        s.sent_at_s.extend(result.sent_at_s[:room])
        # Rows scored and quarantined are counted where they are written (MicroBatchScorer).
        EVENT_LATENCY_SECONDS.observe_many(result.latencies_s, job=self.job)

    def _report_lag(self) -> None:
        from confluent_kafka import TopicPartition

        for topic, partition in self._assigned:
            committed = self._committed.get((topic, partition))
            if committed is None:
                continue
            try:
                _, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except Exception:  # noqa: BLE001 - a metric must never stop the stream
                continue
            if high is not None and high >= 0:
                CONSUMER_LAG.set(max(high - committed, 0), job=self.job, topic=topic,
                                 partition=str(partition))  # fmt: skip


def install_stop_signals(
    stop: threading.Event, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)
) -> Callable[[], None]:
    """Set ``stop`` on SIGTERM/SIGINT (main thread only); returns a function restoring the
    previous handlers. The batch in flight finishes and is committed before the loop ends."""
    previous = {}

    def handler(signum: int, frame: Any) -> None:
        log.info("signal %d: finishing the batch in flight, committing, then stopping", signum)
        stop.set()

    for sig in signals:
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
