"""Every mapped Arrow type written through the writer and read back from real Cassandra."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from sluice.store import CassandraWriter, WriteOptions, arrow_to_cql, session_for

pytestmark = pytest.mark.integration

I64 = np.iinfo(np.int64)
U1, U2 = uuid.UUID(int=1), uuid.uuid4()
SCHEMA = pa.schema([
    ("k", pa.string()), ("i8", pa.int8()), ("i16", pa.int16()), ("i32", pa.int32()),
    ("i64", pa.int64()), ("u32", pa.uint32()), ("f32", pa.float32()), ("f64", pa.float64()),
    ("dec", pa.decimal128(38, 6)), ("s", pa.string()), ("b", pa.bool_()), ("bin", pa.binary()),
    ("ts", pa.timestamp("ms", tz="UTC")), ("ts_us", pa.timestamp("us", tz="UTC")),
    ("d", pa.date32()), ("t", pa.time64("us")), ("u", pa.uuid()), ("ufx", pa.binary(16)),
    ("ustr", pa.string()), ("l", pa.list_(pa.int64())), ("ll", pa.list_(pa.list_(pa.string()))),
    ("m", pa.map_(pa.string(), pa.float64())),
])  # fmt: skip
DECLARED = {"ustr": "uuid"}  # a string column the table declares as uuid

ROWS = {
    "min": dict(
        i8=-128, i16=-(2**15), i32=-(2**31), i64=I64.min, u32=0, f32=-3.4e38,
        f64=-math.inf, dec=Decimal("-99999999999999999999999999999999.999999"), s="", b=False,
        bin=b"\x00", ts=datetime(1, 1, 1, tzinfo=UTC), ts_us=datetime(1970, 1, 1, tzinfo=UTC),
        d=-(2**31), t=0, u=U1, ufx=U1.bytes, ustr=str(U1), l=[], ll=[[]], m={},
    ),
    "max": dict(
        i8=127, i16=2**15 - 1, i32=2**31 - 1, i64=I64.max, u32=2**32 - 1, f32=3.4e38,
        f64=math.inf, dec=Decimal("99999999999999999999999999999999.999999"),
        s="żółć ✓ 🚀 \u0000 end", b=True, bin=bytes(range(256)),
        ts=datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
        ts_us=datetime(2024, 2, 29, 12, 0, 0, 123999, tzinfo=UTC), d=2**31 - 1,
        t=86_400_000_000 - 1, u=U2, ufx=U2.bytes, ustr=str(U2), l=[I64.min, 0, I64.max],
        ll=[["a"], [], ["b", "ü"]], m={"ü": 1e308, "": -0.0},
    ),
    "nan": dict(f64=math.nan, f32=math.nan, m={"x": math.nan}, ts_us=datetime(1969, 12, 31,
                23, 59, 59, 999999, tzinfo=UTC)),  # fmt: skip
    "nulls": {},
}


def arrow_rows() -> pa.Table:
    cols = {name: [] for name in SCHEMA.names}
    for key, values in ROWS.items():
        cols["k"].append(key)
        for name in SCHEMA.names[1:]:
            cols[name].append(values.get(name))
    arrays = []
    for f in SCHEMA:
        if f.name == "d":
            arrays.append(pa.array(cols["d"], pa.int32()).cast(pa.date32()))
        else:
            arrays.append(pa.array(cols[f.name], f.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def floor_ms(when: datetime | None) -> int | None:
    if when is None:
        return None
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.fixture(scope="module")
def written(store_cfg):
    session = session_for(store_cfg)
    ks = store_cfg.keyspace
    session.execute(
        f"CREATE KEYSPACE {ks} WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    cols = ", ".join(f"{f.name} {DECLARED.get(f.name) or arrow_to_cql(f.type)}" for f in SCHEMA)
    session.execute(f"CREATE TABLE {ks}.types ({cols}, PRIMARY KEY (k))")
    session.cluster.refresh_table_metadata(ks, "types")
    options = WriteOptions.from_config(store_cfg)
    writer = CassandraWriter(session, ks, "types", SCHEMA.names, options)
    assert writer.write(arrow_rows()) == len(ROWS)
    cols = ", ".join(
        f"toUnixTimestamp({n})" if n in ("ts", "ts_us") else n for n in SCHEMA.names
    )
    got = {}
    for row in session.execute(f"SELECT {cols} FROM {ks}.types"):
        got[row[0]] = dict(zip(SCHEMA.names, row, strict=True))
    return got


@pytest.mark.parametrize("key", list(ROWS))
def test_every_type_round_trips(written, key: str) -> None:
    row, want = written[key], ROWS[key]
    for name in SCHEMA.names[1:]:
        expected, value = want.get(name), row[name]
        if name in ("ts", "ts_us"):
            expected = floor_ms(expected)  # CQL timestamps hold milliseconds
        elif name == "f32" and expected is not None and not math.isnan(expected):
            expected = float(np.float32(expected))
        elif name == "d" and value is not None:
            value = value.days_from_epoch
        elif name == "t" and value is not None:
            value = value.nanosecond_time // 1000
        elif name == "ufx" and expected is not None:
            expected = uuid.UUID(bytes=expected)
        elif name == "ustr" and expected is not None:
            expected = uuid.UUID(expected)
        elif name == "m" and value is not None:
            value = dict(value)
            assert value.keys() == expected.keys()
            assert all(same(value[k], expected[k]) for k in expected), (value, expected)
            continue
        assert same(value, expected), f"{key}.{name}: wrote {expected!r}, read {value!r}"


def test_rewriting_the_same_rows_changes_nothing(store_cfg, written) -> None:
    session = session_for(store_cfg)
    ks = store_cfg.keyspace
    options = WriteOptions.from_config(store_cfg)
    writer = CassandraWriter(session, ks, "types", SCHEMA.names, options)
    assert writer.write(arrow_rows()) == len(ROWS)
    assert session.execute(f"SELECT COUNT(*) FROM {ks}.types").one()[0] == len(ROWS)
