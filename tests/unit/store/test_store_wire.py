"""Column-wise serialization gives byte for byte what the driver's ``bind`` would send."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import numpy as np
import pyarrow as pa
import pytest
from cassandra.cqltypes import lookup_casstype

from sluice.store._types import to_python
from sluice.store._wire import COLUMN_WISE_MIN_ROWS, _wire, serialize

DRIVER = {
    "tinyint": "ByteType", "smallint": "ShortType", "int": "Int32Type", "bigint": "LongType",
    "float": "FloatType", "double": "DoubleType", "boolean": "BooleanType",
    "text": "UTF8Type", "blob": "BytesType", "timestamp": "DateType", "date": "SimpleDateType",
    "uuid": "UUIDType", "decimal": "DecimalType", "varint": "IntegerType", "time": "TimeType",
    "frozen<map<text, double>>": "FrozenType(MapType(UTF8Type, DoubleType))",
    "frozen<map<text, bigint>>": "FrozenType(MapType(UTF8Type, LongType))",
    "frozen<list<int>>": "FrozenType(ListType(Int32Type))",
    "frozen<list<frozen<list<text>>>>": "FrozenType(ListType(FrozenType(ListType(UTF8Type))))",
    "frozen<map<text, frozen<list<double>>>>":
        "FrozenType(MapType(UTF8Type, FrozenType(ListType(DoubleType))))",
}  # fmt: skip


def driver_bytes(column: pa.Array | pa.ChunkedArray, cql: str) -> list[bytes | None]:
    """What ``BoundStatement.bind`` sends for each value (the driver's own serializer)."""
    kind = lookup_casstype(DRIVER[cql])
    return [None if v is None else kind.serialize(v, 5) for v in to_python(column, cql)]


def ours(column: pa.Array | pa.ChunkedArray, cql: str) -> list[bytes | None]:
    values, errors = serialize(column, cql, lookup_casstype(DRIVER[cql]), 5)
    assert errors == {}
    return values


TS = [0, 1_700_000_000_123_456, -1_500, None, -86_400_000_001]
COLUMN_WISE = [
    (pa.array([1, -2, None, 127], pa.int8()), "tinyint"),
    (pa.array([1, -2, None, 127], pa.int8()), "bigint"),
    (pa.array([1, None, -32768], pa.int16()), "smallint"),
    (pa.array([1, None, 2**31 - 1, -(2**31)], pa.int32()), "int"),
    (pa.array([1, None, 2**63 - 1, -(2**63)], pa.int64()), "bigint"),
    (pa.array([0, 255, None], pa.uint8()), "smallint"),
    (pa.array([0, 2**32 - 1], pa.uint32()), "bigint"),
    (pa.array([1.5, None, float("inf"), -0.0], pa.float32()), "float"),
    (pa.array([1.5, None, 3.4e38], pa.float32()), "double"),
    (pa.array([0.1, None, -1e300, float("-inf")], pa.float64()), "double"),
    (pa.array([True, False, None]), "boolean"),
    (pa.array(["a", "", None, "é日本 card"]), "text"),
    (pa.array(["x", None], pa.large_string()), "text"),
    (pa.array([b"\x00\x01", b"", None]), "blob"),
    (pa.array(["fr", "us", None, "fr"]).dictionary_encode(), "text"),
    (pa.array(TS, pa.timestamp("us", tz="UTC")), "timestamp"),
    (pa.array(TS, pa.timestamp("ns")), "timestamp"),
    (pa.array([0, -5, None, 1_700_000_000], pa.timestamp("s")), "timestamp"),
    (pa.array([dt.date(2026, 12, 3), None, dt.date(1, 1, 1), dt.date(9999, 12, 31)]), "date"),
    (pa.array([0, None, -86_400_000 * 3 - 1, 1_764_720_000_000], pa.date64()), "date"),
    (pa.array([{"a": 1.0, "b": -2.5}, {}, None, {"z": 0.0}], pa.map_(pa.string(), pa.float64())),
     "frozen<map<text, double>>"),
    (pa.array([{"a": 1}, None, {"b": -(2**31), "c": 3}], pa.map_(pa.string(), pa.int32())),
     "frozen<map<text, bigint>>"),
    (pa.array([[1, 2, 3], [], None, [-1]], pa.list_(pa.int32())), "frozen<list<int>>"),
    (pa.array([[["a"], []], None, [["b", "c"]]], pa.list_(pa.list_(pa.string()))),
     "frozen<list<frozen<list<text>>>>"),
    (pa.array([{"w": [1.0, 2.0]}, {"v": []}], pa.map_(pa.string(), pa.list_(pa.float64()))),
     "frozen<map<text, frozen<list<double>>>>"),
]  # fmt: skip


@pytest.mark.parametrize(("column", "cql"), COLUMN_WISE, ids=lambda v: str(getattr(v, "type", v)))
def test_column_wise_bytes_are_the_drivers(column: pa.Array, cql: str) -> None:
    plain = column.dictionary_decode() if pa.types.is_dictionary(column.type) else column
    want = cql.replace(" ", "")
    assert _wire(plain, want).to_pylist() == driver_bytes(column, cql)
    # A slice (offsets into its parent's buffers) gives the same.
    tail = plain.slice(1)
    assert _wire(tail, want).to_pylist() == driver_bytes(tail, cql)
    # serialize takes the column-wise form from COLUMN_WISE_MIN_ROWS rows on (these columns
    # repeated, dictionary-encoded ones too), value by value below: the same bytes either
    # way, chunked or not.
    many = pa.concat_arrays([column] * (COLUMN_WISE_MIN_ROWS // len(column) + 1))
    assert len(many) >= COLUMN_WISE_MIN_ROWS
    for col in (column, many, pa.chunked_array([many.slice(0, 2), many.slice(2)])):
        assert ours(col, cql) == driver_bytes(col, cql)


def test_small_columns_go_value_by_value_and_large_ones_column_wise(monkeypatch) -> None:
    import sluice.store._wire as wire

    calls = []
    monkeypatch.setattr(wire, "_wire", lambda arr, want: calls.append(len(arr)) or _wire(arr, want))
    column = pa.array(np.arange(COLUMN_WISE_MIN_ROWS, dtype=np.int64))
    assert ours(column.slice(1), "bigint") == driver_bytes(column.slice(1), "bigint")
    assert calls == []
    assert ours(column, "bigint") == driver_bytes(column, "bigint")
    assert calls == [COLUMN_WISE_MIN_ROWS]


VALUE_WISE = [
    (pa.array(["0b5c3f6e-1b6a-4b8e-9d3a-2f7c8e9a1b2c", None]), "uuid"),
    (pa.array([decimal.Decimal("1.25"), None], pa.decimal128(5, 2)), "decimal"),
    (pa.array([2**64 - 1, 0], pa.uint64()), "varint"),
    (pa.array([dt.time(1, 2, 3, 4), None]), "time"),
    (pa.array([1, 2], pa.int64()), "int"),  # narrowing: the driver checks the range
    (pa.array([1.5, 2.0], pa.float64()), "float"),
    (pa.array([{"a": None}], pa.map_(pa.string(), pa.float64())), "frozen<map<text, double>>"),
]  # fmt: skip


@pytest.mark.parametrize(("column", "cql"), VALUE_WISE, ids=lambda v: str(getattr(v, "type", v)))
def test_other_columns_go_value_by_value_through_the_driver(column: pa.Array, cql: str) -> None:
    assert _wire(column, cql.replace(" ", "")) is None
    assert ours(column, cql) == driver_bytes(column, cql)


def test_a_value_the_driver_refuses_is_that_rows_error_not_the_columns() -> None:
    column = pa.array([1, 2**40, None, -(2**35), 7], pa.int64())  # into a 32-bit int column
    values, errors = serialize(column, "int", lookup_casstype("Int32Type"), 5)
    assert sorted(errors) == [1, 3]
    assert all(isinstance(e, TypeError) and "int" in str(e) for e in errors.values())
    assert values[0] == (1).to_bytes(4, "big") and values[4] == (7).to_bytes(4, "big")
    assert values[1] is None and values[2] is None


def test_a_badly_formed_uuid_string_fails_its_row_alone() -> None:
    good = "0b5c3f6e-1b6a-4b8e-9d3a-2f7c8e9a1b2c"
    column = pa.array([good, "not-a-uuid", None])
    values, errors = serialize(column, "uuid", lookup_casstype("UUIDType"), 5)
    assert list(errors) == [1] and "uuid" in str(errors[1]) and "non-UUID" in str(errors[1])
    assert values == [uuid.UUID(good).bytes, None, None]


def test_a_uuid_column_stored_as_fixed_size_binary_goes_through_the_driver() -> None:
    u = uuid.UUID("0b5c3f6e-1b6a-4b8e-9d3a-2f7c8e9a1b2c")
    column = pa.array([u.bytes, None], pa.binary(16))
    assert ours(column, "uuid") == [u.bytes, None]


def test_a_large_column_is_exact_at_its_ends() -> None:
    n = 100_000
    column = pa.array(np.arange(n, dtype=np.int64) * 7919 - n)
    assert ours(column, "bigint") == driver_bytes(column, "bigint")
