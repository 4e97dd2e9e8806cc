"""``StreamConsumer``: one Kafka consumer of a stream job, run as a Ray actor, and the
driver's ``RestartBudget`` for replacing crashed ones.

The driver (``pipelines/stream_score.py``) wraps it with ``ray.remote`` and
``max_concurrency=2`` so that ``stop()`` and ``stats()`` answer while ``run()`` loops.
Everything that holds a connection (Kafka consumer, Cassandra session, model) is built
inside ``run``, in the actor's own process; the constructor keeps only picklable config.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sluice.config import PlatformConfig
from sluice.jobs import StreamJob
from sluice.stream._kafka import consumer_settings
from sluice.stream._loop import ConsumerLoop, LoopStats, store_outage

__all__ = ["MIRROR_INTERVAL_S", "CheckpointMirror", "RestartBudget", "StreamConsumer"]

log = logging.getLogger(__name__)

_TXN_TIMEOUT_MS = 15_000  # an alert transaction a dead consumer left open aborts by then


class StreamConsumer:
    """Consumes ``job.topic`` in group ``job.group`` until ``stop()``; see ``ConsumerLoop``."""

    def __init__(self, cfg: PlatformConfig, job: StreamJob, member: str, model_ref: str) -> None:
        self.cfg = cfg
        self.job = job
        self.member = member
        self.model_ref = model_ref  # `fraud/3`: the version the driver resolved, never an alias
        self._stop = threading.Event()
        self._loop: ConsumerLoop | None = None

    def run(self) -> LoopStats:
        from confluent_kafka import Consumer, Producer

        from sluice.contract import load_contract
        from sluice.features import InMemoryFeatureStore, KeyedFeatureStore
        from sluice.models import ModelRegistry
        from sluice.scoring import Scorer
        from sluice.store import CassandraFeatureStore, CheckpointStore
        from sluice.stream._alerts import Transactions, candidate_topic, producer_settings
        from sluice.stream._scoring import CassandraOutputs, MicroBatchScorer

        cfg, job = self.cfg, self.job
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        contract = load_contract(job.contract)
        agg = contract.features.aggregates
        # The consumer's cards' recent events in memory, Cassandra the durable copy (a
        # contract without aggregates keeps no state: its Scorer never uses a store).
        state = None if agg is None else KeyedFeatureStore(
            CassandraFeatureStore.for_contract(cfg.cassandra, contract), agg)  # fmt: skip
        store = InMemoryFeatureStore() if state is None else state
        scorer = Scorer(contract, ModelRegistry.from_config(cfg), store, "compiled",
                        model_ref=self.model_ref,
                        batch_rows=min(job.max_batch_messages, 8192))  # fmt: skip
        outputs = CassandraOutputs(cfg.cassandra, contract)
        consumer = Consumer(consumer_settings(cfg.kafka, job, f"{job.name}-{self.member}"))
        transactions = None
        if contract.decision is not None:  # its alert candidates, for the relay, exactly once
            instance = f"{self.member}-{uuid.uuid4().hex[:8]}"  # unique: see _alerts
            producer = Producer(producer_settings(cfg.kafka.client_settings(), job.name,
                                                  instance, _TXN_TIMEOUT_MS))  # fmt: skip
            transactions = Transactions(producer, consumer,
                                        candidate_topic(cfg.kafka, contract.name),
                                        max(30.0, cfg.kafka.request_timeout_s))  # fmt: skip
            transactions.start()
        process = MicroBatchScorer(scorer, outputs, source=f"stream:{job.name}",
                                   gx_min_rows=job.gx_min_rows,
                                   max_message_bytes=job.max_message_bytes,
                                   max_unknown_fields=job.max_unknown_fields)  # fmt: skip
        mirror = CheckpointMirror(CheckpointStore(cfg.cassandra), job)
        loop = ConsumerLoop(consumer, process, job=job.name, max_messages=job.max_batch_messages,
                            max_wait_s=job.max_batch_wait_ms / 1000, on_commit=mirror,
                            on_partitions_moved=None if state is None else state.forget,
                            transactions=transactions,
                            store_outage_max_s=job.store_outage_max_s)  # fmt: skip
        consumer.subscribe([job.topic], on_assign=loop.on_assign, on_revoke=loop.on_revoke,
                           on_lost=loop.on_lost)  # fmt: skip
        self._loop = loop
        log.info("%s consumer %s (pid %d) started on %s", job.name, self.member, os.getpid(),
                 job.topic)  # fmt: skip
        # Everything built so far (libraries, model, contract: ~280k objects) lives as long
        # as the consumer: out of the collector's sight, a full collection scans only what
        # the batches create (measured at 2,500 events/s: 160-250 ms -> 5-45 ms a pause).
        gc.freeze()
        try:
            return loop.run(self._stop)
        finally:
            mirror.close()
            if state is not None:
                state.close()

    def stop(self) -> None:
        """Finish the batch in flight, commit it, leave the group, return from ``run``."""
        self._stop.set()

    def stats(self) -> LoopStats | None:
        """A snapshot of the counters so far (None before ``run`` has started)."""
        if self._loop is None:
            return None
        s = self._loop.stats
        return replace(s, latencies_s=[], sent_at_s=[], reasons=s.reasons.copy(),
                       engines=s.engines.copy(), assigned=list(s.assigned))  # fmt: skip

    def pid(self) -> int:
        return os.getpid()


MIRROR_INTERVAL_S = 1.0
"""Shortest time between two writes of a consumer's offsets into ``stream_checkpoints``."""


