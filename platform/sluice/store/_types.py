"""Arrow -> CQL: the column type a table declares, and the Python values the driver binds.

``arrow_to_cql`` is the one type map (pure, module level, parametrized tests):

    int8 tinyint · int16 smallint · int32 int · int64 bigint
    uint8 smallint · uint16 int · uint32 bigint · uint64 varint   (the next wider signed type)
    float16/float32 float · float64 double · decimal128/256 decimal
    string/large_string/string_view text · bool boolean · binary/large/fixed-size blob
    timestamp[*] timestamp · date32/date64 date · time32/time64 time
    arrow.uuid extension / fixed_size_binary(16) uuid   (a string column may be *declared* uuid)
    list<T> frozen<list<T'>> · map<K, V> frozen<map<K', V'>>

Collections are frozen: a whole-row upsert of a non-frozen collection first writes a
tombstone to clear the old value, so every replay would add tombstones; a frozen
collection is one cell that an upsert simply replaces, and it keeps ``[]`` apart from
null (a non-frozen empty collection reads back as null).

Cassandra's ``timestamp`` has millisecond precision: finer Arrow units are floored to
the millisecond (tables that need microseconds, like the feature events, use a
``bigint`` of microseconds instead).

``to_python`` converts one Arrow column to the list the driver binds, column-wise: ints
and floats through numpy, timestamps to integer milliseconds, dates to the driver's
offset day numbers (exact for every date32, even outside Python's ``date`` range).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from itertools import islice

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["arrow_to_cql", "check_compatible", "date_days", "normalize_cql_type", "timestamp_ms",
           "to_python"]  # fmt: skip

_SIMPLE: list[tuple[Callable[[pa.DataType], bool], str]] = [
    (pa.types.is_int8, "tinyint"),
    (pa.types.is_int16, "smallint"),
    (pa.types.is_int32, "int"),
    (pa.types.is_int64, "bigint"),
    (pa.types.is_uint8, "smallint"),
    (pa.types.is_uint16, "int"),
    (pa.types.is_uint32, "bigint"),
    (pa.types.is_uint64, "varint"),
    (pa.types.is_float16, "float"),
    (pa.types.is_float32, "float"),
    (pa.types.is_float64, "double"),
    (pa.types.is_decimal, "decimal"),
    (pa.types.is_string, "text"),
    (pa.types.is_large_string, "text"),
    (pa.types.is_string_view, "text"),
    (pa.types.is_boolean, "boolean"),
    (pa.types.is_binary, "blob"),
    (pa.types.is_large_binary, "blob"),
    (pa.types.is_fixed_size_binary, "blob"),  # 16 bytes wide is a uuid (checked first)
    (pa.types.is_timestamp, "timestamp"),
    (pa.types.is_date, "date"),
    (pa.types.is_time, "time"),
]

# Driver's `date` wire form: days since the epoch offset by 2**31 (an unsigned int).
_DATE_OFFSET = 2**31
_MS_PER_UNIT = {"s": 1000, "ms": 1, "us": 1 / 1000, "ns": 1 / 1_000_000}
_INT_WIDTH = {"tinyint": 8, "smallint": 16, "int": 32, "bigint": 64, "varint": 10_000}


def _is_uuid(t: pa.DataType) -> bool:
    return getattr(t, "extension_name", None) == "arrow.uuid" or (
        pa.types.is_fixed_size_binary(t) and t.byte_width == 16
    )


def arrow_to_cql(t: pa.DataType, *, _nested: bool = False) -> str:
    """The CQL type a column of Arrow type ``t`` is stored as (see the module table)."""
    if _is_uuid(t):
        return "uuid"
    for test, cql in _SIMPLE:
        if test(t):
            return cql
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"frozen<list<{arrow_to_cql(t.value_type, _nested=True)}>>"
    if pa.types.is_map(t):
        k = arrow_to_cql(t.key_type, _nested=True)
        v = arrow_to_cql(t.item_type, _nested=True)
        return f"frozen<map<{k}, {v}>>"
    if pa.types.is_dictionary(t):
        return arrow_to_cql(t.value_type, _nested=_nested)
    raise TypeError(
        f"Arrow type {t} has no Cassandra column type; cast the column to one of the "
        "mapped types (ints, floats, decimal, string, bool, binary, timestamp, date, time, "
        "uuid, list, map) before writing"
    )


def normalize_cql_type(text: str) -> str:
    """A CQL type string in one spelling: lower case, no spaces (``map<text,double>``)."""
    return re.sub(r"\s+", "", text).lower().replace("varchar", "text")


def check_compatible(t: pa.DataType, cql: str) -> str | None:
    """None when an Arrow column of type ``t`` can be written to a ``cql`` column, else why not.

    Exact mapping matches; beyond it: wider ints, floats into double, strings into
    uuid/ascii/inet, any int into varint, and un-frozen collections of the same shape.
    """
    want = normalize_cql_type(cql)
    try:
        have = normalize_cql_type(arrow_to_cql(t))
    except TypeError as exc:
        return str(exc)
    if have == want or have.removeprefix("frozen<").removesuffix(">") == want:
        return None
    if have in _INT_WIDTH and want in _INT_WIDTH and _INT_WIDTH[have] <= _INT_WIDTH[want]:
        return None
    if have == "float" and want == "double":
        return None
    if have == "text" and want in ("uuid", "timeuuid", "ascii", "inet"):
        return None
    return f"Arrow {t} is stored as {have}, the column is {cql}"


def _with_nulls(values: list, arr: pa.Array) -> list:
    if arr.null_count:
        for i in np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False)):
            values[i] = None
    return values


def _ints(arr: pa.Array) -> np.ndarray:
    return arr.fill_null(0).to_numpy(zero_copy_only=False) if arr.null_count else arr.to_numpy()


def timestamp_ms(arr: pa.Array) -> np.ndarray:
    """A timestamp array as integer milliseconds since the epoch, floored (nulls as 0)."""
    raw = _ints(arr.cast(pa.int64()))
    factor = _MS_PER_UNIT[arr.type.unit]
    return raw * int(factor) if factor >= 1 else np.floor_divide(raw, int(round(1 / factor)))


def date_days(arr: pa.Array) -> np.ndarray:
    """A date array as the driver's day numbers: days since the epoch + 2**31 (nulls as
    2**31)."""
    if pa.types.is_date64(arr.type):
        days = np.floor_divide(_ints(arr.cast(pa.int64())), 86_400_000)
    else:
        days = _ints(arr.cast(pa.int32())).astype(np.int64)
    return days + _DATE_OFFSET


def _uuids(arr: pa.Array) -> list:
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return [None if s is None else _uuid_or_text(s) for s in arr.to_pylist()]
    storage = arr.storage if isinstance(arr, pa.ExtensionArray) else arr
    return [None if b is None else uuid.UUID(bytes=b) for b in storage.to_pylist()]


def _uuid_or_text(text: str) -> uuid.UUID | str:
    """The UUID a string spells, or the string itself: the driver refuses it ("a non-UUID
    object"), which fails that row alone, with the others written."""
    try:
        return uuid.UUID(text)
    except ValueError:
        return text


def _maps(arr: pa.Array) -> list:
    # Cut the flat key/value lists per row: several times faster than to_pylist()'s list
    # of (key, value) tuples per row turned into a dict. ``offsets`` of a sliced array
    # point into the unsliced children, so the children are cut to [first, last) first.
    offsets = arr.offsets.to_numpy()
    first, last = int(offsets[0]), int(offsets[-1])
    keys = arr.keys.slice(first, last - first).to_pylist()
    items = arr.items.slice(first, last - first).to_pylist()
    pairs = zip(keys, items, strict=True)
    return _with_nulls([dict(islice(pairs, n)) for n in np.diff(offsets).tolist()], arr)


def to_python(column: pa.Array | pa.ChunkedArray, cql: str) -> list:
    """The values of ``column`` as the driver binds them into a ``cql`` column."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t, want = arr.type, normalize_cql_type(cql)
    if want in ("uuid", "timeuuid"):
        return _uuids(arr)
    if pa.types.is_timestamp(t):
        return _with_nulls(timestamp_ms(arr).tolist(), arr)
    if pa.types.is_date(t):
        return _with_nulls(date_days(arr).tolist(), arr)
    if (pa.types.is_integer(t) or pa.types.is_floating(t)) and not pa.types.is_float16(t):
        if arr.null_count:
            return arr.to_pylist()
        values = arr.to_numpy()
        if pa.types.is_floating(t) and want == "double":
            values = values.astype(np.float64)
        return values.tolist()
    if pa.types.is_map(t):
        return _maps(arr)
    if pa.types.is_fixed_size_list(t):
        return arr.cast(pa.list_(t.value_type)).to_pylist()
    if pa.types.is_string_view(t):
        return arr.cast(pa.string()).to_pylist()
    return arr.to_pylist()


def timestamp_micros(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A timestamp column as int64 microseconds since the epoch (exact for us/ms/s)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_timestamp(arr.type):
        raise TypeError(f"expected a timestamp column, got {arr.type}")
    return pc.cast(arr.cast(pa.timestamp("us", tz=arr.type.tz), safe=False), pa.int64())
