"""The Arrow -> CQL type map and the column-wise conversion to driver values."""

from __future__ import annotations

import decimal
import re
import uuid
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pytest

from sluice.store import arrow_to_cql, check_compatible, to_python


@pytest.mark.parametrize(
    ("arrow", "cql"),
    [
        (pa.int8(), "tinyint"),
        (pa.int16(), "smallint"),
        (pa.int32(), "int"),
        (pa.int64(), "bigint"),
        (pa.uint8(), "smallint"),
        (pa.uint16(), "int"),
        (pa.uint32(), "bigint"),
        (pa.uint64(), "varint"),
        (pa.float16(), "float"),
        (pa.float32(), "float"),
        (pa.float64(), "double"),
        (pa.decimal128(10, 2), "decimal"),
        (pa.decimal256(40, 5), "decimal"),
        (pa.string(), "text"),
        (pa.large_string(), "text"),
        (pa.bool_(), "boolean"),
        (pa.binary(), "blob"),
        (pa.binary(8), "blob"),
        (pa.timestamp("s"), "timestamp"),
        (pa.timestamp("us", tz="UTC"), "timestamp"),
        (pa.timestamp("ns", tz="Europe/Paris"), "timestamp"),
        (pa.date32(), "date"),
        (pa.date64(), "date"),
        (pa.time64("us"), "time"),
        (pa.uuid(), "uuid"),
        (pa.binary(16), "uuid"),
        (pa.list_(pa.int32()), "frozen<list<int>>"),
        (pa.large_list(pa.string()), "frozen<list<text>>"),
        (pa.list_(pa.list_(pa.float64())), "frozen<list<frozen<list<double>>>>"),
        (pa.map_(pa.string(), pa.float64()), "frozen<map<text, double>>"),
        (pa.map_(pa.int64(), pa.list_(pa.string())), "frozen<map<bigint, frozen<list<text>>>>"),
        (pa.dictionary(pa.int32(), pa.string()), "text"),
    ],
    ids=str,
)
def test_arrow_to_cql(arrow: pa.DataType, cql: str) -> None:
    assert arrow_to_cql(arrow) == cql


@pytest.mark.parametrize(
    "arrow", [pa.struct([("a", pa.int32())]), pa.null(), pa.duration("s")], ids=str
)
def test_unmapped_types_are_refused_naming_the_type(arrow: pa.DataType) -> None:
    with pytest.raises(TypeError, match=re.escape(f"Arrow type {arrow} has no Cassandra")):
        arrow_to_cql(arrow)


@pytest.mark.parametrize(
    ("arrow", "cql", "ok"),
    [
        (pa.int32(), "bigint", True),
        (pa.int64(), "int", False),
        (pa.float32(), "double", True),
        (pa.float64(), "float", False),
        (pa.string(), "uuid", True),
        (pa.string(), "varchar", True),
        (pa.string(), "double", False),
        (pa.map_(pa.string(), pa.float64()), "frozen<map<text,double>>", True),
        (pa.map_(pa.string(), pa.float64()), "map<text, double>", True),
        (pa.timestamp("us", tz="UTC"), "timestamp", True),
        (pa.timestamp("us", tz="UTC"), "bigint", False),
    ],
)
def test_check_compatible(arrow: pa.DataType, cql: str, ok: bool) -> None:
    why = check_compatible(arrow, cql)
    assert (why is None) == ok, why
    if not ok:
        assert cql in why


def test_ints_and_floats_keep_nulls_and_extremes() -> None:
    big = pa.array([np.iinfo(np.int64).min, None, np.iinfo(np.int64).max], pa.int64())
    assert to_python(big, "bigint") == [-(2**63), None, 2**63 - 1]
    d = pa.array([float("inf"), float("-inf"), 0.5], pa.float64())
    assert to_python(d, "double") == [float("inf"), float("-inf"), 0.5]
    nan = to_python(pa.array([float("nan")], pa.float64()), "double")[0]
    assert nan != nan
    assert to_python(pa.chunked_array([[1, 2], [3]], pa.int8()), "tinyint") == [1, 2, 3]
    assert all(type(v) is int for v in to_python(pa.array([1, 2], pa.int16()), "smallint"))


@pytest.mark.parametrize(
    ("unit", "raw", "ms"),
    [
        ("s", [1, -1], [1000, -1000]),
        ("ms", [1, -1], [1, -1]),
        ("us", [1_999, -1], [1, -1]),  # floored to the millisecond, also before 1970
        ("ns", [2_000_001, -1], [2, -1]),
    ],
)
def test_timestamps_become_epoch_milliseconds(unit: str, raw: list[int], ms: list[int]) -> None:
    arr = pa.array(raw + [None], pa.int64()).cast(pa.timestamp(unit, tz="UTC"))
    assert to_python(arr, "timestamp") == ms + [None]


def test_dates_become_offset_day_numbers_even_outside_python_dates() -> None:
    arr = pa.array([0, -1, -(2**31), 2**31 - 1, None], pa.int32()).cast(pa.date32())
    assert to_python(arr, "date") == [2**31, 2**31 - 1, 0, 2**32 - 1, None]
    d64 = pa.array([date(1970, 1, 2)], pa.date64())
    assert to_python(d64, "date") == [2**31 + 1]


def test_uuids_from_extension_fixed_binary_and_strings() -> None:
    u = uuid.uuid4()
    ext = pa.array([u, None], pa.uuid())
    assert to_python(ext, "uuid") == [u, None]
    assert to_python(pa.array([u.bytes, None], pa.binary(16)), "uuid") == [u, None]
    assert to_python(pa.array([str(u), None]), "uuid") == [u, None]


def test_collections_decimals_and_strings() -> None:
    m = pa.array([[("a", 1.0)], [], None], pa.map_(pa.string(), pa.float64()))
    assert to_python(m, "frozen<map<text, double>>") == [{"a": 1.0}, {}, None]
    lst = pa.array([[1, 2], [], None], pa.list_(pa.int64()))
    assert to_python(lst, "frozen<list<bigint>>") == [[1, 2], [], None]
    dec = pa.array([decimal.Decimal("1.25"), None], pa.decimal128(5, 2))
    assert to_python(dec, "decimal") == [decimal.Decimal("1.25"), None]
    s = pa.array(["żółć ✓ 🚀", "", None])
    assert to_python(s, "text") == ["żółć ✓ 🚀", "", None]
    dic = pa.array(["x", "y", "x"]).dictionary_encode()
    assert to_python(dic, "text") == ["x", "y", "x"]


def test_nested_timestamps_stay_datetimes() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    arr = pa.array([[when]], pa.list_(pa.timestamp("us", tz="UTC")))
    assert to_python(arr, "frozen<list<timestamp>>") == [[when]]


def test_maps_of_sliced_and_chunked_arrays() -> None:
    m = pa.array([[("a", 1.0)], [], None, [("b", 2.0), ("c", 3.0)]],
                 pa.map_(pa.string(), pa.float64()))  # fmt: skip
    assert to_python(m.slice(1), "map<text, double>") == [{}, None, {"b": 2.0, "c": 3.0}]
    assert to_python(m.slice(3), "map<text, double>") == [{"b": 2.0, "c": 3.0}]
    chunked = pa.chunked_array([m.slice(2), m.slice(0, 2)])
    assert to_python(chunked, "map<text, double>") == [None, {"b": 2.0, "c": 3.0}, {"a": 1.0}, {}]
