"""Column types a user's Parquet can carry: validated alike by both engines, or refused clearly.

Every supported expectation runs, through GX and both compiled paths, on a
column of each type. String encodings (``large_string``, ``string_view``,
dictionary) must give exactly the verdicts of a plain ``string`` column; other
types (``decimal128``, ``date32``) either agree or are refused by every path
with a `ConfigError` naming the expectation, the column and its Arrow type —
never an Arrow kernel error, never one engine answering where the other refuses.
"""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
import pytest
from validation_testkit import all_paths, assert_paths_agree, describe, suite_of

from sluice.errors import ConfigError
from sluice.validation import validate

pytestmark = pytest.mark.filterwarnings("ignore")

TEXT = ["a", None, "abc", "a", "é\n", ""]
STRING_ENCODINGS = {
    "large_string": pa.array(TEXT, pa.large_string()),
    "string_view": pa.array(TEXT, pa.string_view()),
    "dictionary": pa.array(TEXT, pa.string()).dictionary_encode(),
    "dictionary-of-view": pa.DictionaryArray.from_arrays(
        pa.array([0, None, 1, 0, 2, 3], pa.int32()),
        pa.array(["a", "abc", "é\n", ""], pa.string_view()),
    ),
}
OTHER = {
    "decimal128": pa.array(
        [decimal.Decimal(v) if v else None for v in ["1.50", None, "20.00", "1.50", "0.01", "3"]],
        pa.decimal128(10, 2),
    ),
    "date32": pa.array(
        [dt.date(2024, 1, d) if d else None for d in [1, None, 31, 1, 2, 3]], pa.date32()
    ),
}
EXPECTATIONS = [
    ("expect_column_to_exist", {}),
    ("expect_column_values_to_not_be_null", {}),
    ("expect_column_values_to_be_null", {"mostly": 0.1}),
    ("expect_column_values_to_be_between", {"min_value": 0, "max_value": 10}),
    ("expect_column_values_to_be_between", {"max_value": "2024-01-15T00:00:00"}),
    ("expect_column_values_to_be_in_set", {"value_set": ["a", "abc", 1.5]}),
    ("expect_column_values_to_not_be_in_set", {"value_set": ["", 20]}),
    ("expect_column_values_to_match_regex", {"regex": "^a"}),
    ("expect_column_values_to_not_match_regex", {"regex": r"\d$"}),
    ("expect_column_value_lengths_to_be_between", {"min_value": 1, "max_value": 3}),
    ("expect_column_value_lengths_to_equal", {"value": 1}),
    ("expect_column_values_to_be_of_type", {"type_": "str"}),
    ("expect_column_values_to_be_in_type_list", {"type_list": ["str", "Decimal", "date"]}),
    ("expect_column_values_to_be_unique", {}),
    (
        "expect_column_values_to_not_be_null",
        {"row_condition": 'c == "a"', "condition_parser": "pandas"},
    ),
]
IDS = [f"{t.removeprefix('expect_')}-{i}" for i, (t, _) in enumerate(EXPECTATIONS)]


def run(column: pa.Array, type_: str, kwargs: dict) -> dict:
    suite = suite_of((type_, {"column": "c", **kwargs}))
    return all_paths(pa.table({"c": column}), suite)


@pytest.mark.parametrize("encoding", sorted(STRING_ENCODINGS))
@pytest.mark.parametrize("type_, kwargs", EXPECTATIONS, ids=IDS)
def test_string_encodings_are_validated_as_plain_strings(encoding, type_, kwargs):
    results = run(STRING_ENCODINGS[encoding], type_, kwargs)
    plain = run(pa.array(TEXT, pa.string()), type_, kwargs)
    assert_paths_agree(results, f"{type_} on {encoding}")
    assert results["gx"][0] == plain["gx"][0], (results, plain)
    if plain["gx"][0] == "ok":
        assert describe(results["gx"][1]) == describe(plain["gx"][1])


@pytest.mark.parametrize("arrow_type", sorted(OTHER))
@pytest.mark.parametrize("type_, kwargs", EXPECTATIONS, ids=IDS)
def test_other_types_agree_or_are_refused_by_both_engines(arrow_type, type_, kwargs):
    column = OTHER[arrow_type]
    results = all_paths(pa.table({"c": column}), suite_of((type_, {"column": "c", **kwargs})))
    assert_paths_agree(results, f"{type_} on {arrow_type}")
    if results["gx"][0] == "error":
        for _, message in results.values():
            assert f"expectation #0 {type_}" in message
            assert str(column.type) in message


@pytest.mark.parametrize("arrow_type", sorted(OTHER))
def test_value_checks_on_other_types_are_refused_naming_the_supported_types(arrow_type):
    results = run(OTHER[arrow_type], "expect_column_values_to_be_in_set", {"value_set": [1]})
    for _, message in results.values():
        assert "cannot be evaluated on column 'c'" in message
        assert "runs on string, integer, uint64, float64, bool, null columns" in message


def test_a_table_with_duplicate_column_names_is_refused_by_both_engines():
    table = pa.table([pa.array([1]), pa.array(["x"])], names=["c", "c"])
    suite = suite_of(("expect_column_values_to_not_be_null", {"column": "c"}))
    for engine in ("gx", "compiled"):
        with pytest.raises(ConfigError, match=r"duplicate column names \['c'\]"):
            validate(table, suite, engine)
