"""The consumer loop: commit only after the batch's writes, rebalances, stop and SIGTERM."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from confluent_kafka import TopicPartition
from stream_fakes import TOPIC, FakeConsumer, messages

from sluice.errors import StoreUnavailable, StreamError, WriteFailed
from sluice.stream import (
    HOLD_COMMITS_ENV,
    BatchResult,
    ConsumerLoop,
    RestartBudget,
    install_stop_signals,
)


class Process:
    """A fake micro-batch processor: logs when it starts and when its writes are done."""

    def __init__(
        self,
        consumer: FakeConsumer,
        fail_on: int | None = None,
        stop_after: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.consumer, self.fail_on, self.calls = consumer, fail_on, 0
        self.stop_after, self.stop = stop_after, stop

    def __call__(self, batch) -> BatchResult:
        self.calls += 1
        log = self.consumer.log
        log.append(("write start", len(batch)))
        if self.calls == self.fail_on:
            raise OSError("Cassandra write failed")
        log.append(("writes done", len(batch)))
        if self.stop_after is not None and self.calls >= self.stop_after:
            self.stop.set()
        return BatchResult(messages=len(batch), scored=len(batch), quarantined=0, malformed=0,
                           engine="compiled", written_at=0.0,
                           latencies_s=[0.01] * len(batch))  # fmt: skip


def loop_for(consumer: FakeConsumer, process, **kw) -> ConsumerLoop:
    return ConsumerLoop(consumer, process, job="unit", max_messages=kw.pop("max_messages", 4),
                        max_wait_s=kw.pop("max_wait_s", 0.01),
                        store_outage_max_s=kw.pop("store_outage_max_s", 5.0),
                        backoff_s=kw.pop("backoff_s", (0.001, 0.004)), **kw)  # fmt: skip


def run_batches(consumer: FakeConsumer, n_batches: int, **kw) -> ConsumerLoop:
    stop = threading.Event()
    loop = loop_for(consumer, Process(consumer, stop_after=n_batches, stop=stop), **kw)
    loop.on_assign(consumer, [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
    loop.run(stop)
    return loop


def test_offsets_are_committed_only_after_the_batch_is_written():
    batch1, batch2 = messages([b"{}"] * 4), messages([b"{}"] * 3, start_ms=0)
    for m in batch2:
        m._offset += 2  # batch 2 continues where batch 1 ended on each partition
    consumer = FakeConsumer(batches=[batch1, batch2])
    loop = run_batches(consumer, 2)
    steps = [e[0] for e in consumer.log if e[0] != "consume"]
    assert steps == ["write start", "writes done", "commit",
                     "write start", "writes done", "commit", "close"]  # fmt: skip
    # Synchronous commits of last offset + 1 per partition.
    assert consumer.commits() == [{(TOPIC, 0): 2, (TOPIC, 1): 2}, {(TOPIC, 0): 4, (TOPIC, 1): 3}]
    assert loop.stats.batches == 2 and loop.stats.messages == 7 and loop.stats.commits == 2


def test_a_failed_batch_is_never_committed():
    consumer = FakeConsumer(batches=[messages([b"{}"] * 4), messages([b"{}"] * 4)])
    loop = loop_for(consumer, Process(consumer, fail_on=2))
    with pytest.raises(OSError, match="Cassandra write failed"):
        loop.run(threading.Event())
    assert consumer.commits() == [{(TOPIC, 0): 2, (TOPIC, 1): 2}]  # batch 1 only
    assert consumer.closed  # the group gets the partitions back; the next owner replays


class Outage(Process):
    """Cassandra down for the first ``failures`` attempts (``errors`` cycled), then back."""

    def __init__(self, consumer: FakeConsumer, failures: int, errors=None, **kw) -> None:
        super().__init__(consumer, **kw)
        self.failures = failures
        self.errors = errors or [WriteFailed("cannot write to ks.predictions", 0, ["k"])]

    def __call__(self, batch) -> BatchResult:
        if self.failures > 0:
            self.failures -= 1
            self.consumer.log.append(("store down", len(batch)))
            raise self.errors[self.failures % len(self.errors)]
        return super().__call__(batch)


def test_a_cassandra_outage_is_waited_out_and_the_batch_committed_after_it():
    from cassandra.cluster import NoHostAvailable

    stop = threading.Event()
    consumer = FakeConsumer(batches=[messages([b"{}"] * 4)])
    errors = [StoreUnavailable("cannot reach Cassandra"), NoHostAvailable("no host", {})]
    loop = loop_for(consumer, Outage(consumer, 5, errors, stop_after=1, stop=stop))
    loop.run(stop)
    steps = [e[0] for e in consumer.log if e[0] != "consume"]
    assert steps == ["store down"] * 5 + ["write start", "writes done", "commit", "close"]
    assert consumer.commits() == [{(TOPIC, 0): 2, (TOPIC, 1): 2}]
    assert loop.stats.store_retries == 5 and loop.stats.batches == 1


def test_an_outage_longer_than_store_outage_max_s_fails_the_consumer_uncommitted():
    consumer = FakeConsumer(batches=[messages([b"{}"] * 4)])
    loop = loop_for(consumer, Outage(consumer, 10**9), store_outage_max_s=0.05)
    # The seconds waited are the machine's (the first outage check imports the driver).
    with pytest.raises(StoreUnavailable, match=r"still unavailable after \d+ s \("
                       r"store_outage_max_s 0\.05\): cannot write to ks\.predictions"):  # fmt: skip
        loop.run(threading.Event())
    assert consumer.commits() == [] and consumer.closed and loop.stats.store_retries > 1


def test_rows_the_store_refused_for_good_fail_the_batch_at_once_not_as_an_outage():
    import pyarrow as pa

    refused = WriteFailed("Key length of 70000 is longer than maximum", 3, ["k"],
                          retry_rows=pa.table({"k": pa.array([], pa.string())}),
                          refused_rows=pa.table({"k": ["k"]}))  # fmt: skip
    consumer = FakeConsumer(batches=[messages([b"{}"] * 4)])
    loop = loop_for(consumer, Outage(consumer, 10**9, [refused]), store_outage_max_s=60)
    with pytest.raises(WriteFailed, match="Key length"):
        loop.run(threading.Event())
    assert loop.stats.store_retries == 0 and consumer.commits() == []


def test_a_stop_while_waiting_for_cassandra_leaves_the_batch_uncommitted():
    stop = threading.Event()
    consumer = FakeConsumer(batches=[messages([b"{}"] * 4)])

    class StopDuringOutage(Outage):
        def __call__(self, batch):
            stop.set()
            return super().__call__(batch)

    loop = loop_for(consumer, StopDuringOutage(consumer, 10**9), backoff_s=(30.0, 30.0))
    loop.run(stop)  # returns at once: stop interrupts the 30 s wait
    assert consumer.commits() == [] and consumer.closed
    assert loop.stats.batches == 0 and loop.stats.store_retries == 1


def test_restarts_are_budgeted_per_sliding_window():
    now = [0.0]
    budget = RestartBudget(limit=2, window_s=60.0, clock=lambda: now[0])
    assert budget.spend() and budget.spend()
    assert not budget.spend()  # a third crash within the minute ends the job
    now[0] = 60.0  # the first two leave the window
    assert budget.spend() and budget.spend() and not budget.spend()
    now[0] = 1000.0
    assert all(budget.spend() for _ in range(2))
    assert not RestartBudget(limit=0, window_s=60.0).spend()


def test_a_refused_commit_is_kept_and_retried_never_dropped():
    consumer = FakeConsumer(batches=[messages([b"{}"] * 4)], refuse_commits=1)
    loop = run_batches(consumer, 1)
    assert loop.stats.commit_retries == 1
    assert consumer.commits() == [{(TOPIC, 0): 2, (TOPIC, 1): 2}]  # retried before close


def test_a_commit_error_that_is_not_retriable_stops_the_consumer():
    consumer = FakeConsumer(batches=[messages([b"{}"] * 4)], fatal_commit=True)
    with pytest.raises(StreamError, match="committing offsets"):
        run_batches(consumer, 1)


def test_revocation_commits_what_is_done_for_the_revoked_partitions():
    consumer = FakeConsumer(batches=[messages([b"{}"] * 4)], refuse_commits=1)
    loop = loop_for(consumer, Process(consumer))
    loop.on_assign(consumer, [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
    # Written; its commit is refused (a rebalance).
    loop._run_batch(consumer.batches.pop(0), threading.Event())
    assert consumer.commits() == []
    loop.on_revoke(consumer, [TopicPartition(TOPIC, 1)])
    assert consumer.commits() == [{(TOPIC, 1): 2}]  # only what was revoked
    assert loop.stats.assigned == [0] and loop.stats.revocations == 1
    loop.on_revoke(consumer, [TopicPartition(TOPIC, 0)])
    assert consumer.commits()[-1] == {(TOPIC, 0): 2}


def test_lost_partitions_are_not_committed():
    consumer = FakeConsumer(batches=[messages([b"{}"] * 4)], refuse_commits=1)
    loop = loop_for(consumer, Process(consumer))
    loop._run_batch(consumer.batches.pop(0), threading.Event())
    loop.on_lost(consumer, [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
    loop.run(_set(threading.Event()))  # nothing pending is committed at close either
    assert consumer.commits() == [] and consumer.closed


def test_revoked_or_lost_partitions_drop_the_keyed_state_after_committing():
    # The batch's own commit is refused (a rebalance under way), so the revocation has
    # partition 1's offset to commit, and must do so before the state is dropped.
    consumer = FakeConsumer(batches=[messages([b"{}"] * 4)], refuse_commits=1)
    moved: list[list] = []
    loop = loop_for(consumer, Process(consumer),
                    on_partitions_moved=lambda: moved.append(list(consumer.commits())))
    loop.on_assign(consumer, [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
    loop._run_batch(consumer.batches.pop(0), threading.Event())
    assert moved == []  # a batch alone keeps the state
    loop.on_revoke(consumer, [TopicPartition(TOPIC, 1)])
    assert len(moved) == 1 and moved[0] == [{(TOPIC, 1): 2}]  # after the commit
    loop.on_lost(consumer, [TopicPartition(TOPIC, 0)])
    assert len(moved) == 2


def test_a_partition_revoked_while_its_batch_is_collected_is_left_to_its_new_owner():
    # The first message (partition 0) arrives; draining the rest of the batch serves a
    # rebalance that revokes partition 0. Its messages are the new owner's: neither
    # scored here nor committed (a stale commit could move the new owner's offset back).
    consumer = FakeConsumer(batches=[messages([b"{}"] * 4)])
    stop = threading.Event()
    loop = loop_for(consumer, Process(consumer, stop_after=1, stop=stop))
    loop.on_assign(consumer, [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
    revoke = [TopicPartition(TOPIC, 0)]
    consumer.on_drain = lambda: revoke and loop.on_revoke(consumer, [revoke.pop()])
    loop.run(stop)
    assert ("write start", 2) in consumer.log and loop.stats.messages == 2
    assert consumer.commits() == [{(TOPIC, 1): 2}]


def _set(event: threading.Event) -> threading.Event:
    event.set()
    return event


def test_stop_finishes_the_batch_in_flight_then_closes():
    stop = threading.Event()
    consumer = FakeConsumer(batches=[messages([b"{}"] * 4) for _ in range(5)])
    consumer.on_consume = lambda call: stop.set() if call == 2 else None  # stop mid-poll
    loop = loop_for(consumer, Process(consumer))
    loop.run(stop)
    assert loop.stats.batches == 2 and len(consumer.commits()) == 2
    assert consumer.consumed_calls == 2 and consumer.log[-1] == ("close",)


def test_sigterm_finishes_the_batch_in_flight_commits_and_exits():
    stop = threading.Event()
    before = signal.getsignal(signal.SIGTERM)
    restore = install_stop_signals(stop)
    try:
        consumer = FakeConsumer(batches=[messages([b"{}"] * 4) for _ in range(5)])
        # SIGTERM arrives while the second batch is being polled.
        consumer.on_consume = lambda call: os.kill(os.getpid(), signal.SIGTERM) if call == 2 \
            else None  # fmt: skip
        loop = loop_for(consumer, Process(consumer))
        loop.run(stop)
    finally:
        restore()
    assert stop.is_set()
    steps = [e[0] for e in consumer.log]
    assert steps == ["consume", "write start", "writes done", "commit",
                     "consume", "write start", "writes done", "commit", "close"]  # fmt: skip
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_test_hold_keeps_a_written_batch_uncommitted_until_released(monkeypatch, tmp_path):
    """$SLUICE_TESTING_HOLD_COMMITS (the crash tests' fault injection): while its file
    exists, a batch whose writes are done waits before its commit."""
    hold = tmp_path / "hold"
    hold.touch()
    monkeypatch.setenv(HOLD_COMMITS_ENV, str(hold))
    consumer = FakeConsumer(batches=[messages([b"{}"] * 4), messages([b"{}"] * 2)])
    exists = os.path.exists

    def held(path) -> bool:  # held for two checks, released at the third
        if str(path) != str(hold):
            return exists(path)
        consumer.log.append(("hold checked",))
        if sum(1 for e in consumer.log if e == ("hold checked",)) == 3:
            hold.unlink()
        return exists(path)

    monkeypatch.setattr(os.path, "exists", held)
    run_batches(consumer, 2)
    steps = [e[0] for e in consumer.log if e[0] != "consume"]
    checked = "hold checked"
    assert steps == ["write start", "writes done", checked, checked, checked, "commit",
                     "write start", "writes done", checked, "commit", "close"]  # fmt: skip


def test_signal_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    restore = install_stop_signals(threading.Event())
    assert signal.getsignal(signal.SIGTERM) is not before
    restore()
    assert signal.getsignal(signal.SIGTERM) is before


def test_metrics_follow_the_batches():
    from sluice.metrics import CONSUMER_LAG, EVENT_LATENCY_SECONDS

    before = EVENT_LATENCY_SECONDS.value(job="unit")
    consumer = FakeConsumer(batches=[messages([b"{}"] * 4)], high_watermark=10)
    run_batches(consumer, 1)
    assert EVENT_LATENCY_SECONDS.value(job="unit") == before + 4  # one per message
    # Lag per partition: high watermark (10) - committed (2); 0 when the partition goes.
    loop = loop_for(consumer, Process(consumer))
    loop.on_assign(consumer, [TopicPartition(TOPIC, 0)])
    loop._committed[(TOPIC, 0)] = 2
    loop._report_lag()
    assert CONSUMER_LAG.value(job="unit", topic=TOPIC, partition="0") == 8
    loop.on_revoke(consumer, [TopicPartition(TOPIC, 0)])
    assert CONSUMER_LAG.value(job="unit", topic=TOPIC, partition="0") == 0
