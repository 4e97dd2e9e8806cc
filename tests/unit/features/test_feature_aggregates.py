"""Entity aggregates: equal to a plain-Python reference, point-in-time, replay-safe."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sluice.datagen import generate_transactions
from sluice.features import (
    STORE_SCHEMA,
    AggregateSpec,
    FeatureSpec,
    InMemoryFeatureStore,
    compute_features,
    entity_aggregates,
    fit_stats,
    to_store_events,
)

AGG = AggregateSpec(
    entity_column="card_id", event_time_column="event_time", key_column="transaction_id"
)
SPEC = FeatureSpec(passthrough=("amount",), aggregates=AGG)
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def reference(history: pa.Table, queries: pa.Table, spec: AggregateSpec) -> np.ndarray:
    """The rule, written as plainly as possible (loops allowed here, in tests only)."""
    latest: dict[str, dict] = {}
    for row in history.to_pylist():  # the same key twice counts once: last row wins
        latest[row["key"]] = row
    by_entity: dict[str, list[tuple]] = defaultdict(list)
    for row in latest.values():
        by_entity[row["entity"]].append((row["event_time"], row["key"], row["amount"]))
    out = []
    for q in queries.to_pylist():
        t, k = q["event_time"], q["key"]
        before = sorted(e for e in by_entity[q["entity"]] if (e[0], e[1]) < (t, k))
        row = []
        for w in spec.windows_s:
            inside = [e for e in before if e[0] >= t - timedelta(seconds=w)]
            total = 0.0
            for e in inside:
                total += e[2]
            for fn in spec.functions:
                row.append(
                    {
                        "count": len(inside),
                        "sum": total,
                        "mean": total / len(inside) if inside else 0.0,
                    }[fn]
                )
        if spec.seconds_since_previous:
            gap = (t - before[-1][0]).total_seconds() if before else spec.max_lookback_s
            row.append(min(gap, spec.max_lookback_s))
        out.append(row)
    return np.array(out, dtype=np.float64).reshape(len(out), len(spec.feature_names))


def _events(n: int, seed: int, *, n_cards: int, tick_s: int) -> pa.Table:
    """Generated transactions with times floored to ``tick_s``: many exact-time ties."""
    table = generate_transactions(n, seed, n_cards=n_cards, duration_s=3 * 86400)
    us = table["event_time"].cast(pa.int64()).to_numpy()
    floored = pa.array(us - us % (tick_s * 1_000_000), pa.timestamp("us", tz="UTC"))
    return table.set_column(table.schema.get_field_index("event_time"), "event_time", floored)


def _recorded(*tables: pa.Table) -> InMemoryFeatureStore:
    store = InMemoryFeatureStore()
    for t in tables:
        store.record(to_store_events(t, SPEC))
    return store


def _features(table: pa.Table, store: InMemoryFeatureStore) -> np.ndarray:
    return compute_features(table, SPEC, fit_stats(table, SPEC), store).values


@pytest.mark.parametrize("seed, tick_s", [(1, 1), (2, 60), (3, 600)])
def test_aggregates_equal_the_reference_on_generated_events(seed, tick_s):
    table = _events(1500, seed, n_cards=40, tick_s=tick_s)
    events = to_store_events(table, SPEC)
    got = entity_aggregates(events, events, AGG)
    want = reference(events, events, AGG)
    assert got.shape == (1500, 7)
    np.testing.assert_array_equal(got[:, [0, 3]], want[:, [0, 3]])  # counts are exact
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    assert (want[:, 0] > 0).mean() > 0.3  # the windows are not trivially empty
    # Timestamp ties happen, so the key rule is exercised.
    assert len(
        pc.unique(
            pc.binary_join_element_wise(
                events["entity"], events["event_time"].cast(pa.string()), "|"
            )
        )
    ) < len(events)


def test_compute_features_equals_reference_after_recording():
    table = _events(800, 7, n_cards=25, tick_s=30)
    store = _recorded(table)
    events = to_store_events(table, SPEC)
    got = _features(table, store)
    np.testing.assert_allclose(got[:, 1:], reference(events, events, AGG), rtol=1e-6)
    np.testing.assert_array_equal(got[:, 0], table["amount"].to_numpy().astype(np.float32))


def _store_table(rows: list[tuple[str, int, str, float]]) -> pa.Table:
    entity, seconds, key, amount = zip(*rows, strict=True)
    times = [T0 + timedelta(seconds=s) for s in seconds]
    return pa.Table.from_arrays(
        [
            pa.array(entity, pa.string()),
            pa.array(times, pa.timestamp("us", tz="UTC")),
            pa.array(key, pa.string()),
            pa.array(amount, pa.float64()),
        ],
        schema=STORE_SCHEMA,
    )


def test_window_edges_and_equal_timestamp_rule():
    """[t - w, t) by time; at exactly t only smaller keys count; never the event itself."""
    agg = AggregateSpec(**{**AGG.model_dump(), "windows_s": (3600,), "max_lookback_s": 7200})
    history = _store_table(
        [
            ("c1", 0, "k_old", 1.0),  # exactly t - 1h for the query at 3600: inside
            ("c1", 1, "k_a", 2.0),
            ("c1", 3600, "k_b", 4.0),  # same time as the query, smaller key: counts
            ("c1", 3600, "k_c", 8.0),  # the query itself: never counts
            ("c1", 3600, "k_d", 16.0),  # same time, larger key: does not count
            ("c1", 3601, "k_e", 32.0),  # after the query
            ("c2", 3599, "k_x", 64.0),  # another card
        ]
    )
    queries = _store_table([("c1", 3600, "k_c", 8.0), ("c1", 3601, "k_0", 0.0)])
    got = entity_aggregates(history, queries, agg)
    # Query 1: k_old, k_a, k_b -> 3 events, 7.0; previous is k_b at the same time.
    np.testing.assert_array_equal(got[0], [3, 7.0, 7.0 / 3, 0.0])
    # Query 2 (3601, key "k_0" sorts before every other key): k_old is now outside
    # the hour; k_a..k_d are inside; k_e shares the time but has a larger key.
    np.testing.assert_array_equal(got[1], [4, 30.0, 7.5, 1.0])
    np.testing.assert_array_equal(got, reference(history, queries, agg))


def test_no_previous_event_and_lookback_cap():
    agg = AggregateSpec(**{**AGG.model_dump(), "max_lookback_s": 100})
    history = _store_table([("c1", 0, "a", 1.0)])
    queries = _store_table([("c1", 50, "b", 0.0), ("c1", 500, "c", 0.0), ("c9", 50, "d", 0.0)])
    got = entity_aggregates(history, queries, agg)
    np.testing.assert_array_equal(got[:, -1], [50.0, 100.0, 100.0])
    np.testing.assert_array_equal(got[2], [0, 0, 0, 0, 0, 0, 100.0])  # empty windows: 0


def test_empty_history_and_empty_queries():
    queries = _store_table([("c1", 5, "a", 1.0)])
    got = entity_aggregates(STORE_SCHEMA.empty_table(), queries, AGG)
    np.testing.assert_array_equal(got, [[0, 0, 0, 0, 0, 0, AGG.max_lookback_s]])
    assert entity_aggregates(queries, STORE_SCHEMA.empty_table(), AGG).shape == (0, 7)


def test_recording_every_event_twice_changes_nothing():
    table = _events(1000, 11, n_cards=30, tick_s=60)
    once = _recorded(table)
    twice = _recorded(table, table)
    for half in (table.slice(0, 500), table.slice(500)):  # replays in other batchings
        twice.record(to_store_events(half, SPEC))
    assert len(twice) == len(once) == 1000
    np.testing.assert_array_equal(_features(table, twice), _features(table, once))


def test_out_of_order_batches_give_the_same_features():
    table = _events(1200, 5, n_cards=30, tick_s=60)
    in_order = _features(table, _recorded(table))
    rng = np.random.default_rng(0)
    shuffled = table.take(pa.array(rng.permutation(table.num_rows)))
    batches = [shuffled.slice(i, 200) for i in range(0, shuffled.num_rows, 200)]
    store = _recorded(*reversed(batches))
    per_batch = np.vstack([_features(b, store) for b in batches])
    order = pc.index_in(
        pa.concat_arrays([b["transaction_id"].combine_chunks() for b in batches]),
        value_set=table["transaction_id"].combine_chunks(),
    ).to_numpy()
    np.testing.assert_array_equal(per_batch, in_order[order])


def test_later_events_never_change_earlier_features():
    table = _events(1000, 9, n_cards=20, tick_s=60)
    early, late = table.slice(0, 600), table.slice(600)
    alone = _features(early, _recorded(early))
    with_future = _features(early, _recorded(late, early))  # the future recorded first
    np.testing.assert_array_equal(with_future, alone)


def test_features_do_not_depend_on_extra_history():
    """Bit-identical whatever else the store returns: batch, stream and online agree."""
    table = _events(1500, 4, n_cards=30, tick_s=1)
    events = to_store_events(table, SPEC)
    full = entity_aggregates(events, events, AGG)
    rng = np.random.default_rng(1)
    for _ in range(3):
        rows = np.sort(rng.choice(table.num_rows, size=100, replace=False))
        queries = events.take(pa.array(rows))
        t = queries["event_time"]
        lo = pc.subtract(pc.min(t), pa.scalar(timedelta(seconds=AGG.horizon_s)))
        needed = events.filter(
            pc.and_(
                pc.is_in(events["entity"], value_set=pc.unique(queries["entity"])),
                pc.and_(
                    pc.greater_equal(events["event_time"], lo),
                    pc.less_equal(events["event_time"], pc.max(t)),
                ),
            )
        )
        shuffled = needed.take(pa.array(rng.permutation(needed.num_rows)))
        np.testing.assert_array_equal(entity_aggregates(shuffled, queries, AGG), full[rows])


def test_duplicated_history_rows_count_once():
    table = _events(600, 12, n_cards=15, tick_s=60)
    events = to_store_events(table, SPEC)
    doubled = pa.concat_tables([events, events.slice(100, 300)])
    np.testing.assert_array_equal(
        entity_aggregates(doubled, events, AGG), entity_aggregates(events, events, AGG)
    )


def test_compute_features_does_not_record():
    table = _events(300, 2, n_cards=10, tick_s=60)
    store = InMemoryFeatureStore()
    compute_features(table, SPEC, fit_stats(table, SPEC), store)
    assert len(store) == 0


def test_null_entity_is_refused():
    queries = _store_table([("c1", 5, "a", 1.0)]).cast(
        pa.schema([f.with_nullable(True) for f in STORE_SCHEMA])
    )
    queries = queries.set_column(0, "entity", pa.array([None], pa.string()))
    with pytest.raises(ValueError, match="'entity' has 1 null"):
        entity_aggregates(STORE_SCHEMA.empty_table(), queries, AGG)
