"""The prediction log, online quarantine rows and alerts, written to Cassandra off the request path.

Each ingress replica owns one ``PredictionLog``: a bounded ``queue.Queue`` and one
writer thread. The request path only calls ``put_nowait`` (microseconds); when the
queue is full the entry is dropped and counted, so a slow or dead Cassandra can cost
log rows but never memory or latency. The thread drains the queue in batches (up to
``batch_rows`` rows or ``flush_interval_s``), writes prediction-log rows
(``PREDICTION_LOG_TABLE``), quarantine rows (the contract's quarantine table) and alerts
(``alerts`` and ``alerts_by_key``) with idempotent upserts, and counts what it wrote and
what failed. After a failure it backs off, per kind (doubling up to ``max_backoff_s``);
prediction-log rows that arrive meanwhile are counted as failed instead of piling up.
Alerts both tables hold are then proposed on Kafka to the alert relay (``propose``:
``AlertPublisher.publish``, which waits for every delivery) by a thread of their own, the
*proposals* kind: a Kafka outage, whose every try blocks for the producer's timeout, holds
back neither the tables nor the prediction log.
Quarantine rows, alerts and proposals (the *durable* kinds) are not given up so easily: rows a later
try may write (a brief outage, rows not attempted yet) wait in a bounded retry buffer per
kind (``quarantine_buffer_rows`` rows each) and go out with the next try; failures are per
row, so a row Cassandra refuses for good is counted (``<kind>_failed``) without taking
others with it. Rows past the buffer's bound are dropped and counted (``<kind>_dropped``).
Every row given up on is logged by key (never its raw values).

Writes go through a tiny ``TableWriter`` interface (``write(table, rows)``);
``CassandraTables`` is the real one, and tests can pass a plain function.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from serve_apps.scoring.schemas import RowScore
from sluice.config import CassandraConfig
from sluice.contract import Contract
from sluice.errors import WriteFailed
from sluice.store import (
    ALERTS_BY_KEY_TABLE,
    ALERTS_TABLE,
    PREDICTION_LOG_TABLE,
    CassandraWriter,
    WriteOptions,
    quarantine_rows,
)
from sluice.store import session_for as _session_for

__all__ = [
    "CassandraTables",
    "FunctionWriter",
    "LogEntry",
    "LogOptions",
    "PredictionLog",
    "TableWriter",
    "log_entries",
    "log_table",
]

log = logging.getLogger(__name__)

_LOG_COLUMNS = [n for n, _ in (*PREDICTION_LOG_TABLE.partition_key, *PREDICTION_LOG_TABLE.columns)]


@dataclass(frozen=True)
class LogEntry:
    """One answered prediction: ``log_id`` is the server's, one per scored row (the row's
    key in the table); ``request_id`` the id echoed to the client (theirs or ours);
    ``row_key`` the scored row's key; ``api_key`` the name of the caller's key (never the
    key itself)."""

    log_id: str
    request_id: str
    row_key: str
    api_key: str
    model_version: str
    features: tuple[float, ...]
    score: float
    latency_ms: float
    logged_at: datetime
    decision: str | None = None  # the contract's decision policy (None: it has none)
    policy_id: str | None = None
    role: str = "champion"  # who scored it: champion, challenger (canary) or shadow


def log_entries(scores: Sequence[RowScore], request_id: str, api_key: str, latency_ms: float,
                logged_at: datetime, role: str | None = None) -> list[LogEntry]:  # fmt: skip
    """One entry per scored row of a request, under a fresh ``log_id`` each; ``role``
    overrides the rows' own (the shadow's rows are logged as ``shadow``)."""
    return [LogEntry(uuid.uuid4().hex, request_id, str(s.key), api_key, s.model_version,
                     s.features, s.score, latency_ms, logged_at, s.decision, s.policy_id,
                     role or s.role) for s in scores]  # fmt: skip


@dataclass(frozen=True)
class LogOptions:
    queue_size: int = 1024  # requests waiting to be written (each up to max_rows rows)
    batch_rows: int = 256
    flush_interval_s: float = 0.2
    max_backoff_s: float = 5.0
    quarantine_buffer_rows: int = 10_000  # rows of each durable kind kept for the next try


class TableWriter(Protocol):
    def write(self, table: str, rows: pa.Table) -> None: ...

    def close(self) -> None: ...


class FunctionWriter:
    """A ``TableWriter`` around a plain function (tests, or another sink)."""

    def __init__(self, fn: Callable[[str, pa.Table], None]) -> None:
        self.fn = fn

    def write(self, table: str, rows: pa.Table) -> None:
        self.fn(table, rows)

    def close(self) -> None:
        pass


class CassandraTables:
    """Writes each table to its own (config, options); sessions open on first use (in the thread).

    The prediction log may live on a cluster of its own (``prediction_log.cassandra``)
    while quarantine rows go to the platform's cluster beside the batch and stream ones.
    """

    def __init__(
        self,
        targets: dict[str, tuple[CassandraConfig, WriteOptions]],
        session_for: Callable[[CassandraConfig], Any] = _session_for,
    ) -> None:
        self.targets = targets
        self._session_for = session_for
        self._writers: dict[str, CassandraWriter] = {}

    def write(self, table: str, rows: pa.Table) -> None:
        cfg, options = self.targets[table]
        session = self._session_for(cfg)
        writer = self._writers.get(table)
        if writer is None or writer.session is not session:
            writer = CassandraWriter(session, cfg.keyspace, table, rows.column_names, options)
            self._writers[table] = writer
        writer.write(rows)

    def close(self) -> None:
        self._writers.clear()  # the process's sessions are closed at exit (sluice.store)


def _without(rows: pa.Table, *drop: pa.Table | None) -> pa.Table:
    """``rows`` less those whose key is in a ``drop`` table."""
    keys = [t.column("key") for t in drop if t is not None and t.num_rows]
    if not keys:
        return rows
    gone = pa.chunked_array([c for k in keys for c in k.chunks], pa.string())
    return rows.filter(pc.invert(pc.is_in(rows.column("key"), value_set=gone.combine_chunks())))


def log_table(
    contract: str, feature_names: Sequence[str], entries: Sequence[LogEntry]
) -> pa.Table:
    """Prediction-log rows (``PREDICTION_LOG_TABLE`` columns) for ``entries``."""
    n = len(entries)
    features = pa.array(
        [list(zip(feature_names, e.features, strict=True)) for e in entries],
        pa.map_(pa.string(), pa.float64()),
    )
    return pa.table({
        "log_id": pa.array([e.log_id for e in entries], pa.string()),
        "request_id": pa.array([e.request_id for e in entries], pa.string()),
        "row_key": pa.array([e.row_key for e in entries], pa.string()),
        "api_key": pa.array([e.api_key for e in entries], pa.string()),
        "contract": pa.array([contract] * n, pa.string()),
        "model_version": pa.array([e.model_version for e in entries], pa.string()),
        "features": features,
        "score": pa.array([e.score for e in entries], pa.float64()),
        "decision": pa.array([e.decision for e in entries], pa.string()),
        "policy_id": pa.array([e.policy_id for e in entries], pa.string()),
        "role": pa.array([e.role for e in entries], pa.string()),
        "latency_ms": pa.array([e.latency_ms for e in entries], pa.float64()),
        "logged_at": pa.array([e.logged_at for e in entries], pa.timestamp("us", tz="UTC")),
    })  # fmt: skip


@dataclass
class _Counts:
    accepted: int = 0
    written: int = 0
    dropped: int = 0
    failed: int = 0
    quarantine_written: int = 0
    quarantine_failed: int = 0
    quarantine_dropped: int = 0
    alerts_written: int = 0
    alerts_failed: int = 0
    alerts_dropped: int = 0
    proposals_written: int = 0
    proposals_failed: int = 0
    proposals_dropped: int = 0
    last_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **kw: int) -> None:
        with self.lock:
            for name, value in kw.items():
                setattr(self, name, getattr(self, name) + value)


class PredictionLog:
    """Bounded, non-blocking log of predictions, quarantine rows and alerts; one thread per
    replica."""

    def __init__(
        self,
        contract: Contract,
        writer: TableWriter,
        options: LogOptions = LogOptions(),
        *,
        log_predictions: bool = True,
        propose: Callable[[pa.Table], None] | None = None,
    ) -> None:
        self.contract = contract
        self.writer = writer
        self.options = options
        self.log_predictions = log_predictions
        self.counts = _Counts()
        self._queue: queue.Queue[tuple[str, Any, Any]] = queue.Queue(options.queue_size)
        self._stop = threading.Event()
        # Per kind: the next try's backoff and time (a Kafka outage holds no table back).
        self._backoff_s: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}
        # The durable kinds' destinations, in order; an alert is proposed to the alert
        # relay (``propose``: AlertPublisher.publish) once both its tables hold it, by the
        # proposals thread (its queue is fed by the alerts' last destination).
        write = self.writer.write
        alerts = [partial(write, ALERTS_TABLE.name), partial(write, ALERTS_BY_KEY_TABLE.name)]
        self._proposals: queue.Queue[pa.Table] = queue.Queue(options.queue_size)
        self._sinks: dict[str, list[Callable[[pa.Table], None]]] = {
            "quarantine": [partial(write, contract.output.quarantine_table)],
            "alerts": alerts + ([self._propose_later] if propose is not None else []),
            "proposals": [propose] if propose is not None else [],
        }  # fmt: skip
        # Rows waiting for a retry, per kind (each kind touched by one thread only: the
        # writer's, or for "proposals" the proposals thread).
        self._retry: dict[str, pa.Table] = {}
        self._retry_rows = dict.fromkeys(self._sinks, 0)
        self._thread = threading.Thread(target=self._run, name="sluice-prediction-log",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        self._proposing = threading.Event()  # set: the proposals thread is to finish
        self._proposer = threading.Thread(target=self._run_proposals, daemon=True,
                                          name="sluice-alert-proposals")  # fmt: skip
        if propose is not None:
            self._proposer.start()

    # -- the request path: never blocks ----------------------------------------------------
    def predictions(self, feature_names: tuple[str, ...], entries: Sequence[LogEntry]) -> None:
        if self.log_predictions and entries:
            self._offer(("log", feature_names, list(entries)), len(entries))

    def quarantine(self, rows: pa.Table) -> None:
        if rows.num_rows:
            self._offer(("quarantine", rows, None), rows.num_rows)

    def alerts(self, rows: pa.Table) -> None:
        """Alert rows (``sluice.store.alert_rows``): one per review or block decision."""
        if rows.num_rows:
            self._offer(("alerts", rows, None), rows.num_rows)

    def _offer(self, item: tuple[str, Any, Any], n: int) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.counts.add(dropped=n)
            if item[0] in self._sinks:
                self.counts.add(**{f"{item[0]}_dropped": n})
                self._report_lost(item[0], item[1], "the write queue is full")
        else:
            self.counts.add(accepted=n)

    def stats(self) -> dict[str, Any]:
        c = self.counts
        with c.lock:
            return {
                "accepted": c.accepted, "written": c.written, "dropped": c.dropped,
                "failed": c.failed, "quarantine_written": c.quarantine_written,
                "quarantine_failed": c.quarantine_failed,
                "quarantine_dropped": c.quarantine_dropped,
                "quarantine_retrying": self._retry_rows["quarantine"],
                "alerts_written": c.alerts_written, "alerts_failed": c.alerts_failed,
                "alerts_dropped": c.alerts_dropped,
                "alerts_retrying": self._retry_rows["alerts"],
                "proposals_written": c.proposals_written,
                "proposals_failed": c.proposals_failed,
                "proposals_dropped": c.proposals_dropped,
                "proposals_retrying": self._retry_rows["proposals"],
                "queued": self._queue.qsize(),
                "queue_size": self.options.queue_size, "last_error": c.last_error,
            }  # fmt: skip

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is queued (up to ``timeout_s``) and stop the threads: the writer's, then
        the proposals' (which takes what the writer's last tries handed it)."""
        self._stop.set()
        self._thread.join(timeout_s)
        self._proposing.set()
        if self._proposer.is_alive():
            self._proposer.join(timeout_s)
        self.writer.close()

    # -- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        opts = self.options
        while not (self._stop.is_set() and self._queue.empty()):
            logs: list[tuple[tuple[str, ...], list[LogEntry]]] = []
            durable: dict[str, list[pa.Table]] = {}
            rows, deadline = 0, time.monotonic() + opts.flush_interval_s
            while rows < opts.batch_rows:
                wait = deadline - time.monotonic()
                if wait <= 0 or (self._stop.is_set() and self._queue.empty()):
                    break
                try:
                    kind, a, b = self._queue.get(timeout=wait)
                except queue.Empty:
                    break
                if kind == "log":
                    logs.append((a, b))
                    rows += len(b)
                else:
                    durable.setdefault(kind, []).append(a)
                    rows += a.num_rows
            if logs:
                self._write_log(logs)
            for kind in ("quarantine", "alerts"):
                if durable.get(kind) or kind in self._retry:
                    self._write_durable(kind, durable.get(kind, []))
        for kind in ("quarantine", "alerts"):
            self._last_try(kind, "the store is unavailable at close")

    # -- the proposals thread: the only one that touches the "proposals" kind ------------
    def _propose_later(self, rows: pa.Table) -> None:
        """The alerts' last destination: hand rows both tables hold to the proposals thread
        (never blocks; past the queue's bound they are dropped, counted and logged)."""
        try:
            self._proposals.put_nowait(rows)
        except queue.Full:
            self.counts.add(proposals_dropped=rows.num_rows)
            self._report_lost("proposals", rows, "the proposal queue is full")

    def _run_proposals(self) -> None:
        while not (self._proposing.is_set() and self._proposals.empty()):
            try:
                new = [self._proposals.get(timeout=self.options.flush_interval_s)]
            except queue.Empty:
                new = []
            while not self._proposals.empty():
                new.append(self._proposals.get_nowait())
            if new or "proposals" in self._retry:
                self._write_durable("proposals", new)
        self._last_try("proposals", "Kafka is unavailable at close")

    def _last_try(self, kind: str, why: str) -> None:
        """Closing: rows of ``kind`` still waiting get one last try, then are given up."""
        if kind in self._retry:
            self._retry_at[kind] = 0.0
            self._write_durable(kind, [])
            self._give_up(kind, self._take_retry(kind), why)

    def _write_log(self, logs: list[tuple[tuple[str, ...], list[LogEntry]]]) -> None:
        n = sum(len(e) for _, e in logs)
        if not self._may_try("log"):
            self.counts.add(failed=n)
            return
        try:
            by_names: dict[tuple[str, ...], list[LogEntry]] = {}
            for names, entries in logs:
                by_names.setdefault(names, []).extend(entries)
            for names, entries in by_names.items():
                table = log_table(self.contract.name, names, entries)
                self.writer.write(PREDICTION_LOG_TABLE.name, table.select(_LOG_COLUMNS))
        except Exception as exc:  # noqa: BLE001 - counted and reported; the endpoint goes on
            self._failed("log", exc)
            self.counts.add(failed=n)
        else:
            self._ok("log")
            self.counts.add(written=n)

    def _shape(self, kind: str, new: list[pa.Table]) -> list[pa.Table]:
        """Quarantine rows as the table holds them (alert rows come shaped)."""
        if kind != "quarantine":
            return new
        shaped = []
        for quarantined in new:
            try:
                shaped.append(quarantine_rows(self.contract, quarantined))
            except Exception as exc:  # noqa: BLE001 - the thread must live: count and say
                self.counts.add(quarantine_failed=quarantined.num_rows)
                log.exception("quarantine: %d row(s) could not be shaped for the table (%s); "
                              "keys: %s", quarantined.num_rows, type(exc).__name__,
                              quarantined.column("key").to_pylist()[:20])  # fmt: skip
        return shaped

    def _write_durable(self, kind: str, new: list[pa.Table]) -> None:
        """A durable kind's new rows plus those waiting for a retry, written per row to each
        of its destinations in turn (a retry rewrites one that took them: upserts; the relay
        drops a proposal made twice). A row waits for a retry when a destination could not
        take it, is given up when one refused it for good, and goes on to the next one
        otherwise."""
        parts = ([] if (retry := self._take_retry(kind)) is None else [retry])
        parts += self._shape(kind, new)
        if not parts:
            return
        rows = pa.concat_tables(parts)
        if not self._may_try(kind):
            self._keep(kind, rows)
            return
        failed: BaseException | None = None
        for sink in self._sinks[kind]:
            try:
                sink(rows)
            except WriteFailed as exc:  # some rows taken; the rest split by what may help
                failed = exc
                self._give_up(kind, exc.refused_rows, "refused by the store")
                self._keep(kind, exc.retry_rows)
                rows = _without(rows, exc.refused_rows, exc.retry_rows)
            except Exception as exc:  # noqa: BLE001 - none taken: every row waits
                failed = exc
                self._keep(kind, rows)
                rows = rows.slice(0, 0)
            if rows.num_rows == 0:
                break
        if failed is not None:
            self._failed(kind, failed)
        else:
            self._ok(kind)
        self.counts.add(**{f"{kind}_written": rows.num_rows})

    def _take_retry(self, kind: str) -> pa.Table | None:
        self._retry_rows[kind] = 0
        return self._retry.pop(kind, None)

    def _keep(self, kind: str, rows: pa.Table | None) -> None:
        """Hold rows for the next try, up to the buffer's bound; count what falls off."""
        if rows is None or rows.num_rows == 0:
            return
        if kind in self._retry:  # rows an earlier destination of this try kept
            rows = pa.concat_tables([self._retry[kind], rows])
        bound = self.options.quarantine_buffer_rows
        if rows.num_rows > bound:
            over = rows.slice(bound)
            self.counts.add(**{f"{kind}_dropped": over.num_rows})
            self._report_lost(kind, over, "the retry buffer is full")
            rows = rows.slice(0, bound)
        self._retry[kind], self._retry_rows[kind] = rows, rows.num_rows

    def _give_up(self, kind: str, rows: pa.Table | None, why: str) -> None:
        if rows is not None and rows.num_rows:
            self.counts.add(**{f"{kind}_failed": rows.num_rows})
            self._report_lost(kind, rows, self.counts.last_error or why)

    def _may_try(self, kind: str) -> bool:
        return time.monotonic() >= self._retry_at.get(kind, 0.0)

    def _ok(self, kind: str) -> None:
        self._backoff_s[kind] = 0.0

    def _failed(self, kind: str, exc: BaseException) -> None:
        backoff = min(max(self._backoff_s.get(kind, 0.0) * 2, 0.25), self.options.max_backoff_s)
        self._backoff_s[kind], self._retry_at[kind] = backoff, time.monotonic() + backoff
        with self.counts.lock:
            self.counts.last_error = f"{type(exc).__name__}: {exc}"[:500]
        log.warning("prediction log: %s write failed (next try in %.2f s): %s", kind, backoff,
                    self.counts.last_error)  # fmt: skip

    def _report_lost(self, kind: str, rows: pa.Table, why: str) -> None:
        # Keys and counts only: a row's raw values may be personal data and stay out of logs.
        keys = rows.column("key").to_pylist()
        shown = ", ".join(repr(k)[:80] for k in keys[:20]) + (" ..." if len(keys) > 20 else "")
        log.error("%s: %d row(s) not written (%s); keys: %s", kind, len(keys), why, shown)
