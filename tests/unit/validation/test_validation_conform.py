"""conform: raw JSON-like records and mistyped Arrow tables cast to the input schema."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from sluice.errors import ConfigError
from sluice.validation import Reason, castable, conform

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("amount", pa.float64()),
        ("when", pa.timestamp("us", tz="UTC")),
        ("flag", pa.int8()),
    ]
)
OF_TYPE = "expect_column_values_to_be_of_type"
T = datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_clean_records_cast_without_rejections():
    raw = [
        {"id": "a", "amount": 12.5, "when": "2024-05-01T12:00:00Z", "flag": 1},
        {"id": "b", "amount": 3, "when": "2024-05-01T14:00:00+02:00", "flag": 0},
    ]
    table, rejected = conform(raw, SCHEMA)
    assert rejected == []
    assert table.schema == SCHEMA
    assert table.column("amount").to_pylist() == [12.5, 3.0]
    assert table.column("when").to_pylist() == [T, T]


def test_wrong_types_are_rejected_with_column_and_raw_value():
    raw = [
        {
            "id": "a",
            "amount": "12.5",
            "when": "2024-05-01T12:00:00Z",
            "flag": 1,
        },  # string number: fine
        {"id": 7, "amount": True, "when": "yesterday", "flag": 1.5},
        {"id": "c", "amount": "abc", "when": "2024-05-01 12:00:00", "flag": 300},
    ]
    table, rejected = conform(raw, SCHEMA)
    assert table.num_rows == 3  # row numbers stay the raw ones
    assert [row for row, _ in rejected] == [1, 2]
    assert rejected[0][1] == [
        Reason(OF_TYPE, "id", "7"),
        Reason(OF_TYPE, "amount", "True"),
        Reason(OF_TYPE, "when", "'yesterday'"),
        Reason(OF_TYPE, "flag", "1.5"),
    ]
    assert rejected[1][1] == [
        Reason(OF_TYPE, "amount", "'abc'"),
        Reason(OF_TYPE, "when", "'2024-05-01 12:00:00'"),  # no zone: ambiguous
        Reason(OF_TYPE, "flag", "300"),
    ]
    assert table.column("amount").to_pylist() == [12.5, None, None]
    assert table.column("id").to_pylist() == ["a", None, "c"]


def test_missing_fields_become_null_and_extras_are_dropped_by_default():
    table, rejected = conform([{"id": "a", "surprise": 1}], SCHEMA)
    assert rejected == []
    assert table.column_names == SCHEMA.names
    assert table.column("amount").to_pylist() == [None]


def test_extras_can_be_rejected():
    _, rejected = conform([{"id": "a"}, {"id": "b", "surprise": {"x": 1}}], SCHEMA, extra="reject")
    assert rejected == [(1, [Reason("expect_table_columns_to_match_set", "surprise", "{'x': 1}")])]
    with pytest.raises(ConfigError, match="extra must be"):
        conform([], SCHEMA, extra="keep")  # type: ignore[arg-type]


def test_records_that_are_not_objects():
    table, rejected = conform([{"id": "a"}, ["not", "an", "object"], "x"], SCHEMA)
    assert [row for row, _ in rejected] == [1, 2]
    assert rejected[0][1] == [Reason(OF_TYPE, None, "['not', 'an', 'object']")]
    assert table.num_rows == 3


def test_csv_like_table_of_strings():
    raw = pa.table(
        {
            "id": ["a", "b", "c", None],
            "amount": ["1.5", "nan", "-inf", "12,5"],
            "when": ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z", "bad", None],
            "flag": ["1", "0", "1", "2"],
        }
    )
    table, rejected = conform(raw, SCHEMA)
    assert rejected == [
        (2, [Reason(OF_TYPE, "when", "'bad'")]),
        (3, [Reason(OF_TYPE, "amount", "'12,5'")]),
    ]
    amounts = table.column("amount").to_pylist()
    assert amounts[0] == 1.5 and math.isnan(amounts[1]) and amounts[2] == -math.inf
    assert table.column("flag").type == pa.int8()


def test_arrow_types_that_are_not_allowed():
    raw = pa.table(
        {
            "id": pa.array([1, 2]),
            "amount": pa.array([True, None]),
            "when": pa.array([T.replace(tzinfo=None)] * 2, pa.timestamp("us")),  # naive
            "flag": pa.array([1.0, 2.5]),
        }
    )
    table, rejected = conform(raw, SCHEMA)
    assert rejected == [
        (
            0,
            [
                Reason(OF_TYPE, "id", "1"),
                Reason(OF_TYPE, "amount", "True"),
                Reason(OF_TYPE, "when", "datetime.datetime(2024, 5, 1, 12, 0)"),
            ],
        ),
        (
            1,
            [
                Reason(OF_TYPE, "id", "2"),
                Reason(OF_TYPE, "when", "datetime.datetime(2024, 5, 1, 12, 0)"),
                Reason(OF_TYPE, "flag", "2.5"),
            ],
        ),
    ]
    assert table.column("flag").to_pylist() == [1, None]


def test_many_bad_cells_are_found_by_bisection():
    values = [str(i) for i in range(10_000)]
    for i in (5, 999, 5000, 9999):
        values[i] = f"x{i}"
    table, rejected = conform(pa.table({"amount": values}), pa.schema([("amount", pa.float64())]))
    assert [row for row, _ in rejected] == [5, 999, 5000, 9999]
    assert table.column("amount").null_count == 4


def test_timestamps_with_another_unit_or_zone():
    raw = pa.table({"when": pa.array([T], pa.timestamp("ms", tz="Europe/Paris"))})
    table, rejected = conform(raw, pa.schema([("when", pa.timestamp("us", tz="UTC"))]))
    assert rejected == [] and table.column("when").to_pylist() == [T]


def test_not_a_table_or_list():
    with pytest.raises(ConfigError, match="a pyarrow Table or a list of objects"):
        conform("{}", SCHEMA)  # type: ignore[arg-type]


STRINGS = ["a", None, "7", "x"]


@pytest.mark.parametrize(
    "column",
    [
        pa.array(STRINGS, pa.string()),
        pa.array(STRINGS, pa.large_string()),
        pa.array(STRINGS, pa.string_view()),
        pa.array(STRINGS, pa.string()).dictionary_encode(),
        pa.DictionaryArray.from_arrays(
            pa.array([0, None, 1, 2], pa.int8()), pa.array(["a", "7", "x"], pa.string_view())
        ),
    ],
    ids=["string", "large_string", "string_view", "dictionary", "dictionary-of-view"],
)
def test_every_string_encoding_of_a_parquet_file_is_conformed_alike(column):
    schema = pa.schema([("id", pa.string()), ("amount", pa.float64())])
    table, rejected = conform(pa.table({"id": column, "amount": column}), schema)
    assert table.column("id").to_pylist() == STRINGS
    assert table.column("amount").to_pylist() == [None, None, 7.0, None]
    assert [row for row, _ in rejected] == [0, 3]


def test_decimal_and_date_columns_are_conformed():
    raw = pa.table(
        {
            "amount": pa.array([decimal.Decimal("1.25"), None], pa.decimal128(10, 2)),
            "qty": pa.array(
                [decimal.Decimal("2.00"), decimal.Decimal("2.50")], pa.decimal128(5, 2)
            ),
            "day": pa.array([dt.date(2024, 5, 1), None], pa.date32()),
        }
    )
    schema = pa.schema([("amount", pa.float64()), ("qty", pa.int64()), ("day", pa.date32())])
    table, rejected = conform(raw, schema)
    assert table.column("amount").to_pylist() == [1.25, None]
    assert table.column("qty").to_pylist() == [2, None]  # 2.50 would be truncated
    assert table.column("day").to_pylist() == [dt.date(2024, 5, 1), None]
    assert rejected == [(1, [Reason(OF_TYPE, "qty", "Decimal('2.50')")])]


def test_a_table_with_duplicate_column_names_is_refused():
    raw = pa.table(
        [pa.array(["a"]), pa.array([1.0]), pa.array(["b"])], names=["id", "amount", "id"]
    )
    with pytest.raises(ConfigError, match=r"duplicate column names \['id'\]"):
        conform(raw, SCHEMA)


@pytest.mark.parametrize(("source", "target", "ok"), [
    (pa.timestamp("us"), pa.timestamp("us", tz="UTC"), False),  # a naive time: ambiguous
    (pa.timestamp("ns", tz="Europe/Paris"), pa.timestamp("us", tz="UTC"), True),
    (pa.dictionary(pa.int32(), pa.string()), pa.string(), True),  # Parquet's strings
    (pa.string_view(), pa.float64(), True),  # text, cast value by value
    (pa.int64(), pa.string(), False),
    (pa.float32(), pa.int64(), True),  # a number: each value cast exactly or refused
    (pa.null(), pa.bool_(), True),
    (pa.date64(), pa.date32(), False),
    (pa.bool_(), pa.bool_(), True),
])  # fmt: skip
def test_castable_says_whether_conform_takes_a_column_of_that_type(source, target, ok):
    assert castable(source, target) is ok


def test_castable_without_parsing_text_refuses_text_for_another_type():
    assert castable(pa.string(), pa.float64()) is True  # conform parses "12.5"
    assert castable(pa.string(), pa.float64(), parse_text=False) is False
    assert castable(pa.dictionary(pa.int32(), pa.string()), pa.string(), parse_text=False)
    assert castable(pa.int64(), pa.float64(), parse_text=False)


def test_a_column_castable_refuses_is_refused_cell_by_cell_by_conform():
    naive = pa.array([datetime(2024, 5, 1, 12)], pa.timestamp("us"))
    _, rejected = conform(pa.table({"t": naive}), pa.schema([("t", pa.timestamp("us", "UTC"))]))
    assert [r[0].expectation for _, r in rejected] == ["expect_column_values_to_be_of_type"]


def test_a_naive_datetime_is_refused_whatever_its_neighbours():
    naive, aware = datetime(2024, 5, 1, 12), datetime(2024, 5, 1, 12, tzinfo=UTC)
    schema = pa.schema([("w", pa.timestamp("us", tz="UTC"))])
    for rows, refused in (([{"w": naive}], [0]), ([{"w": aware}, {"w": naive}], [1]),
                          ([{"w": naive}, {"w": aware}], [0])):  # fmt: skip
        table, rejected = conform(rows, schema)
        assert [row for row, _ in rejected] == refused, rows
        assert table["w"].to_pylist() == [aware if r.get("w") is aware else None
                                          for r in rows]  # fmt: skip

