"""Idempotent, bounded, retrying writes of Arrow tables into one Cassandra table.

Every write is a prepared ``INSERT`` (an upsert) marked idempotent, with the consistency
level and TTL the caller (the contract) chose: no counters, no list appends, no
``now()``; write timestamps are the driver's client-side ones. Rows go out with at most
``concurrency`` requests in flight, and rows that fail with a transient error are
retried — just those rows — with exponential backoff (``_retry.run_with_retries``).
When rows still fail after the last retry, or fail with an error a retry cannot fix,
``WriteFailed`` says how many rows were written and lists the keys of every row that was
not, and carries those rows split by what a caller can do: ``retry_rows`` (a later try
may write them, rows not yet attempted included) and ``refused_rows`` (refused for good).
Nothing is dropped silently.

Values reach the driver serialized: each column is turned into the bytes ``bind`` would
send, column-wise (``_wire.serialize``), and set on a ``BoundStatement`` of the prepared
upsert; a value the driver's serializer refuses fails its row alone (refused, not
retried).

Within one ``write`` call the last row of each primary key wins (the batch is reduced to
one row per key first), so a retried earlier row can never overwrite a later one.

A request carries one row, or (``replica_batch_rows``, ``cassandra.write_batch_rows``: 10 by
default) an UNLOGGED batch of up to that many rows whose partitions have the same replicas,
routed by its first row's token to one of those replicas, which applies every row locally:
the Spark Cassandra Connector's ``replica_set`` grouping. With ``partition_batch_rows``
(the feature events) a partition's rows stay together in a batch, and partitions with the
same replicas share one. Every batch stays within Cassandra's default warning thresholds —
at most ``BATCH_PARTITIONS`` partitions, at most ``BATCH_BYTES`` as the server counts them
(``_batch_bytes``) — so no request draws a server warning, which the driver would log per
request. Per row it costs the
client about a fifth of the CPU of a single insert; a batch is retried as a whole, which
the idempotent upserts allow, and its failure is each of its rows' failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cassandra.query import BatchStatement, BatchType, BoundStatement

from sluice import metrics
from sluice.config import CassandraConfig, ConsistencyLevel
from sluice.errors import ConfigError, WriteFailed
from sluice.store._retry import describe, is_transient, run_with_retries
from sluice.store._session import consistency as driver_consistency
from sluice.store._types import to_python
from sluice.store._wire import serialize

__all__ = ["BATCH_BYTES", "BATCH_PARTITIONS", "CassandraWriter", "WriteOptions"]

BATCH_BYTES = 5 * 1024
"""Cassandra's ``batch_size_warn_threshold`` (5 KiB): a batch's size (``_batch_bytes``)
stays under it."""
BATCH_PARTITIONS = 10
"""Cassandra's ``unlogged_batch_across_partitions_warn_threshold``: the partitions an
unlogged batch may cover without a warning."""
_CELL_BYTES, _ROW_BYTES = 24, 16  # see _batch_bytes


@dataclass(frozen=True)
class WriteOptions:
    """How rows are written: from the contract (consistency, TTL) and the platform config."""

    consistency: ConsistencyLevel = ConsistencyLevel.LOCAL_QUORUM
    ttl_s: int = 0  # 0: rows never expire
    concurrency: int = 64  # requests in flight
    retries: int = 5  # further attempts for rows that failed transiently
    backoff_s: float = 0.2  # first retry delay; doubles per attempt (with jitter)
    chunk_rows: int = 50_000  # rows converted and tracked at once (bounds memory)
    # > 0: the rows of one partition go as UNLOGGED batches of at most this many rows (one
    # mutation per partition, Cassandra's pattern for same-partition writes); 0: one insert
    # per row. With replica_batch_rows > 0 too, partitions whose replicas are the same
    # share a batch (each partition's rows together; at most this many rows,
    # BATCH_PARTITIONS partitions and BATCH_BYTES).
    partition_batch_rows: int = 0
    # > 0 (and no partition batches): rows of different partitions whose replicas are the
    # same go as UNLOGGED batches of at most this many rows (and BATCH_PARTITIONS) and
    # BATCH_BYTES, routed to those replicas by the first row's token; 0: one insert per row.
    replica_batch_rows: int = 0

    def __post_init__(self) -> None:
        rules = (("ttl_s", 0), ("concurrency", 1), ("retries", 0), ("backoff_s", 0),
                 ("chunk_rows", 1), ("partition_batch_rows", 0), ("replica_batch_rows", 0))
        for name, least in rules:
            if getattr(self, name) < least:
                raise ValueError(f"WriteOptions.{name} must be >= {least}, got "
                                 f"{getattr(self, name)!r}")  # fmt: skip

    @classmethod
    def from_config(
        cls,
        cfg: CassandraConfig,
        consistency: ConsistencyLevel | None = None,
        ttl_s: int = 0,
    ) -> WriteOptions:
        return cls(
            consistency=consistency or cfg.write_consistency,
            ttl_s=ttl_s,
            concurrency=cfg.write_concurrency,
            retries=cfg.write_retries,
            backoff_s=cfg.retry_backoff_s,
            replica_batch_rows=cfg.write_batch_rows,
        )


def _last_per_key(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """One row per key, the last one (an upsert batch), in the order of those last rows."""
    if table.num_rows < 2:
        return table
    if len(keys) == 1 and len(pc.unique(table[keys[0]])) == table.num_rows:
        return table
    rows = pa.array(np.arange(table.num_rows, dtype=np.int64))
    last = (
        table.select(list(keys)).append_column("_row", rows)
        .group_by(list(keys), use_threads=False).aggregate([("_row", "max")])
    )  # fmt: skip
    if last.num_rows == table.num_rows:
        return table
    return table.take(np.sort(last["_row_max"].to_numpy()))


class CassandraWriter:
    """Writes Arrow tables into ``keyspace.table`` through one process's session.

    ``columns`` maps Cassandra column -> input column (a sequence means the same
    names). ``cql_types`` (Cassandra column -> CQL type) and ``key_columns`` default to
    the table's own, read from the driver's schema metadata.
    """

    def __init__(
        self,
        session: Any,
        keyspace: str,
        table: str,
        columns: Mapping[str, str] | Sequence[str],
        options: WriteOptions = WriteOptions(),
        *,
        key_columns: Sequence[str] | None = None,
        cql_types: Mapping[str, str] | None = None,
        partition_columns: Sequence[str] | None = None,
    ) -> None:
        self.session = session
        self.keyspace, self.table = keyspace, table
        self.columns = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
        self.options = options
        need_partition = bool(options.partition_batch_rows) and partition_columns is None
        if cql_types is None or key_columns is None or need_partition:
            meta = _table_metadata(session, keyspace, table)
            if need_partition:
                partition_columns = [c.name for c in meta.partition_key]
            if cql_types is None:
                cql_types = {c.name: c.cql_type for c in meta.columns.values()}
            if key_columns is None:
                key_columns = [c.name for c in (*meta.partition_key, *meta.clustering_key)]
        missing = [c for c in self.columns if c not in cql_types]
        if missing:
            raise ConfigError(
                f"table {keyspace}.{table} has no column(s) {missing}; run "
                "`sluice schema apply` or fix the column mapping"
            )
        unmapped = [k for k in key_columns if k not in self.columns]
        if unmapped:
            raise ConfigError(
                f"table {keyspace}.{table}: key column(s) {unmapped} are not mapped; every "
                "primary-key column needs a value"
            )
        self.cql_types = {c: cql_types[c] for c in self.columns}
        self.key_columns = list(key_columns)
        names = ", ".join(self.columns)
        marks = ", ".join("?" for _ in self.columns)
        ttl = f" USING TTL {options.ttl_s}" if options.ttl_s else ""
        self.cql = f"INSERT INTO {keyspace}.{table} ({names}) VALUES ({marks}){ttl}"
        # Prepared once per writer (per instance, never on the class): a writer lives in
        # one process with that process's session.
        self.statement = session.prepare(self.cql)
        self.statement.is_idempotent = True
        self.statement.consistency_level = driver_consistency(options.consistency)
        self._part_idx = [list(self.columns).index(k) for k in partition_columns or ()]
        self._sleep: Callable[[float], None] = time.sleep
        self._owners: dict[int, tuple[list[Any], tuple[str, ...]]] = {}  # _replicas_of

    def _params(self, table: pa.Table) -> tuple[list[tuple], dict[int, BaseException]]:
        """The rows' values as the driver sends them (``_wire.serialize``, column-wise), in
        row tuples; and {row index: error} of rows with a value the driver refuses."""
        missing = [src for src in self.columns.values() if src not in table.column_names]
        if missing:
            raise ConfigError(
                f"writing {self.keyspace}.{self.table}: input lacks column(s) {missing}"
            )
        cols, errors = [], {}
        meta = self.statement.column_metadata
        version = self.statement.protocol_version
        for (dst, src), col in zip(self.columns.items(), meta, strict=True):
            values, bad = serialize(table[src], self.cql_types[dst], col.type, version)
            cols.append(values)
            for i, exc in bad.items():
                errors.setdefault(i, TypeError(f"column {dst}: {exc}"))
        return list(zip(*cols, strict=True)), errors

    def _bound(self, values: tuple) -> BoundStatement:
        """A bound statement carrying ``values`` already serialized: what ``bind`` would
        have computed from them, without its per-value calls."""
        bound = BoundStatement(self.statement)
        bound.values = list(values)
        return bound

    def write(self, data: pa.Table | pa.RecordBatch) -> int:
        """Upsert every row; returns the rows written. Raises ``WriteFailed`` otherwise."""
        table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
        sources = [self.columns[k] for k in self.key_columns]
        table = _last_per_key(table, sources)
        written = 0
        opts = self.options
        for start in range(0, table.num_rows, opts.chunk_rows):
            params, refused = self._params(table.slice(start, opts.chunk_rows))
            t0 = time.perf_counter()
            failed = {**self._send(params, set(refused)), **refused}
            metrics.CASSANDRA_WRITE_SECONDS.observe(time.perf_counter() - t0, table=self.table)
            metrics.CASSANDRA_ROWS_WRITTEN.inc(len(params) - len(failed), table=self.table)
            for exc in failed.values():
                metrics.CASSANDRA_WRITE_FAILURES.inc(table=self.table, error=type(exc).__name__)
            written += len(params) - len(failed)
            if failed:
                chunk = table.slice(start, opts.chunk_rows)
                rest = table.slice(start + opts.chunk_rows)
                raise self._failure(failed, written, chunk, rest)
        return written

    def _send(self, params: list[tuple], skip: set[int]) -> dict[int, BaseException]:
        """Write `params` but the rows in ``skip``; {row index: last error} of the rows
        that failed."""
        opts = self.options
        retry = dict(concurrency=opts.concurrency, retries=opts.retries,
                     backoff_s=opts.backoff_s, sleep=self._sleep,
                     what=f"{self.keyspace}.{self.table}")  # fmt: skip
        rows = [i for i in range(len(params)) if i not in skip] if skip else range(len(params))
        bound = {i: self._bound(params[i]) for i in rows}
        if opts.partition_batch_rows:
            members = self._by_partition(params, rows, opts.partition_batch_rows)
            if opts.replica_batch_rows and len(members) > 1:
                members = self._pack_by_replicas(bound, members, opts.partition_batch_rows)
        elif opts.replica_batch_rows and len(bound) > 1:
            members = self._by_replicas(bound, list(rows), opts.replica_batch_rows)
        else:
            members = [[i] for i in rows]
            singles = [bound[i] for i in rows]
            _, failed = run_with_retries(self.session, None, singles, **retry)
            return {members[b][0]: exc for b, exc in failed.items()}
        batches = []
        for group in members:
            batch = BatchStatement(batch_type=BatchType.UNLOGGED,
                                   consistency_level=self.statement.consistency_level)  # fmt: skip
            for i in group:
                batch.add(bound[i])  # routed by its first row's token
            batch.is_idempotent = True
            batches.append(batch)
        _, failed = run_with_retries(self.session, None, batches, **retry)
        return {i: exc for b, exc in failed.items() for i in members[b]}

    def _by_partition(self, params: list[tuple], rows: Iterable[int],
                      size: int) -> list[list[int]]:  # fmt: skip
        """Row indexes in groups of one partition, at most ``size`` rows each."""
        groups: dict[tuple, list[int]] = {}
        for i in rows:
            groups.setdefault(tuple(params[i][j] for j in self._part_idx), []).append(i)
        return [part[s : s + size] for part in groups.values()
                for s in range(0, len(part), size)]  # fmt: skip

    def _pack_by_replicas(self, bound: dict[int, Any], partitions: list[list[int]],
                          size: int) -> list[list[int]]:  # fmt: skip
        """Partition groups packed into batches of partitions with the same replicas (at most
        ``size`` rows, BATCH_PARTITIONS partitions and BATCH_BYTES), each partition's rows
        kept together: one card with one event in a batch of many cards costs a row in a
        shared batch, not a request."""
        order = [i for rows in partitions for i in rows]
        owners, parts = [], []
        for n, rows in enumerate(partitions):  # a partition's rows share its replicas
            owners.extend([self._replicas_of(bound[rows[0]])] * len(rows))
            parts.extend([n] * len(rows))
        sizes = [_batch_bytes(bound[i]) for i in order]
        return [[order[p] for p in group]
                for group in replica_groups(owners, sizes, size, BATCH_BYTES, parts)]  # fmt: skip

    def _by_replicas(self, bound: dict[int, Any], rows: list[int],
                     size: int) -> list[list[int]]:  # fmt: skip
        """Row indexes grouped by their partitions' replicas (the driver's token map): one
        request carries a group to a replica that owns all of its rows."""
        owners = [self._replicas_of(bound[i]) for i in rows]
        sizes = [_batch_bytes(bound[i]) for i in rows]
        groups = replica_groups(owners, sizes, size, BATCH_BYTES)  # a row, a partition
        return [[rows[j] for j in group] for group in groups]

    def _replicas_of(self, statement: Any) -> tuple[str, ...]:
        """The replicas of a bound statement's partition (the driver's token map). The map
        hands out one list per token range, so each list's name is computed once (kept
        with the list, whose id cannot be reused while it is kept)."""
        hosts = self.session.cluster.metadata.get_replicas(self.keyspace, statement.routing_key)
        if not hosts:
            return ()
        known = self._owners.get(id(hosts))
        if known is None or known[0] is not hosts:
            if len(self._owners) > 4096:  # the ring changed many times: start afresh
                self._owners.clear()
            known = (hosts, tuple(sorted(str(h.endpoint) for h in hosts)))
            self._owners[id(hosts)] = known
        return known[1]

    def _keys(self, rows: pa.Table) -> list[Any]:
        """The rows' primary keys as Python values (a tuple each for a compound key)."""
        cols = [to_python(rows[self.columns[k]], self.cql_types[k]) for k in self.key_columns]
        return cols[0] if len(cols) == 1 else list(zip(*cols, strict=True))

    def _failure(
        self, failed: dict[int, BaseException], written: int, chunk: pa.Table, rest: pa.Table
    ) -> WriteFailed:
        keys = self._keys(chunk.take(pa.array(sorted(failed), pa.int64())))
        transient = pa.array([i for i in sorted(failed) if is_transient(failed[i])], pa.int64())
        refused = pa.array([i for i in sorted(failed) if not is_transient(failed[i])], pa.int64())
        not_tried = self._keys(rest) if rest.num_rows else []
        permanent = [e for e in failed.values() if not is_transient(e)]
        last = (permanent or list(failed.values()))[-1]
        why = (
            f"{len(permanent)} failed with an error a retry cannot fix"
            if permanent
            else f"gave up after {self.options.retries} retries"
        )
        msg = (
            f"writing {self.keyspace}.{self.table}: {written} row(s) written, {len(keys)} "
            f"failed ({why}; last error: {describe(last)})"
            + (f", {len(not_tried)} not attempted" if not_tried else "")
            + "; the failed keys are in WriteFailed.failed_keys"
        )
        return WriteFailed(
            msg, written=written, failed_keys=keys + not_tried,
            retry_rows=pa.concat_tables([chunk.take(transient), rest]),
            refused_rows=chunk.take(refused),
        )  # fmt: skip