class CheckpointMirror:
    """Mirrors the committed offsets into Cassandra's ``stream_checkpoints`` (for
    operators), off the batch's path: Kafka's group offsets are where a consumer resumes,
    so no batch waits for the mirror. A thread of its own writes the latest offset of
    every partition committed since its last write, at most once every ``interval_s``
    (a consumer commits a batch every few tens of milliseconds; each write costs it ~1 ms
    of CPU), so the table is at most ``interval_s`` behind the last commit, an idle
    consumer's included. A write's outcome is checked at the next commit: an outage is
    logged and its offsets are written again with the next ones; any other error raises
    there. ``close`` writes what is left."""

    def __init__(self, checkpoints: Any, job: StreamJob,
                 interval_s: float = MIRROR_INTERVAL_S) -> None:  # fmt: skip
        self.checkpoints = checkpoints
        self.job = job
        self.interval_s = interval_s
        self._cond = threading.Condition()
        self._pending: dict[int, int] = {}  # partition -> offset, not yet written
        self._writing = False
        self._urgent = False  # flush(): write without waiting out the interval
        self._attempts = 0  # writes tried, finished
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="checkpoint-mirror", daemon=True)
        self._thread.start()

    def __call__(self, offsets: dict[tuple[str, int], int]) -> None:
        with self._cond:
            exc, self._error = self._error, None
            self._pending.update({p: o for (_, p), o in offsets.items()})
            self._cond.notify_all()
        if exc is not None:
            raise exc

    def flush(self) -> None:
        """Write the offsets given so far now, and wait until that write has ended (an
        outage keeps them for the next one)."""
        with self._cond:
            if self._closed:  # close() wrote what was left
                return
            target = self._attempts + self._writing + bool(self._pending)
            self._urgent = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._attempts >= target)

    def close(self) -> None:
        """Write what is left, then stop; log (never raise) a failure: the consumer is ending."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            log.warning("%s: the last checkpoint mirror write failed: %s", self.job.name,
                        self._error)  # fmt: skip

    def _run(self) -> None:
        last = -float("inf")  # when the last write started
        while True:
            with self._cond:
                while not self._closed:
                    wait = last + self.interval_s - time.monotonic()
                    if self._pending and (wait <= 0 or self._urgent):
                        break
                    self._cond.wait(wait if self._pending else None)
                if not self._pending:  # closed, nothing left
                    return
                offsets, self._pending = self._pending, {}
                self._writing, self._urgent = True, False
            last = time.monotonic()
            try:
                self.checkpoints.commit(self.job.name, self.job.topic, offsets)
                exc = None
            except Exception as err:  # noqa: BLE001 - checked at the next commit
                exc = err
            with self._cond:
                self._writing = False
                self._attempts += 1
                if exc is not None:
                    if store_outage(exc):  # kept for the next write (newer win); not once closed
                        log.warning("%s: checkpoint mirror not updated (%s); %s", self.job.name,
                                    exc, "the consumer is ending" if self._closed
                                    else "its offsets go with the next write")  # fmt: skip
                        self._pending = {} if self._closed else offsets | self._pending
                    else:
                        self._error = exc
                self._cond.notify_all()


class RestartBudget:
    """At most ``limit`` consumer restarts within any ``window_s`` seconds (a sliding
    window): a consumer that crashes now and then is always replaced, a crash loop ends
    the job. ``spend()`` records one restart, or returns False when none is left."""

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._times: deque[float] = deque()

    def spend(self) -> bool:
        now = self.clock()
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True
