"""Where entity events live between batches: the ``FeatureStore`` protocol.

A store keeps one row per event key — (entity, event_time, key, amount) — and
answers "the events of these entities in [start, end)". It computes nothing:
the aggregate math is one pure function over the history it returns
(``sluice.features.entity_aggregates``), so every store gives the same features.

Writes are replay-safe: recording an event whose key is already stored replaces
that row (an upsert, like Cassandra's), so replaying a batch changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.features._spec import AggregateSpec, FeatureSpec

__all__ = [
    "STORE_SCHEMA",
    "FeatureStore",
    "InMemoryFeatureStore",
    "distinct_entities",
    "from_micros",
    "to_micros",
    "to_store_events",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

STORE_SCHEMA = pa.schema(
    [
        pa.field("entity", pa.string(), nullable=False),
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("amount", pa.float64()),
    ]
)
"""Columns of ``record``'s input and ``history``'s output."""


@runtime_checkable
class FeatureStore(Protocol):
    """Event history per entity, the only state entity aggregates need."""

    def record(self, events: pa.Table) -> None:
        """Store events (``STORE_SCHEMA`` columns). The same key twice is stored once."""
        ...

    def history(
        self, entities: Sequence[str] | pa.Array, start: datetime, end: datetime
    ) -> pa.Table:
        """Events of ``entities`` with ``start <= event_time < end`` (``STORE_SCHEMA``)."""
        ...


def to_micros(when: datetime) -> int:
    """Microseconds since the epoch (a naive datetime is taken as UTC): history windows'
    bounds as the stores compare them."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // timedelta(microseconds=1)


def from_micros(us: int) -> datetime:
    """The UTC datetime of microseconds since the epoch (``to_micros``'s inverse)."""
    return _EPOCH + timedelta(microseconds=int(us))


def distinct_entities(entities: Sequence[str] | pa.Array | pa.ChunkedArray) -> list[str]:
    """``history``'s entities argument as distinct strings, nulls left out, in order."""
    if isinstance(entities, pa.Array | pa.ChunkedArray):
        return entities.cast(pa.string()).drop_null().unique().to_pylist()
    return list(dict.fromkeys(e for e in entities if e is not None))


def to_store_events(table: pa.Table, spec: FeatureSpec | AggregateSpec) -> pa.Table:
    """The input table's events in ``STORE_SCHEMA`` form, ready for ``store.record``.

    Rows with a null entity, event time or key cannot be placed in history and
    are refused (validation quarantines them before this point).
    """
    agg = spec.aggregates if isinstance(spec, FeatureSpec) else spec
    if agg is None:
        raise ValueError("the feature spec declares no aggregates: there is nothing to record")
    cols = {
        "entity": (agg.entity_column, pa.string()),
        "event_time": (agg.event_time_column, pa.timestamp("us", tz="UTC")),
        "key": (agg.key_column, pa.string()),
        "amount": (agg.value_column, pa.float64()),
    }
    arrays = []
    for field, (source, typ) in cols.items():
        if source not in table.column_names:
            raise ValueError(f"column {source!r} (store field {field!r}) is missing from the table")
        col = table.column(source).combine_chunks()
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("us", tz=col.type.tz), safe=False)
        col = col.cast(typ)
        if field != "amount" and col.null_count:
            raise ValueError(f"column {source!r} has {col.null_count} null(s); events need one")
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=STORE_SCHEMA)


def _conform(events: pa.Table) -> pa.Table:
    missing = [n for n in STORE_SCHEMA.names if n not in events.column_names]
    if missing:
        raise ValueError(f"events lack store column(s) {missing}; use to_store_events(table, spec)")
    events = events.select(STORE_SCHEMA.names)
    return events.cast(STORE_SCHEMA) if events.schema != STORE_SCHEMA else events


def last_per_key(events: pa.Table) -> pa.Table:
    """Keep the last row of each key (an upsert batch), in first-appearance order."""
    if events.num_rows == 0:
        return events
    indexed = events.append_column("_row", pa.array(np.arange(events.num_rows, dtype=np.int64)))
    last = indexed.group_by("key", use_threads=False).aggregate([("_row", "max")])
    rows = pc.sort_indices(last["_row_max"])
    return events.take(pc.take(last["_row_max"], rows))


class InMemoryFeatureStore:
    """A ``FeatureStore`` in one Arrow table, for tests, notebooks and single processes.

    Each ``record`` is O(stored rows) (it rewrites the table without the keys it
    replaces); fine for tests and demos, not for a long-running stream.
    """

    def __init__(self) -> None:
        self._events = STORE_SCHEMA.empty_table()

    def __len__(self) -> int:
        return self._events.num_rows

    def record(self, events: pa.Table) -> None:
        batch = last_per_key(_conform(events))
        if batch.num_rows == 0:
            return
        kept = self._events.filter(
            pc.invert(pc.is_in(self._events["key"], value_set=batch["key"].combine_chunks()))
        )
        self._events = pa.concat_tables([kept, batch]).combine_chunks()

    def history(
        self, entities: Sequence[str] | pa.Array, start: datetime, end: datetime
    ) -> pa.Table:
        wanted = entities if isinstance(entities, pa.Array) else pa.array(entities, pa.string())
        t = self._events["event_time"]
        mask = pc.and_(
            pc.is_in(self._events["entity"], value_set=wanted.cast(pa.string())),
            pc.and_(
                pc.greater_equal(t, pa.scalar(start, STORE_SCHEMA.field("event_time").type)),
                pc.less(t, pa.scalar(end, STORE_SCHEMA.field("event_time").type)),
            ),
        )
        return self._events.filter(mask)