def _batch_bytes(statement: Any) -> int:
    """A bound row's size as Cassandra counts it against ``batch_size_warn_threshold``,
    over-estimated: its values plus 24 bytes a value and 16 a row for the cells' timestamps,
    TTLs and the row's liveness. (Cassandra 5.0 counts 10 prediction rows of 5,829 value
    bytes as 7,739, or 7,859 with a TTL: this says 8,149; 10 alert rows of 5,347 as 7,607:
    this says 8,387.)"""
    return sum(_CELL_BYTES + len(v) for v in statement.values if v is not None) + _ROW_BYTES


def replica_groups(owners: Sequence[Hashable], sizes: Sequence[int], max_rows: int,
                   max_bytes: int, parts: Sequence[Hashable] | None = None,
                   max_parts: int = BATCH_PARTITIONS) -> list[list[int]]:  # fmt: skip
    """Row indexes in batches: rows of one batch have the same ``owners`` (their replicas),
    a batch has at most ``max_rows`` rows, rows of at most ``max_parts`` partitions
    (``parts``, a row's partition; each row its own partition when None; a partition's rows
    come together) and, when it covers more than one partition, at most ``max_bytes``
    (``sizes``; Cassandra checks no size of a one-partition batch, CASSANDRA-10876); every
    row in exactly one batch, in order."""
    open_: dict[Hashable, tuple[list[int], int, int, Hashable]] = {}
    out: list[list[int]] = []
    for i, (owner, size) in enumerate(zip(owners, sizes, strict=True)):
        part = i if parts is None else parts[i]
        rows, used, n_parts, last = open_.get(owner, ([], 0, 0, None))
        new_part = not rows or part != last
        too_big = used + size > max_bytes and (new_part or n_parts > 1)
        if rows and (len(rows) >= max_rows or too_big or (new_part and n_parts >= max_parts)):
            out.append(rows)
            rows, used, n_parts, new_part = [], 0, 0, True
        rows.append(i)
        open_[owner] = (rows, used + size, n_parts + new_part, part)
    out.extend(rows for rows, *_ in open_.values() if rows)
    return out


def _table_metadata(session: Any, keyspace: str, table: str) -> Any:
    ks = session.cluster.metadata.keyspaces.get(keyspace)
    meta = ks.tables.get(table) if ks is not None else None
    if meta is None:
        raise ConfigError(
            f"table {keyspace}.{table} does not exist; create it with `sluice schema apply`"
        )
    return meta
