"""The FeatureStore protocol and its in-memory implementation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from sluice.features import (
    STORE_SCHEMA,
    FeatureSpec,
    FeatureStore,
    InMemoryFeatureStore,
    to_store_events,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SPEC = FeatureSpec.model_validate(
    {
        "aggregates": {
            "entity_column": "card_id",
            "event_time_column": "event_time",
            "key_column": "transaction_id",
        }
    }
)


def _events(rows: list[tuple[str, int, str, float]]) -> pa.Table:
    entity, seconds, key, amount = zip(*rows, strict=True)
    return pa.Table.from_arrays(
        [
            pa.array(entity, pa.string()),
            pa.array([T0 + timedelta(seconds=s) for s in seconds], STORE_SCHEMA[1].type),
            pa.array(key, pa.string()),
            pa.array(amount, pa.float64()),
        ],
        schema=STORE_SCHEMA,
    )


def test_in_memory_store_satisfies_the_protocol():
    assert isinstance(InMemoryFeatureStore(), FeatureStore)


def test_history_is_entity_and_half_open_time_range():
    store = InMemoryFeatureStore()
    store.record(
        _events(
            [("a", 0, "k1", 1.0), ("a", 10, "k2", 2.0), ("b", 5, "k3", 3.0), ("a", 20, "k4", 4.0)]
        )
    )
    got = store.history(["a"], T0, T0 + timedelta(seconds=20))
    assert got.schema == STORE_SCHEMA
    assert sorted(got["key"].to_pylist()) == ["k1", "k2"]  # start inclusive, end exclusive
    got = store.history(pa.array(["a", "b"]), T0 + timedelta(seconds=5), T0 + timedelta(hours=1))
    assert sorted(got["key"].to_pylist()) == ["k2", "k3", "k4"]
    assert store.history([], T0, T0 + timedelta(days=1)).num_rows == 0


def test_recording_a_key_again_is_an_upsert():
    store = InMemoryFeatureStore()
    batch = _events([("a", 0, "k1", 1.0), ("a", 1, "k2", 2.0)])
    store.record(batch)
    store.record(batch)
    assert len(store) == 2
    store.record(_events([("a", 0, "k1", 9.0), ("a", 2, "k3", 3.0), ("a", 2, "k3", 4.0)]))
    rows = {r["key"]: r["amount"] for r in store.history(["a"], T0, T0 + timedelta(1)).to_pylist()}
    assert rows == {"k1": 9.0, "k2": 2.0, "k3": 4.0}  # last write of a key wins


def test_record_refuses_tables_without_store_columns():
    with pytest.raises(ValueError, match="to_store_events"):
        InMemoryFeatureStore().record(pa.table({"card_id": ["a"]}))


def test_to_store_events_maps_contract_columns():
    table = pa.table(
        {
            "transaction_id": ["t1", "t2"],
            "card_id": ["c1", "c2"],
            "amount": [1.5, 2.5],
            "event_time": pa.array([T0, T0], pa.timestamp("ms", tz="UTC")),
            "other": [1, 2],
        }
    )
    events = to_store_events(table, SPEC)
    assert events.schema == STORE_SCHEMA
    assert events.to_pylist()[1] == {"entity": "c2", "event_time": T0, "key": "t2", "amount": 2.5}


def test_to_store_events_refuses_null_keys_and_specs_without_aggregates():
    table = pa.table(
        {
            "transaction_id": ["t1", None],
            "card_id": ["c1", "c2"],
            "amount": [1.5, 2.5],
            "event_time": pa.array([T0, T0], pa.timestamp("us", tz="UTC")),
        }
    )
    with pytest.raises(ValueError, match="'transaction_id' has 1 null"):
        to_store_events(table, SPEC)
    with pytest.raises(ValueError, match="no aggregates"):
        to_store_events(table, FeatureSpec(passthrough=("amount",)))
