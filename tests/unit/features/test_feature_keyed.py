"""KeyedFeatureStore: the same features as its backing store, one load per card, late
events counted, memory bounded, every write flushed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from sluice.features import (
    STORE_SCHEMA,
    AggregateSpec,
    InMemoryFeatureStore,
    KeyedFeatureStore,
    entity_aggregates,
    from_micros,
)

AGG = AggregateSpec(entity_column="card_id", event_time_column="event_time",
                    key_column="transaction_id", windows_s=(3600, 86_400),
                    max_lookback_s=86_400)  # fmt: skip
T0 = datetime(2024, 1, 1, tzinfo=UTC)
FAR = datetime(2100, 1, 1, tzinfo=UTC)


def events(rows: list[tuple[str, float, str, float]]) -> pa.Table:
    """(entity, seconds after T0, key, amount) rows as STORE_SCHEMA."""
    return pa.Table.from_pylist(
        [{"entity": e, "event_time": T0 + timedelta(seconds=s), "key": k, "amount": a}
         for e, s, k, a in rows], schema=STORE_SCHEMA)  # fmt: skip


class Counting(InMemoryFeatureStore):
    """An in-memory backing store that counts reads (entities asked for) and writes."""

    def __init__(self) -> None:
        super().__init__()
        self.entities_read: list[str] = []
        self.writes = 0
        self.fail_writes = 0

    def history(self, entities, start, end):
        self.entities_read.extend(entities)
        return super().history(entities, start, end)

    def record(self, events):
        if self.fail_writes:
            self.fail_writes -= 1
            raise ConnectionError("store down")
        self.writes += 1
        super().record(events)


class TimeKeyed(InMemoryFeatureStore):
    """Keyed like the Cassandra table, by (entity, event time, key): an id recorded at two
    times is two rows, and history comes back in (entity, time, key) order."""

    def record(self, events):
        rows = {(r["entity"], r["event_time"], r["key"]): r
                for r in [*self._events.to_pylist(), *events.to_pylist()]}  # fmt: skip
        self._events = pa.Table.from_pylist([rows[k] for k in sorted(rows)], schema=STORE_SCHEMA)


def features(store, batch: pa.Table) -> np.ndarray:
    """What the Scorer does: record the batch, then compute its aggregates from the store."""
    store.record(batch)
    t = batch["event_time"].cast(pa.int64()).to_numpy()
    start = from_micros(int(t.min()) - AGG.horizon_s * 1_000_000)
    end = from_micros(int(t.max()) + 1)
    history = store.history(batch["entity"].unique(), start, end)
    return entity_aggregates(history, batch, AGG)


def stream_of(n: int, cards: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.uniform(0, 5 * 86_400, n))
    return events([(f"c{rng.integers(cards)}", float(s), f"k{i}", float(rng.gamma(2, 30)))
                   for i, s in enumerate(seconds)])  # fmt: skip


def test_features_equal_the_backing_stores_and_every_event_is_written():
    data = stream_of(3000, cards=40, seed=1)
    direct, backing = InMemoryFeatureStore(), Counting()
    state = KeyedFeatureStore(backing, AGG)
    for start in range(0, data.num_rows, 137):  # micro-batches in arrival order
        batch = data.slice(start, 137)
        got = features(state, batch)
        state.flush()
        np.testing.assert_array_equal(got, features(direct, batch))  # bit-identical
    assert len(backing) == data.num_rows
    assert state.late_events == 0
    assert sorted(set(backing.entities_read)) == sorted(set(data["entity"].to_pylist()))
    assert len(backing.entities_read) == 40  # each card read once, on first sight


def test_history_stored_before_the_consumer_started_is_loaded_once():
    backing = Counting()
    backing.record(events([("c1", 0, "old1", 5.0), ("c1", 60, "old2", 7.0)]))
    state = KeyedFeatureStore(backing, AGG)
    first = features(state, events([("c1", 120, "n1", 1.0)]))
    second = features(state, events([("c1", 180, "n2", 1.0)]))
    state.flush()
    assert first[0, 0] == 2 and first[0, 1] == 12.0  # count, sum in the hour
    assert second[0, 0] == 3 and second[0, 1] == 13.0
    assert backing.entities_read == ["c1"]


def test_an_event_id_stored_twice_counts_as_the_backing_stores_last_row_after_a_load():
    # "k" was stored at 10 s and again at 20 s (an id re-used: the store keeps both rows);
    # read directly, the later row counts (entity_aggregates keeps a key's last row), and a
    # consumer loading the card must count the same one.
    backing = TimeKeyed()
    backing.record(events([("c1", 10, "k", 5.0), ("c1", 20, "k", 7.0)]))
    query = events([("c1", 100, "q", 1.0)])
    direct = features(backing, query)
    loaded = features(KeyedFeatureStore(backing, AGG), query)
    np.testing.assert_array_equal(loaded, direct)
    assert direct[0, -1] == 80.0  # seconds since the previous event: the one at 20 s


def test_a_late_event_is_counted_and_sees_its_earlier_events_only():
    state = KeyedFeatureStore(InMemoryFeatureStore(), AGG)
    features(state, events([("c1", 0, "a", 1.0), ("c1", 600, "c", 4.0)]))
    late = features(state, events([("c1", 300, "b", 2.0)]))
    assert state.late_events == 1
    assert late[0, 0] == 1 and late[0, 1] == 1.0  # only "a" is before it
    features(state, events([("c1", 300, "b", 2.0)]))  # a replay of it: not late again
    features(state, events([("c2", 50, "x", 1.0), ("c2", 10, "y", 1.0)]))  # one batch
    assert state.late_events == 1  # out of order inside a batch: both scored with both


def test_an_event_older_than_memory_reloads_its_card():
    backing = Counting()
    state = KeyedFeatureStore(backing, AGG, lateness_s=0)
    day = 86_400
    features(state, events([("c1", 0, "a", 1.0)]))
    features(state, events([("c1", 10 * day, "b", 1.0)]))
    features(state, events([("c1", 20 * day, "c", 1.0)]))  # memory pruned up to day 19
    assert [k for k, _ in state._cards["c1"].events.items()] == ["c"]
    got = features(state, events([("c1", 10 * day + 60, "d", 3.0)]))  # reaches day 9
    state.flush()
    assert got[0, 0] == 1 and got[0, 1] == 1.0  # "b", read back from the backing store
    assert backing.entities_read == ["c1", "c1"]


def test_least_recently_used_cards_are_dropped_and_reloaded_exactly():
    backing = Counting()
    state = KeyedFeatureStore(backing, AGG, max_entities=2)
    for i, card in enumerate(["c1", "c2", "c3"]):
        features(state, events([(card, i, f"{card}a", 1.0)]))
    assert state.entities == 2 and "c1" not in state._cards
    got = features(state, events([("c1", 100, "c1b", 1.0)]))
    state.flush()
    assert got[0, 0] == 1  # c1's first event, reloaded
    assert backing.entities_read.count("c1") == 2


def test_flush_raises_a_failed_write_and_a_retry_writes_it():
    backing = Counting()
    backing.fail_writes = 1
    state = KeyedFeatureStore(backing, AGG)
    batch = events([("c1", 0, "a", 1.0)])
    state.record(batch)
    with pytest.raises(ConnectionError, match="store down"):
        state.flush()
    state.record(batch)  # the consumer retries its batch
    state.flush()
    assert len(backing) == 1


def test_forget_drops_the_state_and_reloads_what_another_consumer_wrote():
    backing = Counting()
    state = KeyedFeatureStore(backing, AGG)
    features(state, events([("c1", 0, "a", 1.0)]))
    state.flush()
    backing.record(events([("c1", 60, "b", 2.0)]))  # the partition's owner for a while
    state.forget()
    got = features(state, events([("c1", 120, "c", 4.0)]))
    assert got[0, 0] == 2 and got[0, 1] == 3.0


def test_an_empty_state_is_still_a_state():
    """``x or default`` must never swap an empty state for another store."""
    state = KeyedFeatureStore(InMemoryFeatureStore(), AGG)
    assert state and state.entities == 0


def test_history_outside_the_window_asked_for_is_left_out():
    state = KeyedFeatureStore(InMemoryFeatureStore(), AGG)
    state.record(events([("c1", 0, "a", 1.0), ("c1", 100, "b", 2.0), ("c2", 50, "x", 3.0)]))
    got = state.history(["c1"], T0 + timedelta(seconds=50), T0 + timedelta(seconds=100))
    assert got.num_rows == 0
    got = state.history(["c1", "c2"], T0, FAR)
    assert sorted(got["key"].to_pylist()) == ["a", "b", "x"]
    assert got.schema == STORE_SCHEMA
