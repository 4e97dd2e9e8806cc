"""``CassandraFeatureStore``: the ``sluice.features.FeatureStore`` protocol on Cassandra.

Table ``{contract}_feature_events``: PRIMARY KEY ((entity), event_time_us, key), one
partition per entity, its events ordered by (time, key) — exactly the order the
aggregates read. ``record`` is an idempotent upsert of (entity, event_time_us, key) ->
amount, so recording an event twice (a replay) stores it once; no counters, no
read-modify-write. ``history`` reads the entities' partitions concurrently with one
prepared range query and returns ``STORE_SCHEMA``; the features themselves are then
computed by ``sluice.features.entity_aggregates``, the same pure function every store
feeds.

One difference from ``InMemoryFeatureStore``: there a key recorded again with another
entity or time *moves*; here the row is keyed by (entity, time, key), so it would be
stored twice. Event keys are unique per event (a replay carries the same entity and
time), so the two agree on every real input.

Rows expire after ``ttl_s`` (counted from the write): ``feature_ttl_s`` keeps them for
the longest look-back the aggregates need plus a day for late events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from sluice.config import CassandraConfig, ConsistencyLevel
from sluice.contract import Contract
from sluice.errors import ConfigError, StoreUnavailable
from sluice.features import STORE_SCHEMA, AggregateSpec, distinct_entities, to_micros
from sluice.store._retry import run_with_retries
from sluice.store._schema import feature_events_table
from sluice.store._session import TUPLES, consistency, session_for
from sluice.store._types import timestamp_micros
from sluice.store._writer import CassandraWriter, WriteOptions

__all__ = ["CassandraFeatureStore", "feature_ttl_s"]

_DAY_S = 86_400
EVENTS_PER_BATCH = 64
"""Events per unlogged batch. A card's events go together (one mutation per card instead of
a round trip per event; Cassandra checks no size of a one-partition batch), and cards on the
same replicas share a batch, up to BATCH_PARTITIONS cards and BATCH_BYTES (CassandraWriter)."""


def feature_ttl_s(agg: AggregateSpec) -> int:
    """Row TTL of feature events: the aggregates' look-back plus one day (at least 2 days)."""
    return max(agg.horizon_s + _DAY_S, 2 * _DAY_S)


class CassandraFeatureStore:
    """Entity event history in ``keyspace.table``; one session per process (lazy).

    The object is picklable: it carries only config, and opens this process's session
    on first use, so a store built on the driver works inside Ray tasks and actors.
    """

    def __init__(
        self,
        cfg: CassandraConfig,
        table: str,
        *,
        ttl_s: int,
        consistency: ConsistencyLevel | None = None,
        read_concurrency: int | None = None,
    ) -> None:
        if ttl_s < _DAY_S:
            raise ConfigError(f"feature events need a TTL of at least one day, got {ttl_s} s")
        self.cfg = cfg
        self.keyspace = cfg.keyspace
        self.table = table
        self.ttl_s = ttl_s
        self.consistency = consistency or cfg.write_consistency
        self.read_concurrency = read_concurrency or cfg.write_concurrency
        self._writer: CassandraWriter | None = None
        self._select: Any = None

    @classmethod
    def for_contract(cls, cfg: CassandraConfig, contract: Contract) -> CassandraFeatureStore:
        agg = contract.features.aggregates
        if agg is None:
            raise ConfigError(f"contract {contract.name} declares no aggregates: no feature store")
        # Written at the platform's write_consistency, not the contract's output level:
        # config load checks it against read_consistency (R + W > RF).
        return cls(cfg, feature_events_table(contract).name, ttl_s=feature_ttl_s(agg))

    def __getstate__(self) -> dict[str, Any]:
        # Sessions and prepared statements belong to one process: never pickle them.
        return {**self.__dict__, "_writer": None, "_select": None}

    # -- FeatureStore ----------------------------------------------------------------------
    def record(self, events: pa.Table) -> None:
        """Upsert events (``STORE_SCHEMA`` columns); the same event twice is stored once."""
        missing = [n for n in STORE_SCHEMA.names if n not in events.column_names]
        if missing:
            raise ValueError(
                f"events lack store column(s) {missing}; use sluice.features.to_store_events"
            )
        if events.num_rows == 0:
            return
        rows = pa.table(
            {
                "entity": events["entity"].cast(pa.string()),
                "event_time_us": timestamp_micros(events["event_time"]),
                "key": events["key"].cast(pa.string()),
                "amount": events["amount"].cast(pa.float64()),
            }
        )
        self._writer_for().write(rows)

    def history(
        self, entities: Sequence[str] | pa.Array, start: datetime, end: datetime
    ) -> pa.Table:
        """Events of ``entities`` with ``start <= event_time < end`` (``STORE_SCHEMA``)."""
        wanted = distinct_entities(entities)
        if not wanted:
            return STORE_SCHEMA.empty_table()
        lo, hi = to_micros(start), to_micros(end)
        session = session_for(self.cfg)
        stmt = self._select_for(session)
        results, failed = run_with_retries(
            session, stmt, [(e, lo, hi) for e in wanted],
            concurrency=self.read_concurrency, retries=self.cfg.write_retries,
            backoff_s=self.cfg.retry_backoff_s, execution_profile=TUPLES,
            what=f"{self.keyspace}.{self.table} history", keep_results=True,
        )  # fmt: skip
        if failed:
            idx, err = next(iter(failed.items()))
            raise StoreUnavailable(
                f"reading {self.keyspace}.{self.table}: {len(failed)} of {len(wanted)} "
                f"entities could not be read (e.g. {wanted[idx]!r}: {type(err).__name__}: "
                f"{err})"
            ) from err
        rows: list[tuple] = []
        for rs in results:
            rows.extend(rs)  # iterating a ResultSet fetches its further pages
        return _to_table(rows)

    # -- internals -------------------------------------------------------------------------
    def _writer_for(self) -> CassandraWriter:
        session = session_for(self.cfg)
        if self._writer is None or self._writer.session is not session:
            self._writer = CassandraWriter(
                session, self.keyspace, self.table,
                ["entity", "event_time_us", "key", "amount"],
                replace(WriteOptions.from_config(self.cfg, self.consistency, self.ttl_s),
                        partition_batch_rows=EVENTS_PER_BATCH),
                key_columns=["entity", "event_time_us", "key"],
                cql_types={"entity": "text", "event_time_us": "bigint", "key": "text",
                           "amount": "double"},
                partition_columns=["entity"],
            )  # fmt: skip
        return self._writer

    def _select_for(self, session: Any) -> Any:
        if self._select is None or self._select[0] is not session:
            stmt = session.prepare(
                f"SELECT entity, event_time_us, key, amount FROM {self.keyspace}.{self.table} "
                "WHERE entity = ? AND event_time_us >= ? AND event_time_us < ?"
            )
            stmt.is_idempotent = True
            stmt.consistency_level = consistency(self.cfg.read_consistency)
            self._select = (session, stmt)
        return self._select[1]


def _to_table(rows: list[tuple]) -> pa.Table:
    if not rows:
        return STORE_SCHEMA.empty_table()
    entity, t_us, key, amount = zip(*rows, strict=True)
    return pa.Table.from_arrays(
        [
            pa.array(entity, pa.string()),
            pa.array(np.fromiter(t_us, np.int64, len(t_us))).cast(STORE_SCHEMA.field(1).type),
            pa.array(key, pa.string()),
            pa.array(amount, pa.float64()),
        ],
        schema=STORE_SCHEMA,
    )
