"""The prediction log: never blocks, bounded memory, drops and failures counted."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from serve_apps.scoring.prediction_log import (
    CassandraTables,
    FunctionWriter,
    LogEntry,
    LogOptions,
    PredictionLog,
    log_table,
)
from sluice.config import CassandraConfig
from sluice.contract import load_contract
from sluice.errors import StoreUnavailable, WriteFailed
from sluice.scoring import QUARANTINE_SCHEMA
from sluice.store import PREDICTION_LOG_TABLE, WriteOptions
from tests.unit.alert_tables import alerts as alert_table

CONTRACT = load_contract("fraud")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def entries(n: int, prefix: str = "r") -> list[LogEntry]:
    return [LogEntry(f"log-{prefix}{i}", f"{prefix}{i}", f"key-{i}", "test", "fraud/1",
                     (float(i), 1.0), 0.25, 3.5, NOW) for i in range(n)]  # fmt: skip


def quarantined(keys: list[str]) -> pa.Table:
    n = len(keys)
    return pa.table({
        "key": keys, "raw": ['{"amount": -1}'] * n, "reasons": ["[]"] * n,
        "source": ["online:fraud"] * n,
        "quarantined_at": pa.array([NOW] * n, pa.timestamp("us", tz="UTC")),
    }, schema=QUARANTINE_SCHEMA)  # fmt: skip


def wait_for(cond, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_log_rows_have_the_table_columns():
    table = log_table("fraud", ("a", "b"), entries(2))
    names = [n for n, _ in (*PREDICTION_LOG_TABLE.partition_key, *PREDICTION_LOG_TABLE.columns)]
    assert table.column_names == names
    assert table["features"][1].as_py() == [("a", 1.0), ("b", 1.0)]


def test_entries_are_written_in_batches_off_the_caller():
    writes: list[tuple[str, int]] = []
    plog = PredictionLog(CONTRACT, FunctionWriter(lambda t, rows: writes.append((t, len(rows)))),
                         LogOptions(queue_size=100, batch_rows=50, flush_interval_s=0.05))
    for i in range(10):
        plog.predictions(("a", "b"), entries(10, prefix=f"q{i}-"))
    plog.quarantine(quarantined(["k1", "k2"]))
    plog.close()
    assert sum(n for t, n in writes if t == "prediction_log") == 100
    assert max(n for t, n in writes if t == "prediction_log") <= 60  # batches, not one by one
    assert ("quarantine", 2) in writes
    stats = plog.stats()
    assert stats["written"] == 100 and stats["quarantine_written"] == 2
    assert stats["dropped"] == stats["failed"] == 0


def test_a_full_queue_drops_and_counts_without_blocking():
    gate = threading.Event()

    def stuck(table, rows):
        gate.wait(10)

    plog = PredictionLog(CONTRACT, FunctionWriter(stuck),
                         LogOptions(queue_size=3, batch_rows=1, flush_interval_s=0.01))
    t0 = time.perf_counter()
    for i in range(50):
        plog.predictions(("a", "b"), entries(2, prefix=f"{i}-"))
    assert time.perf_counter() - t0 < 0.5
    stats = plog.stats()
    assert stats["queued"] <= 3
    assert stats["dropped"] >= 2 * (50 - 3 - 1)
    assert stats["accepted"] + stats["dropped"] == 100
    gate.set()
    plog.close()


def test_write_failures_are_counted_and_lost_quarantine_rows_are_logged_by_key(caplog):
    def down(table, rows):
        raise StoreUnavailable("cannot reach Cassandra at 127.0.0.1:1")

    plog = PredictionLog(CONTRACT, FunctionWriter(down),
                         LogOptions(queue_size=100, batch_rows=10, flush_interval_s=0.01))
    with caplog.at_level(logging.ERROR, logger="serve_apps.scoring.prediction_log"):
        plog.predictions(("a", "b"), entries(5))
        wait_for(lambda: plog.stats()["failed"] == 5)
        plog.quarantine(quarantined(["lost-key"]))
        wait_for(lambda: plog.stats()["quarantine_retrying"] == 1)  # kept for the next try
        assert plog.stats()["quarantine_failed"] == 0
        plog.close()  # the store never came back: given up at close, and said so
    stats = plog.stats()
    assert "StoreUnavailable" in stats["last_error"] and stats["written"] == 0
    assert stats["quarantine_failed"] == 1 and stats["quarantine_retrying"] == 0
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("lost-key" in m and "1 row(s) not written" in m for m in messages)
    assert not any("amount" in m for m in messages)  # keys only, never the raw row


def test_quarantine_rows_survive_a_brief_outage():
    # Down for the first 3 tries; rows that arrive during the back-off are not dropped.
    tries, stored = [], []

    def flaky(table, rows):
        tries.append(rows.num_rows)
        if len(tries) <= 3:
            raise StoreUnavailable("down for a moment")
        stored.extend(rows.column("key").to_pylist())

    plog = PredictionLog(CONTRACT, FunctionWriter(flaky),
                         LogOptions(queue_size=100, batch_rows=10, flush_interval_s=0.01,
                                    max_backoff_s=0.05))  # fmt: skip
    for i in range(6):
        plog.quarantine(quarantined([f"q{i}"]))
    wait_for(lambda: plog.stats()["quarantine_written"] == 6)
    plog.close()
    assert sorted(stored) == [f"q{i}" for i in range(6)]
    stats = plog.stats()
    assert stats["quarantine_failed"] == stats["quarantine_dropped"] == 0


def alerts(keys: list[str]) -> pa.Table:
    return alert_table(keys, NOW, "online:fraud")


def test_alerts_reach_both_alert_tables_after_an_outage(caplog):
    """Alerts are durable like quarantine rows: kept through a brief outage, then written
    to alerts and alerts_by_key; an alert that cannot be written is counted and logged."""
    writes: list[tuple[str, list[str]]] = []

    def flaky(table, rows):
        if len(writes) < 2 and table == "alerts_by_key":  # the second table fails twice
            writes.append(("failed", []))
            raise StoreUnavailable("down for a moment")
        writes.append((table, rows.column("key").to_pylist()))

    plog = PredictionLog(CONTRACT, FunctionWriter(flaky),
                         LogOptions(queue_size=100, batch_rows=10, flush_interval_s=0.01,
                                    max_backoff_s=0.05))  # fmt: skip
    plog.alerts(alerts(["a1", "a2"]))
    plog.alerts(alerts(["a3"]))
    wait_for(lambda: plog.stats()["alerts_written"] == 3)
    plog.close()
    by_table: dict[str, set[str]] = {}
    for table, keys in writes:
        by_table.setdefault(table, set()).update(keys)
    assert by_table["alerts"] == by_table["alerts_by_key"] == {"a1", "a2", "a3"}
    stats = plog.stats()
    assert stats["alerts_failed"] == stats["alerts_dropped"] == stats["alerts_retrying"] == 0

    def down(table, rows):
        raise StoreUnavailable("cannot reach Cassandra")

    lost = PredictionLog(CONTRACT, FunctionWriter(down),
                         LogOptions(queue_size=100, batch_rows=10, flush_interval_s=0.01))
    with caplog.at_level(logging.ERROR, logger="serve_apps.scoring.prediction_log"):
        lost.alerts(alerts(["gone"]))
        wait_for(lambda: lost.stats()["alerts_retrying"] == 1)
        lost.close()
    assert lost.stats()["alerts_failed"] == 1
    assert any("alerts: 1 row(s) not written" in r.getMessage() and "gone" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_an_alert_is_proposed_once_both_tables_hold_it_and_kafka_down_holds_back_nothing():
    """Order per alert: alerts, alerts_by_key, then the proposal to the relay. Kafka down
    keeps the proposals for a retry (the tables are written once) while prediction-log
    rows go on being written; a row Cassandra refuses for good is never proposed, the
    others of its write are."""
    calls: list[tuple[str, tuple[str, ...]]] = []
    kafka_up = threading.Event()

    def write(table, rows):
        keys = tuple(rows.column("key").to_pylist()) if "key" in rows.column_names else ()
        if table == "alerts" and "bad" in keys:
            at = keys.index("bad")
            calls.append((table, keys[:at] + keys[at + 1:]))
            raise WriteFailed("refused", written=len(keys) - 1, failed_keys=["bad"],
                              refused_rows=rows.slice(at, 1), retry_rows=rows.slice(0, 0))
        calls.append((table, keys))

    def propose(rows):
        if not kafka_up.is_set():
            calls.append(("kafka down", ()))
            raise OSError("no broker")
        calls.append(("proposed", tuple(rows.column("key").to_pylist())))

    plog = PredictionLog(CONTRACT, FunctionWriter(write),
                         LogOptions(queue_size=100, batch_rows=10, flush_interval_s=0.01,
                                    max_backoff_s=0.02), propose=propose)  # fmt: skip
    plog.alerts(alerts(["a1", "bad", "a2"]))
    wait_for(lambda: ("kafka down", ()) in calls)
    plog.predictions(("a", "b"), entries(3))
    wait_for(lambda: plog.stats()["written"] == 3)  # not held back by Kafka's backoff
    stats = plog.stats()
    assert (stats["alerts_written"], stats["alerts_failed"], stats["alerts_retrying"]) == (2, 1, 0)
    assert stats["proposals_retrying"] == 2
    kafka_up.set()
    wait_for(lambda: plog.stats()["proposals_written"] == 2)
    plog.close()
    assert calls[:3] == [("alerts", ("a1", "a2")), ("alerts_by_key", ("a1", "a2")),
                         ("kafka down", ())]  # fmt: skip
    assert [c for c in calls if c[0] in ("alerts", "alerts_by_key")] == calls[:2]  # once
    assert [c for c in calls if c[0] == "proposed"] == [("proposed", ("a1", "a2"))]
    assert plog.stats()["proposals_retrying"] == 0


def test_a_proposal_blocked_on_kafka_holds_back_no_table():
    """AlertPublisher.publish waits for every delivery (the producer's timeout, ~30 s, when
    the brokers are down): while one proposal hangs, the log, quarantine and alert rows that
    follow are all written."""
    hung, release = threading.Event(), threading.Event()
    written: list[str] = []

    def propose(rows):
        hung.set()
        assert release.wait(10), "the test never released the proposal"

    plog = PredictionLog(CONTRACT, FunctionWriter(lambda table, rows: written.append(table)),
                         LogOptions(queue_size=100, batch_rows=10, flush_interval_s=0.01),
                         propose=propose)  # fmt: skip
    try:
        plog.alerts(alerts(["a1"]))
        wait_for(hung.is_set)  # the proposal of a1 hangs from here on
        plog.predictions(("a", "b"), entries(3))
        plog.quarantine(quarantined(["q1"]))
        plog.alerts(alerts(["a2"]))
        wait_for(lambda: plog.stats()["written"] == 3 and plog.stats()["alerts_written"] == 2
                 and plog.stats()["quarantine_written"] == 1)  # fmt: skip
        assert plog.stats()["proposals_written"] == 0
    finally:
        release.set()
    wait_for(lambda: plog.stats()["proposals_written"] == 2)
    plog.close()


def test_one_refused_quarantine_row_fails_alone():
    # The store refuses one row for good; every other row of the same write is stored,
    # and rows not yet attempted go out with the next try.
    stored: list[str] = []

    def refuse_one(table, rows):
        keys = rows.column("key").to_pylist()
        ok = [k for k in keys if k != "huge"]
        if "huge" in keys:
            at = keys.index("huge")
            stored.extend(ok[:at])
            raise WriteFailed("refused", written=at, failed_keys=["huge", *ok[at:]],
                              refused_rows=rows.slice(at, 1), retry_rows=rows.slice(at + 1))
        stored.extend(ok)

    plog = PredictionLog(CONTRACT, FunctionWriter(refuse_one),
                         LogOptions(queue_size=100, batch_rows=100, flush_interval_s=0.05,
                                    max_backoff_s=0.01))  # fmt: skip
    plog.quarantine(quarantined(["a", "huge", "b"]))
    plog.quarantine(quarantined(["c"]))
    wait_for(lambda: plog.stats()["quarantine_written"] == 3)
    plog.close()
    assert sorted(stored) == ["a", "b", "c"]
    stats = plog.stats()
    assert stats["quarantine_failed"] == 1 and stats["quarantine_dropped"] == 0


def test_the_retry_buffer_is_bounded_and_what_falls_off_is_counted():
    def down(table, rows):
        raise StoreUnavailable("down")

    plog = PredictionLog(CONTRACT, FunctionWriter(down),
                         LogOptions(queue_size=100, batch_rows=100, flush_interval_s=0.01,
                                    quarantine_buffer_rows=5))  # fmt: skip
    plog.quarantine(quarantined([f"k{i}" for i in range(8)]))
    wait_for(lambda: plog.stats()["quarantine_dropped"] == 3)
    assert plog.stats()["quarantine_retrying"] == 5
    plog.close()
    assert plog.stats()["quarantine_failed"] == 5


def test_back_off_after_a_failure():
    calls = []

    def down(table, rows):
        calls.append(time.monotonic())
        raise StoreUnavailable("down")

    plog = PredictionLog(CONTRACT, FunctionWriter(down),
                         LogOptions(queue_size=1000, batch_rows=1, flush_interval_s=0.005,
                                    max_backoff_s=0.2))  # fmt: skip
    for i in range(40):
        plog.predictions(("a", "b"), entries(1, prefix=f"{i}-"))
        time.sleep(0.005)
    plog.close()
    assert plog.stats()["failed"] == 40
    assert len(calls) < 15  # rows arriving during a back-off are not each retried


def test_cassandra_tables_route_each_table_to_its_cluster():
    log_cfg = CassandraConfig(port=1, keyspace="logs")
    main_cfg = CassandraConfig(keyspace="main")
    seen = []

    def session_for(cfg):
        seen.append(cfg.keyspace)
        raise StoreUnavailable(f"no {cfg.keyspace}")

    tables = CassandraTables({"prediction_log": (log_cfg, WriteOptions()),
                              "quarantine": (main_cfg, WriteOptions())}, session_for)
    for name in ("prediction_log", "quarantine"):
        with pytest.raises(StoreUnavailable):
            tables.write(name, pa.table({"x": [1]}))
    assert seen == ["logs", "main"]


def test_rows_that_cannot_be_shaped_are_counted_and_the_writer_thread_lives_on():
    stored: list[str] = []
    plog = PredictionLog(CONTRACT, FunctionWriter(
        lambda t, rows: stored.extend(rows.column("key").to_pylist())),
        LogOptions(queue_size=100, batch_rows=1, flush_interval_s=0.01))  # fmt: skip
    broken = quarantined(["bad"]).drop_columns(["quarantined_at"])  # quarantine_rows fails
    plog.quarantine(broken)
    wait_for(lambda: plog.stats()["quarantine_failed"] == 1)
    plog.quarantine(quarantined(["good"]))  # the thread still writes what comes next
    wait_for(lambda: plog.stats()["quarantine_written"] == 1)
    plog.close()
    assert stored == ["good"]
