"""The writer's retry / give-up logic against a small fake session (no network).

The fake stands in for ``Session.prepare`` (a real ``PreparedStatement`` of the test
table's columns) and ``execute_async`` (it decodes each bound statement's values with the
driver's own types) and completes every request on a background thread, as the driver's
event loop does.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pytest
from cassandra import ConsistencyLevel as DriverLevel
from cassandra import InvalidRequest, OperationTimedOut, Unavailable, WriteTimeout
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionShutdown
from cassandra.cqltypes import Int32Type, LongType, UTF8Type
from cassandra.protocol import ColumnMetadata, OverloadedErrorMessage
from cassandra.query import PreparedStatement

from sluice.config import ConsistencyLevel
from sluice.errors import ConfigError, WriteFailed
from sluice.store import CassandraWriter, WriteOptions, is_transient

TYPES = {"k": "text", "v": "bigint"}
DRIVER_TYPES = {"k": UTF8Type, "v": LongType}


class FakeFuture:
    _col_names = None
    _col_types = None
    has_more_pages = False

    def __init__(self, pool: ThreadPoolExecutor | None, outcome: BaseException | None, done):
        self.pool, self.outcome, self.done = pool, outcome, done

    def add_callbacks(self, callback, errback, callback_args=(), errback_args=()):
        def finish() -> None:
            self.done()
            if self.outcome is None:
                callback([], *callback_args)
            else:
                errback(self.outcome, *errback_args)

        if self.pool is None:  # already failed: the driver runs the errback right here
            finish()
        else:
            self.pool.submit(finish)

    def clear_callbacks(self) -> None:
        pass


class FakeSession:
    """Stores rows by key; ``fail(key, attempt)`` may return an exception instead."""

    def __init__(
        self,
        fail: Callable[[str, int], BaseException | None] = lambda k, a: None,
        at_once: str | None = None,  # "raise" or "callback": fail before any I/O
        types: dict[str, Any] = DRIVER_TYPES,  # the table's columns: the driver's types
    ):
        self.fail, self.at_once, self.types = fail, at_once, types
        self.rows: dict[str, tuple] = {}
        self.attempts: Counter[str] = Counter()
        self.prepared: list[Any] = []
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0

    def prepare(self, cql: str) -> Any:
        columns = [ColumnMetadata("ks", "t", c, kind) for c, kind in self.types.items()]
        stmt = PreparedStatement(columns, b"id", [0], cql, "ks", 5, None, None)
        stmt.cql = cql
        self.prepared.append(stmt)
        return stmt

    def _done(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def execute_async(self, stmt: Any, execution_profile: Any = None) -> FakeFuture:
        columns = stmt.prepared_statement.column_metadata
        params = tuple(c.type.deserialize(v, 5) for c, v in zip(columns, stmt.values, strict=True))
        key = params[0]
        with self.lock:
            self.attempts[key] += 1
            attempt = self.attempts[key]
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        err = self.fail(key, attempt)
        if err is None:
            self.rows[key] = params
        elif self.at_once == "raise":
            self._done()
            raise err
        elif self.at_once == "callback":
            return FakeFuture(None, err, self._done)
        return FakeFuture(self.pool, err, self._done)


def rows(n: int) -> pa.Table:
    return pa.table({"k": [f"k{i}" for i in range(n)], "v": list(range(n))})


def writer(session: FakeSession, **opts: Any) -> CassandraWriter:
    options = WriteOptions(**{"retries": 3, "backoff_s": 0.1, "concurrency": 8, **opts})
    w = CassandraWriter(session, "ks", "t", ["k", "v"], options, key_columns=["k"],
                        cql_types=TYPES)  # fmt: skip
    w.sleeps = []  # type: ignore[attr-defined]
    w._sleep = w.sleeps.append  # type: ignore[attr-defined]
    return w


def test_writes_every_row_with_an_idempotent_prepared_upsert() -> None:
    s = FakeSession()
    w = writer(s, ttl_s=3600, consistency=ConsistencyLevel.QUORUM)
    assert w.write(rows(500)) == 500
    assert len(s.rows) == 500 and s.rows["k7"] == ("k7", 7)
    (stmt,) = s.prepared
    assert stmt.cql == "INSERT INTO ks.t (k, v) VALUES (?, ?) USING TTL 3600"
    assert stmt.is_idempotent is True
    assert stmt.consistency_level == DriverLevel.QUORUM
    assert 1 < s.max_in_flight <= 8
    assert w.sleeps == []


def test_no_ttl_clause_without_a_ttl() -> None:
    s = FakeSession()
    writer(s)
    assert s.prepared[0].cql == "INSERT INTO ks.t (k, v) VALUES (?, ?)"


def test_transient_failures_retry_just_the_failed_rows_with_backoff() -> None:
    flaky = {"k3", "k9"}
    timeout = WriteTimeout("slow", write_type=0)
    s = FakeSession(lambda k, a: timeout if k in flaky and a <= 2 else None)
    w = writer(s)
    assert w.write(rows(50)) == 50
    assert len(s.rows) == 50
    assert {k: s.attempts[k] for k in flaky} == {"k3": 3, "k9": 3}
    assert all(s.attempts[k] == 1 for k in s.rows if k not in flaky)
    assert len(w.sleeps) == 2
    assert 0.05 <= w.sleeps[0] <= 0.1 and 0.1 <= w.sleeps[1] <= 0.2  # doubling, with jitter


def test_gives_up_after_the_last_retry_naming_the_failed_keys() -> None:
    from sluice import metrics

    def counts() -> tuple[float, float, float]:
        return (metrics.CASSANDRA_WRITE_FAILURES.value(table="t", error="Unavailable"),
                metrics.CASSANDRA_ROWS_WRITTEN.value(table="t"),
                metrics.CASSANDRA_WRITE_SECONDS.value(table="t"))  # fmt: skip

    before = counts()
    s = FakeSession(lambda k, a: Unavailable("down") if k in ("k1", "k4") else None)
    w = writer(s)
    with pytest.raises(WriteFailed) as info:
        w.write(rows(10))
    after = counts()
    # Two rows given up on, eight written, one chunk timed (retries inside it).
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 8, 1]
    assert info.value.written == 8
    assert info.value.failed_keys == ["k1", "k4"]
    assert s.attempts["k1"] == 4  # first try + 3 retries
    assert "ks.t" in str(info.value) and "gave up after 3 retries" in str(info.value)
    assert len(s.rows) == 8


def test_an_error_a_retry_cannot_fix_is_not_retried() -> None:
    s = FakeSession(lambda k, a: InvalidRequest("bad value") if k == "k2" else None)
    with pytest.raises(WriteFailed, match="a retry cannot fix") as info:
        writer(s).write(rows(5))
    assert s.attempts["k2"] == 1
    assert info.value.written == 4 and info.value.failed_keys == ["k2"]


def test_rows_after_a_failed_chunk_are_reported_not_attempted() -> None:
    s = FakeSession(lambda k, a: OperationTimedOut("gone") if k == "k0" else None)
    with pytest.raises(WriteFailed, match="5 not attempted") as info:
        writer(s, chunk_rows=5, retries=0).write(rows(10))
    assert info.value.written == 4
    assert info.value.failed_keys == ["k0", "k5", "k6", "k7", "k8", "k9"]
    assert set(s.rows) == {"k1", "k2", "k3", "k4"}


def test_failed_rows_come_back_split_into_retry_and_refused() -> None:
    # Per-row outcomes: a caller can keep what a later try may write (transient failures
    # and rows never attempted) and set aside what the store refused for good.
    def fail(k: str, a: int) -> BaseException | None:
        return {"k1": InvalidRequest("too large"), "k3": Unavailable("down")}.get(k)

    with pytest.raises(WriteFailed) as info:
        writer(FakeSession(fail), chunk_rows=5, retries=1).write(rows(8))
    assert info.value.written == 3
    assert info.value.refused_rows.to_pydict() == {"k": ["k1"], "v": [1]}
    assert info.value.retry_rows.to_pydict() == {"k": ["k3", "k5", "k6", "k7"],
                                                 "v": [3, 5, 6, 7]}  # fmt: skip


def test_a_failure_message_never_quotes_a_rows_values(caplog) -> None:
    # The driver's serialization errors quote the value; logs and messages carry keys only.
    bad = TypeError("Received an argument of invalid type: 'card 4111-1111-1111-1111'")
    with pytest.raises(WriteFailed) as info:
        writer(FakeSession(lambda k, a: bad if k == "k1" else None)).write(rows(3))
    assert "4111" not in str(info.value) and "TypeError" in str(info.value)
    assert info.value.failed_keys == ["k1"]
    server = InvalidRequest("Key length of 70000 is longer than maximum of 65535")
    with pytest.raises(WriteFailed, match="Key length of 70000"):  # the server's words stay
        writer(FakeSession(lambda k, a: server if k == "k1" else None)).write(rows(3))
    assert not any("4111" in r.getMessage() for r in caplog.records)


def test_a_value_the_driver_cannot_serialize_refuses_its_row_alone() -> None:
    # An int64 column into an int column: the driver refuses what does not fit in 32 bits.
    s = FakeSession(types={"k": UTF8Type, "v": Int32Type})
    w = CassandraWriter(s, "ks", "t", ["k", "v"], WriteOptions(retries=3), key_columns=["k"],
                        cql_types={"k": "text", "v": "int"})  # fmt: skip
    data = pa.table({"k": ["a", "b", "c"], "v": pa.array([1, 2**40, -3], pa.int64())})
    with pytest.raises(WriteFailed, match="1 failed with an error a retry cannot fix") as info:
        w.write(data)
    assert info.value.written == 2 and info.value.failed_keys == ["b"]
    assert info.value.refused_rows.to_pydict() == {"k": ["b"], "v": [2**40]}
    assert info.value.retry_rows.num_rows == 0
    assert s.rows == {"a": ("a", 1), "c": ("c", -3)} and "b" not in s.attempts


@pytest.mark.parametrize("at_once", ["raise", "callback"])
def test_every_host_down_fails_each_row_without_recursing(at_once: str) -> None:
    # The driver's own executor recurses once per row here and loses every outcome.
    down = NoHostAvailable("Unable to complete the operation against any hosts", {})
    s = FakeSession(lambda k, a: down if int(k[1:]) >= 100 else None, at_once=at_once)
    with pytest.raises(WriteFailed) as info:
        writer(s, retries=1, concurrency=64).write(rows(20_000))
    assert info.value.written == 100
    assert len(info.value.failed_keys) == 19_900
    assert s.attempts["k5000"] == 2 and s.attempts["k5"] == 1


def test_last_row_of_a_key_wins_within_a_batch() -> None:
    s = FakeSession()
    data = pa.table({"k": ["a", "b", "a", "c", "b"], "v": [1, 2, 3, 4, 5]})
    assert writer(s).write(data) == 3
    assert s.rows == {"a": ("a", 3), "b": ("b", 5), "c": ("c", 4)}
    assert s.attempts == Counter({"a": 1, "b": 1, "c": 1})


def test_column_mapping_errors_name_the_table() -> None:
    with pytest.raises(ConfigError, match=r"table ks.t has no column\(s\) \['zz'\]"):
        CassandraWriter(FakeSession(), "ks", "t", {"zz": "v", "k": "k"}, key_columns=["k"],
                        cql_types=TYPES)  # fmt: skip
    with pytest.raises(ConfigError, match=r"key column\(s\) \['k'\] are not mapped"):
        CassandraWriter(FakeSession(), "ks", "t", ["v"], key_columns=["k"], cql_types=TYPES)
    w = writer(FakeSession())
    with pytest.raises(ConfigError, match=r"input lacks column\(s\) \['v'\]"):
        w.write(pa.table({"k": ["a"]}))


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (WriteTimeout("t", write_type=0), True),
        (Unavailable("u"), True),
        (OperationTimedOut("o"), True),
        (NoHostAvailable("n", {}), True),
        (ConnectionShutdown("c"), True),
        (OverloadedErrorMessage(0x1001, "overloaded", None), True),
        (InvalidRequest("i"), False),
        (TypeError("t"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_transient_errors(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_replica_batches_keep_to_one_replica_set_and_their_limits() -> None:
    from sluice.store._writer import replica_groups

    owners = ["a", "b", "a", "a", "b", "c", "a", "a", "a"]
    sizes = [100, 100, 100, 4000, 100, 100, 1500, 100, 6000]
    groups = replica_groups(owners, sizes, max_rows=3, max_bytes=5120)
    assert sorted(i for g in groups for i in g) == list(range(len(owners)))  # each row once
    for g in groups:
        assert len({owners[i] for i in g}) == 1, g  # one replica set a batch
        assert len(g) <= 3
        assert sum(sizes[i] for i in g) <= 5120 or len(g) == 1, g  # a lone large row goes alone
        assert g == sorted(g)
    # "a": 0, 2 (200 B) + 3 (4000 B) = 4200; + 6 (1500) would pass 5 KiB; 6, 7; 8 (6000) alone
    assert [g for g in groups if owners[g[0]] == "a"] == [[0, 2, 3], [6, 7], [8]]
    assert replica_groups([], [], max_rows=10, max_bytes=5120) == []


def test_replica_batches_cover_at_most_ten_partitions_and_size_only_shared_ones() -> None:
    """Within Cassandra's default warning thresholds: at most BATCH_PARTITIONS partitions
    an unlogged batch, and BATCH_BYTES for a batch of more than one partition (one
    partition's batch is not size-checked by the server)."""
    from sluice.store._writer import BATCH_PARTITIONS, replica_groups

    # 25 partitions of 2 rows each, one replica set: 10 partitions (20 rows) a batch.
    parts = [p for p in range(25) for _ in range(2)]
    groups = replica_groups(["a"] * 50, [10] * 50, 64, 5120, parts)
    assert [len({parts[i] for i in g}) for g in groups] == [BATCH_PARTITIONS, BATCH_PARTITIONS, 5]
    assert [i for g in groups for i in g] == list(range(50))
    # Without partitions each row is one: 25 rows -> 10, 10, 5.
    assert [len(g) for g in replica_groups(["a"] * 25, [10] * 25, 64, 5120)] == [10, 10, 5]
    # One partition of 40 rows x 200 B (8 KB) stays one batch; a second partition after
    # it starts a new one, as does a row past 5 KiB in a batch of two partitions.
    parts = [0] * 40 + [1] + [2] * 30
    groups = replica_groups(["a"] * 71, [200] * 71, 64, 5120, parts)
    assert [len(g) for g in groups] == [40, 25, 6]


@pytest.mark.parametrize(("field", "value", "least"), [
    ("ttl_s", -5, 0), ("concurrency", 0, 1), ("retries", -1, 0), ("backoff_s", -0.5, 0),
    ("chunk_rows", 0, 1), ("partition_batch_rows", -1, 0), ("replica_batch_rows", -2, 0)])
def test_write_options_name_the_field_and_the_rule(field, value, least):
    with pytest.raises(ValueError, match=rf"^WriteOptions\.{field} must be >= {least}, "
                                         rf"got {value}$"):  # fmt: skip
        WriteOptions(**{field: value})

