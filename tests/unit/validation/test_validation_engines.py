"""Each supported expectation on hand-made tables: explicit expected rows, on every path.

Every case runs through GX itself and both compiled paths (Python lists, Arrow
kernels); all must give the rows written down here.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from validation_testkit import all_paths, assert_paths_agree, rows_failing, suite_of

from sluice.contract import load_contract
from sluice.errors import ConfigError
from sluice.validation import MISSING_COLUMN, Reason, load_suite, validate

pytestmark = pytest.mark.filterwarnings("ignore")
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def expect_rows(
    table: pa.Table,
    type_: str,
    kwargs: dict,
    rows: list[int],
    success: bool,
    params: dict | None = None,
) -> None:
    suite = suite_of((type_, kwargs))
    results = all_paths(table, suite, params)
    assert_paths_agree(results, f"{type_} {kwargs}")
    for path, (kind, report) in results.items():
        assert kind == "ok", (path, report)
        got = (
            rows_failing(report)
            if suite.expectations[0].scope == "row"
            else (report.expectations[0].unexpected_index.tolist())
        )
        assert got == rows, (path, got)
        assert report.expectations[0].success is success, path


STRINGS = pa.table({"s": ["aaa", "abb", None, "", "bee", "ab\n"]})
NUMBERS = pa.table({"x": [0.0, 1.0, math.nan, None, 10.0, math.inf, -math.inf, 5.0]})


@pytest.mark.parametrize(
    "type_, kwargs, rows, success",
    [
        ("expect_column_values_to_not_be_null", {"column": "x"}, [2, 3], False),
        ("expect_column_values_to_not_be_null", {"column": "x", "mostly": 0.75}, [2, 3], True),
        ("expect_column_values_to_be_null", {"column": "x"}, [0, 1, 4, 5, 6, 7], False),
        (
            "expect_column_values_to_be_between",
            {"column": "x", "min_value": 0, "max_value": 10},
            [5, 6],
            False,
        ),
        (
            "expect_column_values_to_be_between",
            {
                "column": "x",
                "min_value": 0,
                "max_value": 10,
                "strict_min": True,
                "strict_max": True,
            },
            [0, 4, 5, 6],
            False,
        ),
        ("expect_column_values_to_be_between", {"column": "x", "min_value": 1}, [0, 6], False),
        (
            "expect_column_values_to_be_between",
            {"column": "x", "max_value": 5, "strict_max": True},
            [4, 5, 7],
            False,
        ),
        (
            "expect_column_values_to_be_between",
            {"column": "x", "min_value": 0, "max_value": 10, "mostly": 0.66},
            [5, 6],
            True,
        ),
        (
            "expect_column_values_to_be_in_set",
            {"column": "x", "value_set": [0, 1, 5, True]},
            [4, 5, 6],
            False,
        ),
        (
            "expect_column_values_to_not_be_in_set",
            {"column": "x", "value_set": [10, "5"]},
            [4],
            False,
        ),
    ],
)
def test_numeric_expectations(type_, kwargs, rows, success):
    expect_rows(NUMBERS, type_, kwargs, rows, success)


@pytest.mark.parametrize(
    "type_, kwargs, rows, success",
    [
        ("expect_column_values_to_not_be_null", {"column": "s"}, [2], False),
        ("expect_column_values_to_match_regex", {"column": "s", "regex": "^a"}, [3, 4], False),
        ("expect_column_values_to_match_regex", {"column": "s", "regex": "b$"}, [0, 3, 4], False),
        (
            "expect_column_values_to_match_regex",
            {"column": "s", "regex": "^a", "mostly": 0.6},
            [3, 4],
            True,
        ),
        (
            "expect_column_values_to_not_match_regex",
            {"column": "s", "regex": "b"},
            [1, 4, 5],
            False,
        ),
        (
            "expect_column_values_to_be_in_set",
            {"column": "s", "value_set": ["aaa", "", 1]},
            [1, 4, 5],
            False,
        ),
        (
            "expect_column_values_to_not_be_in_set",
            {"column": "s", "value_set": ["bee", None]},
            [4],
            False,
        ),
        ("expect_column_value_lengths_to_equal", {"column": "s", "value": 3}, [3], False),
        (
            "expect_column_value_lengths_to_be_between",
            {"column": "s", "min_value": 1, "max_value": 2},
            [0, 1, 3, 4, 5],
            False,
        ),
        (
            "expect_column_value_lengths_to_be_between",
            {"column": "s", "min_value": 3, "strict_min": True},
            [0, 1, 3, 4, 5],
            False,
        ),
    ],
)
def test_string_expectations(type_, kwargs, rows, success):
    expect_rows(STRINGS, type_, kwargs, rows, success)


def test_time_bounds_with_the_now_parameter_and_exact_edges():
    now = T0 + timedelta(days=1)
    times = [T0 - timedelta(microseconds=1), T0, now, now + timedelta(microseconds=1), None]
    table = pa.table({"t": pa.array(times, pa.timestamp("us", tz="UTC"))})
    kwargs = {
        "column": "t",
        "min_value": "2024-01-01T00:00:00Z",
        "max_value": {"$PARAMETER": "now"},
    }
    expect_rows(table, "expect_column_values_to_be_between", kwargs, [0, 3], False, {"now": now})
    strict = kwargs | {"strict_min": True, "strict_max": True}
    expect_rows(
        table, "expect_column_values_to_be_between", strict, [0, 1, 2, 3], False, {"now": now}
    )


def test_now_defaults_to_the_current_time():
    future = datetime.now(UTC) + timedelta(days=1)
    table = pa.table({"t": pa.array([T0, future], pa.timestamp("us", tz="UTC"))})
    kwargs = {"column": "t", "max_value": {"$PARAMETER": "now"}}
    expect_rows(table, "expect_column_values_to_be_between", kwargs, [1], False)


def test_missing_parameter_is_a_config_error():
    suite = suite_of(
        (
            "expect_column_values_to_be_between",
            {"column": "t", "max_value": {"$PARAMETER": "cutoff"}},
        )
    )
    table = pa.table({"t": pa.array([T0], pa.timestamp("us", tz="UTC"))})
    with pytest.raises(ConfigError, match="suite parameter 'cutoff' was not given"):
        validate(table, suite, "compiled")
    assert validate(table, suite, "compiled", {"cutoff": T0}).valid.tolist() == [True]


def test_a_time_as_a_row_count_parameter_is_refused_naming_the_argument():
    suite = suite_of(("expect_table_row_count_to_be_between",
                      {"min_value": {"$PARAMETER": "cutoff"}}))  # fmt: skip
    table = pa.table({"x": [1.0, 2.0]})
    for engine in ("compiled", "gx"):
        with pytest.raises(ConfigError, match="min_value must be an integer, got a datetime"):
            validate(table, suite, engine, {"cutoff": T0})


@pytest.mark.parametrize(
    "type_, kwargs, value, verdicts",
    [
        ("expect_column_values_to_be_between", {"column": "t"}, "2024-01-01T00:00:00Z", [1, 0]),
        ("expect_column_values_to_be_between", {"column": "t"}, "Jan 2 2024", None),
        ("expect_column_values_to_be_between", {"column": "x"}, "5", [0, 1]),
        ("expect_column_values_to_be_between", {"column": "x"}, "five", None),
        ("expect_column_values_to_be_in_set", {"column": "x"}, [1.0], [1, 0]),
        ("expect_column_values_to_be_in_set", {"column": "x"}, "1", None),
        ("expect_column_values_to_not_be_null", {"column": "x"}, 2, None),
    ],
)
def test_parameters_are_parsed_once_the_same_way_for_both_engines(type_, kwargs, value, verdicts):
    """A parameter value goes through the suite loader's parse for both engines: the
    same verdicts, or the same ConfigError naming the argument — never GX's own parse
    (which raised a bare pydantic error) against ours."""
    key = {
        "expect_column_values_to_be_between": "max_value"
        if kwargs["column"] == "t"
        else "min_value",
        "expect_column_values_to_be_in_set": "value_set",
        "expect_column_values_to_not_be_null": "mostly",
    }[type_]
    suite = suite_of((type_, {**kwargs, key: {"$PARAMETER": "p"}}))
    table = pa.table(
        {
            "t": pa.array([T0, T0 + timedelta(hours=1)], pa.timestamp("us", tz="UTC")),
            "x": [1.0, 7.0],
        }
    )
    results = all_paths(table, suite, {"p": value})
    if verdicts is None:
        messages = {message for kind, message in results.values()}
        assert {kind for kind, _ in results.values()} == {"error"}, results
        assert len(messages) == 1, messages  # one parse, one message
        assert f"{key}:" in messages.pop()
        return
    assert_paths_agree(results, f"{type_} {value!r}")
    assert results["gx"][1].verdicts[:, 0].tolist() == [bool(v) for v in verdicts]


def test_uniqueness_is_batch_level():
    table = pa.table({"k": ["a", "b", "a", None, None, "c"]})
    expect_rows(table, "expect_column_values_to_be_unique", {"column": "k"}, [0, 2], False)
    suite = suite_of(("expect_column_values_to_be_unique", {"column": "k"}))
    for engine in ("gx", "compiled"):
        report = validate(table, suite, engine)
        assert report.valid.all() and report.reasons == {}  # duplicates never quarantine rows
        assert report.verdicts.shape == (6, 0)
        assert report.expectations[0].applicable and not report.success
        single = validate(table.slice(0, 1), suite, engine)
        assert single.expectations[0].applicable is False and single.expectations[0].success


def test_row_count():
    table = pa.table({"k": [1, 2, 3]})
    expect_rows(
        table, "expect_table_row_count_to_be_between", {"min_value": 1, "max_value": 3}, [], True
    )
    expect_rows(
        table,
        "expect_table_row_count_to_be_between",
        {"max_value": 3, "strict_max": True},
        [],
        False,
    )
    expect_rows(table, "expect_table_row_count_to_equal", {"value": 4}, [], False)


@pytest.mark.parametrize(
    "array, type_, success",
    [
        (pa.array([1, 2], pa.int64()), "int64", True),
        (pa.array([1, None], pa.int64()), "int64", False),  # pandas turns it into float64
        (pa.array([1, None], pa.int64()), "float", True),
        (pa.array(["a", None]), "str", True),
        (pa.array([True, None]), "bool", True),  # object column: checked value by value
        (pa.array([True, None]), "int", True),  # and a Python bool is an int
        (pa.array([T0], pa.timestamp("us", tz="UTC")), "Timestamp", True),
        (pa.array([1.5]), "int", False),
    ],
)
def test_of_type_follows_the_pandas_dtype(array, type_, success):
    table = pa.table({"c": array})
    rows = [] if success else list(range(len(array)))
    expect_rows(
        table, "expect_column_values_to_be_of_type", {"column": "c", "type_": type_}, rows, success
    )


def test_in_type_list():
    table = pa.table({"c": pa.array([1.5, None])})
    expect_rows(
        table,
        "expect_column_values_to_be_in_type_list",
        {"column": "c", "type_list": ["int", "float64"]},
        [],
        True,
    )
    expect_rows(
        table,
        "expect_column_values_to_be_in_type_list",
        {"column": "c", "type_list": ["str"]},
        [0, 1],
        False,
    )


def test_missing_column_fails_every_row_with_a_reason():
    suite = suite_of(
        ("expect_column_to_exist", {"column": "gone"}),
        ("expect_column_values_to_not_be_null", {"column": "gone"}),
        ("expect_column_values_to_not_be_null", {"column": "here"}),
    )
    table = pa.table({"here": [1, None]})
    results = all_paths(table, suite)
    assert_paths_agree(results)
    report = results["gx"][1]
    assert report.valid.tolist() == [False, False]
    assert report.reasons[0] == [
        Reason("expect_column_to_exist", "gone", MISSING_COLUMN),
        Reason("expect_column_values_to_not_be_null", "gone", MISSING_COLUMN),
    ]
    assert report.reasons[1][-1] == Reason("expect_column_values_to_not_be_null", "here", "None")


def test_column_index_of_expect_column_to_exist():
    table = pa.table({"a": [1], "b": [2]})
    expect_rows(table, "expect_column_to_exist", {"column": "b", "column_index": 1}, [], True)
    expect_rows(table, "expect_column_to_exist", {"column": "a", "column_index": 1}, [0], False)


def test_reasons_name_expectation_column_and_value():
    suite = load_suite(
        __import__("pathlib").Path(__file__).resolve().parents[3]
        / "configs/expectations/transactions.json"
    )
    good = {
        "transaction_id": "tx_0123456789abcdef",
        "card_id": "card_123456",
        "merchant_id": "m_12345",
        "merchant_category": "grocery",
        "country": "US",
        "card_country": "US",
        "currency": "USD",
        "amount": 12.5,
        "event_time": T0,
        "channel": "pos",
        "is_fraud": 0,
    }
    bad = good | {
        "card_id": "card_12",
        "amount": math.nan,
        "currency": "XXX",
        "event_time": datetime(2099, 1, 1, tzinfo=UTC),
    }
    schema = load_contract("fraud").arrow_schema  # the one definition of the input
    table = pa.Table.from_pylist([good, bad, good | {"amount": -math.inf}], schema=schema)
    results = all_paths(table, suite, {"now": T0 + timedelta(days=1)})
    assert_paths_agree(results)
    for _, (_, report) in results.items():
        assert report.valid.tolist() == [True, False, False]
        assert [r.as_dict() for r in report.reasons[1]] == [
            {
                "expectation": "expect_column_values_to_not_be_null",
                "column": "amount",
                "value": "nan",
            },
            {
                "expectation": "expect_column_values_to_match_regex",
                "column": "card_id",
                "value": "'card_12'",
            },
            {
                "expectation": "expect_column_values_to_be_in_set",
                "column": "currency",
                "value": "'XXX'",
            },
            {
                "expectation": "expect_column_values_to_be_between",
                "column": "event_time",
                "value": "2099-01-01 00:00:00.000000Z",
            },
        ]
        assert report.reasons[2] == [Reason("expect_column_values_to_be_between", "amount", "-inf")]


def test_incompatible_column_raises_in_both_engines():
    suite = suite_of(
        ("expect_column_values_to_be_between", {"column": "s", "min_value": 0, "max_value": 1})
    )
    table = pa.table({"s": ["1", "2"]})
    for engine in ("gx", "compiled"):
        with pytest.raises(
            ConfigError, match="expectation #0 expect_column_values_to_be_between on column 's'"
        ):
            validate(table, suite, engine)


def test_unknown_engine():
    with pytest.raises(ConfigError, match="engine must be 'gx' or 'compiled'"):
        validate(pa.table({"a": [1]}), suite_of(), "spark")  # type: ignore[arg-type]


def test_chunked_and_empty_tables():
    suite = suite_of(("expect_column_values_to_be_in_set", {"column": "s", "value_set": ["a"]}))
    chunked = pa.concat_tables([pa.table({"s": ["a", "b"]}), pa.table({"s": ["c", "a"]})])
    for engine in ("gx", "compiled"):
        assert validate(chunked, suite, engine).valid.tolist() == [True, False, False, True]
        empty = validate(chunked.slice(0, 0), suite, engine)
        assert empty.valid.shape == (0,) and empty.expectations[0].success


def test_large_table_uses_the_same_rules():
    rng = np.random.default_rng(7)
    values = rng.choice(["tx_0123456789abcdef", "bad", "", "tx_0123456789abcdeF"], size=5000)
    table = pa.table({"s": values})
    suite = suite_of(
        ("expect_column_values_to_match_regex", {"column": "s", "regex": "^tx_[0-9a-f]{16}$"})
    )
    report = validate(table, suite, "compiled")
    assert report.valid.tolist() == [v == "tx_0123456789abcdef" for v in values]


def test_gx_context_and_suites_are_built_once_per_process():
    from sluice.validation import _gx

    suite = suite_of(("expect_column_values_to_not_be_null", {"column": "a"}))
    table = pa.table({"a": [1, None]})
    validate(table, suite, "gx")
    runtime, gx_suite = _gx._get_runtime(), suite._cache["gx"]
    report = validate(table, suite, "gx")
    assert _gx._get_runtime() is runtime and suite._cache["gx"] is gx_suite
    assert report.valid.tolist() == [True, False] and not report.success
    assert report.expectations[0].as_dict() == {
        "index": 0,
        "expectation": "expect_column_values_to_not_be_null",
        "column": "a",
        "scope": "row",
        "applicable": True,
        "success": False,
        "element_count": 2,
        "unexpected_count": 1,
    }


def test_row_condition_selects_the_rows_gx_selects():
    table = pa.table({"c": [None, "a", None, "b"], "k": [1, 1, 2, None]})
    where = {"condition_parser": "pandas"}
    not_null = "expect_column_values_to_not_be_null"
    expect_rows(table, not_null, {"column": "c", "row_condition": "k == 1", **where}, [0], False)
    # a null k is unequal to everything, so "k != 1" keeps rows 2 and 3
    expect_rows(table, not_null, {"column": "c", "row_condition": "k != 1", **where}, [2], False)
    expect_rows(
        table,
        not_null,
        {"column": "c", "row_condition": 'k == 1 and c == "a"', "mostly": 0.5, **where},
        [],
        True,
    )
    expect_rows(
        table,
        "expect_table_row_count_to_equal",
        {"value": 1, "row_condition": "k in [2, 3]", **where},
        [],
        True,
    )


def test_row_condition_on_a_missing_column_raises_in_both_engines():
    suite = suite_of(
        (
            "expect_column_values_to_not_be_null",
            {"column": "c", "row_condition": "nope == 1", "condition_parser": "pandas"},
        )
    )
    for engine in ("gx", "compiled"):
        with pytest.raises(ConfigError):
            validate(pa.table({"c": [1]}), suite, engine)


@pytest.mark.parametrize(
    "column",
    [pa.array([None], pa.int8()), pa.array([None, None], pa.float64()), pa.array([], pa.int64())],
    ids=["int8-null", "float64-null", "int64-empty"],
)
def test_date_bounds_on_a_numeric_column_without_values_are_answered_like_gx(column):
    """GX compares only non-null values: an all-null numeric column passes a date bound
    (pandas compares an empty float series with a datetime without error); a value raises."""
    kwargs = {"column": "x", "min_value": "2020-01-01T00:00:00+00:00"}
    expect_rows(pa.table({"x": column}), "expect_column_values_to_be_between", kwargs, [], True)
    results = all_paths(
        pa.table({"x": pa.array([None, 1], column.type)}),
        suite_of(("expect_column_values_to_be_between", kwargs)),
    )
    assert {kind for kind, _ in results.values()} == {"error"}, results
