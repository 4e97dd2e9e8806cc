"""CassandraFeatureStore gives the same history and features as the in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sluice.contract import load_contract
from sluice.datagen import generate_transactions
from sluice.features import (
    STORE_SCHEMA,
    FeatureStore,
    InMemoryFeatureStore,
    compute_features,
    fit_stats,
    to_store_events,
)
from sluice.store import CassandraFeatureStore, apply_schema, session_for

pytestmark = pytest.mark.integration

N, CARDS = 5_000, 150


def by_key(t: pa.Table) -> pa.Table:
    return t.sort_by([("key", "ascending")])


@pytest.fixture(scope="module")
def stores(store_cfg):
    contract = load_contract("fraud")
    apply_schema(session_for(store_cfg), store_cfg, [contract])
    # Few cards, a few days: many events per card inside the 1 h and 24 h windows.
    table = generate_transactions(N, seed=11, n_cards=CARDS, duration_s=3 * 86_400)
    events = to_store_events(table, contract.features)
    cassandra = CassandraFeatureStore.for_contract(store_cfg, contract)
    memory = InMemoryFeatureStore()
    cassandra.record(events)
    memory.record(events)
    return contract, table, events, cassandra, memory


def test_it_is_a_feature_store(stores) -> None:
    assert isinstance(stores[3], FeatureStore)


def test_history_equals_the_in_memory_history(stores) -> None:
    _, _, events, cassandra, memory = stores
    entities = pc.unique(events["entity"]).to_pylist()[:60] + ["card_999999"]
    times = events["event_time"].to_pylist()
    start, end = times[N // 4], times[3 * N // 4]  # bounds on real event times
    got, want = cassandra.history(entities, start, end), memory.history(entities, start, end)
    assert got.schema == STORE_SCHEMA
    assert got.num_rows > 100
    assert by_key(got).equals(by_key(want))
    # start is inclusive, end exclusive, to the microsecond
    assert pc.min(got["event_time"]).as_py() >= start and pc.max(got["event_time"]).as_py() < end
    assert cassandra.history(pa.array(entities), start, start).num_rows == 0
    assert cassandra.history([], start, end).num_rows == 0


def test_features_from_cassandra_equal_the_in_memory_ones(stores) -> None:
    contract, table, _, cassandra, memory = stores
    stats = fit_stats(table, contract.features)
    got = compute_features(table, contract.features, stats, cassandra)
    want = compute_features(table, contract.features, stats, memory)
    assert got.names == want.names
    agg = [i for i, n in enumerate(got.names) if n.startswith("card_")]
    assert agg and np.count_nonzero(got.values[:, agg]) > N  # aggregates are not all zero
    np.testing.assert_array_equal(got.values, want.values)


def test_recording_every_event_twice_changes_nothing(stores, store_cfg) -> None:
    contract, table, events, cassandra, memory = stores
    stats = fit_stats(table, contract.features)
    before = compute_features(table, contract.features, stats, cassandra)
    cassandra.record(events)
    cassandra.record(events.slice(0, 1000))
    entities = pc.unique(events["entity"])
    t0, t1 = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    everything = cassandra.history(entities, t0, t1)
    assert everything.num_rows == N
    assert by_key(everything).equals(by_key(memory.history(entities, t0, t1)))
    after = compute_features(table, contract.features, stats, cassandra)
    np.testing.assert_array_equal(before.values, after.values)


def test_rows_carry_the_ttl(stores, store_cfg) -> None:
    contract, _, events, cassandra, _ = stores
    key = events["key"][0].as_py()
    ttl = session_for(store_cfg).execute(
        f"SELECT TTL(amount) FROM {store_cfg.keyspace}.{cassandra.table} WHERE entity = %s",
        (events["entity"][0].as_py(),),
    ).one()[0]
    horizon = contract.features.aggregates.horizon_s
    assert horizon + 86_400 - 120 < ttl <= horizon + 86_400, (key, ttl)
    assert timedelta(seconds=ttl) > timedelta(days=1)


def test_a_card_with_more_events_than_one_batch_holds_keeps_them_all(stores, store_cfg) -> None:
    """Events go as unlogged batches of one card's events (EVENTS_PER_BATCH at most): a card
    with 200 events in one record() call spans four batches, and every event is stored."""
    from sluice.store._features import EVENTS_PER_BATCH

    contract = stores[0]
    table = generate_transactions(200, seed=12, n_cards=1, duration_s=86_400)
    events = to_store_events(table, contract.features)
    assert events.num_rows > 3 * EVENTS_PER_BATCH
    assert pc.unique(events["entity"]).to_pylist() == [events["entity"][0].as_py()]
    cassandra = CassandraFeatureStore.for_contract(store_cfg, contract)
    memory = InMemoryFeatureStore()
    cassandra.record(events)
    memory.record(events)
    card = events["entity"][0].as_py()
    times = events["event_time"].to_pylist()
    start, end = min(times), max(times) + timedelta(seconds=1)
    got = cassandra.history([card], start, end)
    assert got.num_rows == events.num_rows
    assert by_key(got).equals(by_key(memory.history([card], start, end)))


def test_events_of_many_cards_share_requests_and_are_all_stored(stores, store_cfg,
                                                                 monkeypatch) -> None:  # fmt: skip
    """Cards with one or two events each in a record() call (a batch job's input in file
    order, a stream's micro-batch) go as unlogged batches of cards on the same replicas, a
    card's events together, EVENTS_PER_BATCH rows and BATCH_PARTITIONS cards at most: a
    request per ten cards, not one per card. Every event is stored."""
    from sluice.store import _writer
    from sluice.store._features import EVENTS_PER_BATCH
    from sluice.store._writer import BATCH_PARTITIONS

    contract = stores[0]
    table = generate_transactions(600, seed=13, n_cards=2_000, duration_s=86_400)
    events = to_store_events(table, contract.features)
    cards = pc.unique(events["entity"]).to_pylist()
    assert len(cards) > 300
    sent: list[int] = []  # rows per request
    covered: list[int] = []  # cards (partitions) per request
    real = _writer.run_with_retries

    def counted(session, statement, params, **kw):
        for batch in params:
            rows = batch._statements_and_parameters
            sent.append(len(rows))
            covered.append(len({values[0] for _, _, values in rows}))  # the entity
        return real(session, statement, params, **kw)

    monkeypatch.setattr(_writer, "run_with_retries", counted)
    cassandra = CassandraFeatureStore.for_contract(store_cfg, contract)
    cassandra.record(events)
    assert sum(sent) == events.num_rows
    assert max(sent) <= EVENTS_PER_BATCH and max(covered) <= BATCH_PARTITIONS
    assert sum(covered) == len(cards)  # a card's events in one request
    assert len(sent) <= -(-len(cards) // BATCH_PARTITIONS) + 1, len(sent)  # not ~400
    times = events["event_time"].to_pylist()
    start, end = min(times), max(times) + timedelta(seconds=1)
    memory = InMemoryFeatureStore()
    memory.record(events)
    assert by_key(cassandra.history(cards, start, end)).equals(
        by_key(memory.history(cards, start, end)))
