"""``CheckpointMirror``: the committed offsets reach ``stream_checkpoints`` off the batch's
path, coalesced to at most one write per interval, and nothing given to it is lost."""

from __future__ import annotations

import threading

import pytest

from sluice.errors import StoreUnavailable
from sluice.jobs import StreamJob
from sluice.stream._consumer import CheckpointMirror

JOB = StreamJob(name="j", contract="fraud", topic="t")


class Checkpoints:
    """Records each write; fails the writes a test queues an error for."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str, dict[int, int]]] = []
        self.errors: list[BaseException] = []
        self.entered = threading.Event()  # a write has started
        self.release = threading.Event()  # lets a held write finish
        self.release.set()
        self._written = threading.Condition()

    def commit(self, job: str, topic: str, offsets: dict[int, int]) -> None:
        self.entered.set()
        self.release.wait()
        if self.errors:
            raise self.errors.pop(0)
        with self._written:
            self.writes.append((job, topic, dict(offsets)))
            self._written.notify_all()

    def wait_writes(self, n: int, timeout_s: float = 10.0) -> bool:
        with self._written:
            return self._written.wait_for(lambda: len(self.writes) >= n, timeout_s)


def commit(mirror: CheckpointMirror, **offsets: int) -> None:
    mirror({("t", int(p[1:])): o for p, o in offsets.items()})


def test_commits_within_the_interval_are_written_once_with_the_latest_offsets():
    store = Checkpoints()
    mirror = CheckpointMirror(store, JOB, interval_s=3600)
    commit(mirror, p0=10, p1=5)
    assert store.wait_writes(1)  # the first write goes at once
    for offset in range(11, 20):
        commit(mirror, p0=offset)
    commit(mirror, p2=7)
    assert store.writes == [("j", "t", {0: 10, 1: 5})]  # the rest waits out the interval
    mirror.close()  # ... or the end of the consumer
    assert store.writes == [("j", "t", {0: 10, 1: 5}), ("j", "t", {0: 19, 2: 7})]


def test_an_idle_consumers_last_commit_is_written_after_the_interval():
    store = Checkpoints()
    mirror = CheckpointMirror(store, JOB, interval_s=0.05)
    commit(mirror, p0=1)
    assert store.wait_writes(1)
    commit(mirror, p0=2)  # no commit follows: the mirror's own timer writes it
    assert store.wait_writes(2)
    assert store.writes == [("j", "t", {0: 1}), ("j", "t", {0: 2})]
    mirror.close()
    assert len(store.writes) == 2  # nothing left to write


def test_commits_made_while_a_write_is_in_flight_go_together_in_the_next():
    store = Checkpoints()
    store.release.clear()
    mirror = CheckpointMirror(store, JOB, interval_s=0)
    commit(mirror, p0=1)
    assert store.entered.wait(10)  # the first write is in flight, held
    commit(mirror, p0=2)
    commit(mirror, p1=3)
    store.release.set()
    mirror.close()
    assert store.writes == [("j", "t", {0: 1}), ("j", "t", {0: 2, 1: 3})]


def test_an_outage_keeps_the_offsets_for_the_next_write():
    store = Checkpoints()
    store.errors.append(StoreUnavailable("Cassandra is down"))
    mirror = CheckpointMirror(store, JOB, interval_s=3600)
    commit(mirror, p0=1, p1=1)
    mirror.flush()  # failed: logged, kept
    assert store.writes == []
    commit(mirror, p0=2)  # no error raised: an outage is not the batch's failure
    mirror.close()
    assert store.writes == [("j", "t", {0: 2, 1: 1})]  # newer offsets win, none dropped


def test_any_other_write_error_raises_at_the_next_commit():
    store = Checkpoints()
    store.errors.append(ValueError("bad value"))
    mirror = CheckpointMirror(store, JOB, interval_s=0)
    commit(mirror, p0=1)
    mirror.flush()
    with pytest.raises(ValueError, match="bad value"):
        commit(mirror, p0=2)
    mirror.close()
    assert store.writes == [("j", "t", {0: 2})]  # the commit that raised was still kept


def test_close_writes_what_is_left_at_once_and_logs_a_failure(caplog):
    store = Checkpoints()
    mirror = CheckpointMirror(store, JOB, interval_s=3600)
    commit(mirror, p0=1)
    mirror.flush()
    store.errors.append(StoreUnavailable("Cassandra is down"))
    commit(mirror, p0=2)
    mirror.close()  # does not wait out the interval, does not raise
    assert store.writes == [("j", "t", {0: 1})]
    assert "checkpoint mirror not updated" in caplog.text
