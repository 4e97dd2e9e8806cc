"""Property: the compiled engine gives GX's verdict for every row and every expectation.

Each example builds a small Arrow table (nulls, NaN, ±Inf, empty strings, values
exactly on the bounds, odd text, columns of the "wrong" Arrow type) and a suite
of one expectation group, then runs Great Expectations itself and both compiled
paths (Python lists for small tables, Arrow kernels for large ones, forced here
on the same table). They must agree on validity, per-expectation verdicts,
reasons, summaries — or all raise ConfigError.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from validation_testkit import all_paths, assert_paths_agree, suite_of

from sluice.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore")

SETTINGS = settings(
    max_examples=int(os.environ.get("SLUICE_PARITY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROWS = st.integers(min_value=0, max_value=9)
MOSTLY = st.sampled_from([None, None, 0.5, 0.75, 0.9, 1.0])

TEXTS = [
    "",
    " ",
    "a",
    "abc",
    "b",
    "aaa",
    "AK",
    "grocery",
    "tx_0123456789abcdef",
    "tx_0123456789abcdef\n",
    "ab\nc",
    "\x0b",
    "٣",
    "é",
    "ÉCOLE",
    "x y",
    "a1",
    "1",
    "1.0",
    "True",
]
FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    2.5,
    10.0,
    50000.0,
    50000.000001,
    1e-300,
    2**53 + 1.0,
    math.nan,
    math.inf,
    -math.inf,
]
BASE = datetime(2024, 1, 1, tzinfo=UTC)
MOMENTS = [BASE + timedelta(microseconds=us) for us in (-1, 0, 1, 86_400_000_000)] + [
    datetime(2019, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2020, 1, 1, tzinfo=UTC),
    datetime(2099, 1, 1, tzinfo=UTC),
]


# the string encodings a user's Parquet can carry: each must validate as plain strings
STRING_TYPES = {
    "string": pa.string(),
    "large_string": pa.large_string(),
    "string_view": pa.string_view(),
    "dictionary": None,
}
ANY_STRING = ["string", "string", "large_string", "string_view", "dictionary"]


def nullable(values: list, null_weight: int = 1) -> st.SearchStrategy:
    return st.one_of(*[st.none()] * null_weight, st.sampled_from(values))


def texts() -> st.SearchStrategy:
    return st.one_of(st.none(), st.sampled_from(TEXTS), st.text(alphabet="ab1é\n _", max_size=4))


def floats() -> st.SearchStrategy:
    return st.one_of(st.none(), st.sampled_from(FLOATS), st.floats(-100, 100))


@st.composite
def column(draw, kind: str, n: int) -> pa.Array:
    """A column of ``kind``; some kinds are the 'wrong' Arrow type for the suite."""
    if kind in STRING_TYPES:
        strings = pa.array(draw(st.lists(texts(), min_size=n, max_size=n)), pa.string())
        if kind == "dictionary":  # as Parquet readers give categorical strings
            return strings.dictionary_encode()
        return strings.cast(STRING_TYPES[kind])
    if kind == "decimal128":
        values = draw(
            st.lists(nullable(["0", "1.5", "-2.25", "10", "50000.01"]), min_size=n, max_size=n)
        )
        return pa.array([None if v is None else Decimal(v) for v in values], pa.decimal128(12, 2))
    if kind == "date32":
        values = draw(st.lists(nullable([m.date() for m in MOMENTS]), min_size=n, max_size=n))
        return pa.array(values, pa.date32())
    if kind == "float64":
        return pa.array(draw(st.lists(floats(), min_size=n, max_size=n)), pa.float64())
    if kind == "float32":
        values = draw(st.lists(nullable([0.5, 1.0, 3.25, -2.0, math.nan]), min_size=n, max_size=n))
        return pa.array(values, pa.float32())
    if kind in ("int64", "int8", "uint32"):
        low = 0 if kind == "uint32" else -3
        values = draw(st.lists(st.one_of(st.none(), st.integers(low, 12)), min_size=n, max_size=n))
        return pa.array(values, getattr(pa, kind)())
    if kind == "int64-dense":  # no nulls: pandas keeps int64
        values = draw(st.lists(st.sampled_from([0, 1, 10, 2**53 + 1, -5]), min_size=n, max_size=n))
        return pa.array(values, pa.int64())
    if kind == "bool":
        return pa.array(draw(st.lists(nullable([True, False]), min_size=n, max_size=n)), pa.bool_())
    if kind == "bool-dense":
        values = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        return pa.array(values, pa.bool_())
    if kind == "timestamp-utc":
        values = draw(st.lists(nullable(MOMENTS), min_size=n, max_size=n))
        return pa.array(values, pa.timestamp("us", tz="UTC"))
    if kind == "timestamp-naive-ns":
        values = draw(st.lists(nullable(MOMENTS), min_size=n, max_size=n))
        naive = [None if v is None else v.replace(tzinfo=None) for v in values]
        return pa.array(naive, pa.timestamp("ns"))
    if kind == "null":
        return pa.nulls(n)
    raise AssertionError(kind)


@st.composite
def table(draw, kinds: dict[str, list[str]]) -> pa.Table:
    n = draw(ROWS)
    return pa.table(
        {name: draw(column(draw(st.sampled_from(ks)), n)) for name, ks in kinds.items()}
    )


def with_mostly(kwargs: dict, mostly: float | None) -> dict:
    return kwargs if mostly is None else {**kwargs, "mostly": mostly}


def check(tbl: pa.Table, expectations: list[tuple[str, dict]], params: dict | None = None):
    suite = suite_of(*expectations)
    assert_paths_agree(all_paths(tbl, suite, params), f"{expectations} on {tbl.schema}")


ANY_KIND = ["string", "float64", "int64", "int64-dense", "bool", "timestamp-utc", "null"]
PARQUET_KINDS = ["large_string", "string_view", "dictionary", "decimal128", "date32"]


@SETTINGS
@given(table({"c": ANY_KIND + PARQUET_KINDS, "d": ANY_KIND + PARQUET_KINDS}), MOSTLY, MOSTLY)
def test_null_checks(tbl, mostly_a, mostly_b):
    check(
        tbl,
        [
            ("expect_column_values_to_not_be_null", with_mostly({"column": "c"}, mostly_a)),
            ("expect_column_values_to_be_null", with_mostly({"column": "d"}, mostly_b)),
            ("expect_column_to_exist", {"column": "c"}),
            ("expect_column_values_to_not_be_null", {"column": "absent"}),
        ],
    )


BOUNDS = st.sampled_from([None, -1, 0, 0.5, 1, 2.5, 10, 50000])


@SETTINGS
@given(
    table({"x": ["float64", "int64", "int64-dense", "int8", "uint32", "float32", "bool"]}),
    BOUNDS,
    BOUNDS,
    st.booleans(),
    st.booleans(),
    MOSTLY,
)
def test_numeric_between(tbl, lo, hi, strict_lo, strict_hi, mostly):
    if lo is None and hi is None:
        hi = 10
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    kwargs = {"column": "x", "min_value": lo, "max_value": hi}
    kwargs |= {"strict_min": strict_lo, "strict_max": strict_hi}
    check(
        tbl,
        [
            ("expect_column_values_to_be_between", with_mostly(kwargs, mostly)),
            (
                "expect_column_values_to_be_between",
                {"column": "x", "min_value": 0, "max_value": 50000, "strict_min": True},
            ),
        ],
    )


TIME_BOUNDS = st.sampled_from(
    [
        None,
        "2020-01-01T00:00:00+00:00",
        "2024-01-01T00:00:00Z",
        "2024-01-01T01:00:00+01:00",
        "2024-01-01T00:00:00.000001+00:00",
        "2024-01-01T00:00:00",  # naive: GX raises on a tz-aware column
        {"$PARAMETER": "now"},
    ]
)


@SETTINGS
@given(
    table({"t": ["timestamp-utc", "timestamp-naive-ns"]}),
    TIME_BOUNDS,
    TIME_BOUNDS,
    st.booleans(),
    st.booleans(),
    st.sampled_from(MOMENTS),
)
def test_time_between(tbl, lo, hi, strict_lo, strict_hi, now):
    if lo is None and hi is None:
        hi = {"$PARAMETER": "now"}
    kwargs = {"column": "t", "min_value": lo, "max_value": hi}
    kwargs |= {"strict_min": strict_lo, "strict_max": strict_hi}
    try:
        suite = suite_of(("expect_column_values_to_be_between", kwargs))
    except ConfigError as exc:  # GX would raise these at validation time; we do at load
        assert "greater than max_value" in str(exc) or "cannot be compared" in str(exc)
        return
    assert_paths_agree(all_paths(tbl, suite, {"now": now}), f"{kwargs} on {tbl.schema}")


VALUE_SETS = st.lists(
    st.sampled_from(["", "a", "abc", "AK", "1", "True", 1, 0, 2.5, -3, True, False, None]),
    max_size=5,
)


@SETTINGS
@given(
    table({"s": ANY_STRING + ["int64", "int64-dense", "float64", "bool-dense", "bool"]}),
    VALUE_SETS,
    VALUE_SETS,
    MOSTLY,
)
def test_sets(tbl, in_set, not_in_set, mostly):
    check(
        tbl,
        [
            (
                "expect_column_values_to_be_in_set",
                with_mostly({"column": "s", "value_set": in_set}, mostly),
            ),
            ("expect_column_values_to_not_be_in_set", {"column": "s", "value_set": not_in_set}),
        ],
    )


PATTERNS = [
    "^a",
    "b",
    "^tx_[0-9a-f]{16}$",
    r"\d",
    r"\w+$",
    r"\s",
    "^$",
    "",
    "a|b",
    "(?i)A",
    r"\bc",
    "[^a]",
    "a(?=b)",
    "x*",
    "^[a-c]+$",
    r"\Aab\Z",
    ".",
    "é",
    r"^\d\.\d$",
    "^True$",
]


@SETTINGS
@given(
    table({"s": ANY_STRING + ["string", "int64", "int64-dense", "float64", "bool"]}),
    st.sampled_from(PATTERNS),
    st.sampled_from(PATTERNS),
    MOSTLY,
)
def test_regex(tbl, match, not_match, mostly):
    check(
        tbl,
        [
            (
                "expect_column_values_to_match_regex",
                with_mostly({"column": "s", "regex": match}, mostly),
            ),
            ("expect_column_values_to_not_match_regex", {"column": "s", "regex": not_match}),
        ],
    )


@SETTINGS
@given(
    table({"s": ANY_STRING + ["int64", "float64", "bool-dense"]}),
    st.sampled_from([None, 0, 1, 3]),
    st.sampled_from([None, 1, 3, 4]),
    st.booleans(),
    st.sampled_from([0, 1, 3]),
    MOSTLY,
)
def test_lengths(tbl, lo, hi, strict, equal, mostly):
    if lo is None and hi is None:
        lo = 1
    between = {"column": "s", "min_value": lo, "max_value": hi, "strict_min": strict}
    check(
        tbl,
        [
            ("expect_column_value_lengths_to_be_between", with_mostly(between, mostly)),
            ("expect_column_value_lengths_to_equal", {"column": "s", "value": equal}),
        ],
    )


TYPE_NAMES = [
    "int",
    "int64",
    "int8",
    "float",
    "float64",
    "float32",
    "str",
    "string",
    "bool",
    "object",
    "datetime64",
    "Timestamp",
    "StringDtype",
    "NoneType",
    "bytes",
    "uint32",
    "O",
    "DatetimeTZDtype",
]


@SETTINGS
@given(
    table(
        {
            "c": ANY_KIND
            + PARQUET_KINDS
            + ["int8", "uint32", "float32", "bool-dense", "timestamp-naive-ns"]
        }
    ),
    st.sampled_from(TYPE_NAMES),
    st.one_of(st.none(), st.lists(st.sampled_from(TYPE_NAMES), min_size=1, max_size=3)),
)
def test_types(tbl, type_, type_list):
    check(
        tbl,
        [
            ("expect_column_values_to_be_of_type", {"column": "c", "type_": type_}),
            ("expect_column_values_to_be_in_type_list", {"column": "c", "type_list": type_list}),
        ],
    )


@SETTINGS
@given(
    table({"k": ANY_STRING + ["int64", "int64-dense", "float64", "bool", "timestamp-utc", "null"]}),
    MOSTLY,
    st.integers(0, 6),
)
def test_batch_level(tbl, mostly, rows):
    check(
        tbl,
        [
            ("expect_column_values_to_be_unique", with_mostly({"column": "k"}, mostly)),
            ("expect_table_row_count_to_be_between", {"min_value": 2, "max_value": rows + 2}),
            ("expect_table_row_count_to_equal", {"value": rows}),
        ],
    )


LITERALS = st.sampled_from(["0", "1", "2.5", "-1", '"a"', '""', "True"])


@st.composite
def conditions(draw, depth: int = 0) -> str:
    if depth < 2 and draw(st.booleans()):
        left, right = draw(conditions(depth + 1)), draw(conditions(depth + 1))
        op = draw(st.sampled_from(["&", "|", "and", "or"]))
        text = f"({left}) {op} ({right})"
        return f"~({text})" if draw(st.booleans()) else text
    op = draw(st.sampled_from(["==", "!=", "<", ">=", "in", "not in"]))
    if op.endswith("in"):
        return f"k {op} [{draw(LITERALS)}, {draw(LITERALS)}]"
    return f"k {op} {draw(LITERALS)}"


@SETTINGS
@given(
    table(
        {
            "c": ["string", "dictionary", "float64", "int64"],
            "k": ["int64", "float64", "string", "string_view", "bool", "bool-dense"],
        }
    ),
    conditions(),
    MOSTLY,
)
def test_row_conditions(tbl, condition, mostly):
    where = {"row_condition": condition, "condition_parser": "pandas"}
    check(
        tbl,
        [
            ("expect_column_values_to_not_be_null", with_mostly({"column": "c", **where}, mostly)),
            (
                "expect_column_values_to_be_in_set",
                {"column": "c", "value_set": ["a", 1.0], **where},
            ),
            ("expect_column_values_to_be_unique", {"column": "c", **where}),
            ("expect_table_row_count_to_be_between", {"min_value": 1, **where}),
        ],
    )


WRONG = [
    ("expect_column_values_to_be_between", {"min_value": 0, "max_value": 10}),
    ("expect_column_values_to_be_between", {"min_value": "2020-01-01T00:00:00+00:00"}),
    ("expect_column_values_to_be_in_set", {"value_set": ["a", 1]}),
    ("expect_column_values_to_match_regex", {"regex": "1"}),
    ("expect_column_value_lengths_to_equal", {"value": 1}),
]


@settings(SETTINGS, max_examples=30)
@given(
    table(
        {
            "w": [
                "string",
                "int8",
                "bool",
                "float32",
                "timestamp-utc",
                "timestamp-naive-ns",
                "null",
                "decimal128",
                "date32",
            ]
        }
    ),
    st.sampled_from(WRONG),
)
def test_wrong_column_types(tbl, expectation):
    """A column of a type the expectation does not fit: the same verdicts, or every path
    raises ConfigError (both engines refuse what the compiled engine cannot match)."""
    type_, kwargs = expectation
    suite = suite_of((type_, {"column": "w", **kwargs}))
    assert_paths_agree(all_paths(tbl, suite), f"{expectation} on {tbl.schema}")
