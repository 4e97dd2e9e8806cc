"""Loading suites: the project suite, refusals and argument errors, named precisely."""

from __future__ import annotations

import json
import types
import typing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sluice.contract import load_contract
from sluice.errors import ConfigError, UnsupportedExpectation
from sluice.validation import SUPPORTED_EXPECTATIONS, load_suite, parse_suite

REPO = Path(__file__).resolve().parents[3]
SUITE_PATH = REPO / "configs" / "expectations" / "transactions.json"
INPUT_COLUMNS = load_contract("fraud").scoring_schema.names  # the label is not required


def write(tmp_path: Path, document) -> Path:
    path = tmp_path / "suite.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def one(type_: str, **kwargs) -> dict:
    return {"name": "s", "expectations": [{"type": type_, "kwargs": kwargs}]}


def test_project_suite_covers_the_input_schema():
    suite = load_suite(SUITE_PATH)
    assert suite.name == "transactions"
    exists = [e.column for e in suite.expectations if e.type == "expect_column_to_exist"]
    assert exists == INPUT_COLUMNS
    not_null = {e.column for e in suite.expectations if e.type.endswith("to_not_be_null")}
    assert not_null == set(INPUT_COLUMNS)
    unique = [e for e in suite.expectations if e.type == "expect_column_values_to_be_unique"]
    assert [(e.column, e.scope) for e in unique] == [("transaction_id", "batch")]
    between = {e.column: e.kwargs for e in suite.expectations if e.type.endswith("_between")}
    assert between["amount"]["min_value"] == 0.0 and between["amount"]["strict_min"] is True
    assert between["amount"]["max_value"] == 50000.0 and between["amount"]["strict_max"] is False
    assert between["event_time"]["min_value"] == datetime(2020, 1, 1, tzinfo=UTC)
    assert between["event_time"]["max_value"] == {"$PARAMETER": "now"}
    assert suite.parameters == {"now"}


def test_project_suite_is_a_valid_gx_suite():
    import great_expectations as gx

    document = json.loads(SUITE_PATH.read_text())
    suite = gx.ExpectationSuite(**document)
    assert [e.expectation_type for e in suite.expectations] == [
        e["type"] for e in document["expectations"]
    ]


def test_unsupported_expectation_is_refused_with_its_name(tmp_path):
    path = write(tmp_path, one("expect_column_mean_to_be_between", column="a", min_value=0))
    with pytest.raises(UnsupportedExpectation, match="'expect_column_mean_to_be_between'") as exc:
        load_suite(path)
    assert str(path) in str(exc.value) and "expectations[0]" in str(exc.value)


@pytest.mark.parametrize(
    "condition, parser, error, message",
    [
        ("b.str.len() > 2", "pandas", UnsupportedExpectation, "needs a column name"),
        ("1 < b < 3", "pandas", UnsupportedExpectation, "unsupported syntax"),
        ("b == c", "pandas", UnsupportedExpectation, "not a string, number or bool literal"),
        ('col("b") > 2', "great_expectations", UnsupportedExpectation, "only 'pandas'"),
        ("b > 2", None, ConfigError, "needs condition_parser"),
        ("b > 2", "bad_parser", ConfigError, "not a valid enumeration member"),
        ("b >", "pandas", UnsupportedExpectation, "not a valid expression"),
    ],
)
def test_row_conditions_outside_the_subset_are_refused(condition, parser, error, message):
    kwargs = {"column": "a", "row_condition": condition}
    if parser is not None:
        kwargs["condition_parser"] = parser
    with pytest.raises(error, match=message):
        parse_suite(one("expect_column_values_to_not_be_null", **kwargs))


def test_supported_row_condition_is_parsed_at_load():
    kwargs = {"column": "a", "row_condition": '(b > 2) & ~(c in ["x", "y"]) or d != -1.5'}
    exp = parse_suite(
        one("expect_column_values_to_not_be_null", condition_parser="pandas", **kwargs)
    ).expectations[0]
    assert exp.condition is not None and exp.condition.columns == {"b", "c", "d"}


def test_bad_json_names_file_line_and_column(tmp_path):
    path = write(tmp_path, '{"name": "s",\n "expectations": [}')
    with pytest.raises(ConfigError, match=r"invalid JSON at line 2 column 19") as exc:
        load_suite(path)
    assert str(path) in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_suite(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "document, message",
    [
        ([], "top level must be an object"),
        ({"expectations": []}, "'name' must be a non-empty string"),
        ({"name": "s", "expectations": {}}, "'expectations' must be a list"),
        ({"name": "s", "expectations": [{"kwargs": {}}]}, "'type' must be a string"),
        (one("expect_column_values_to_not_be_null"), "missing required argument 'column'"),
        (
            one("expect_column_values_to_be_in_set", value_set=["a"]),
            "missing required argument 'column'",
        ),
        (
            one("expect_column_values_to_not_be_null", column=""),
            "column: ensure this value has at least 1",
        ),
        (one("expect_column_values_to_not_be_null", column="a", mostly=1.5), "mostly"),
        (one("expect_column_values_to_not_be_null", column="a", colum="b"), "colum: extra fields"),
        (one("expect_column_values_to_be_between", column="a"), "cannot both be None"),
        (
            one("expect_column_values_to_be_between", column="a", min_value=5, max_value=1),
            "greater than max_value",
        ),
        (
            one("expect_column_values_to_be_between", column="a", min_value="Jan 1", max_value=1),
            "min_value",
        ),
        (
            one(
                "expect_column_values_to_be_between",
                column="a",
                min_value=0,
                max_value="2020-01-01T00:00:00Z",
            ),
            "cannot be compared",
        ),
        (one("expect_column_values_to_be_in_set", column="a"), "value_set: field required"),
        (
            one("expect_column_values_to_be_in_set", column="a", value_set=[["x"]]),
            "value_set items",
        ),
        (one("expect_column_values_to_match_regex", column="a", regex="("), "invalid regex"),
        (one("expect_column_values_to_match_regex", column="a", regex="a{,3}"), "means {0,n}"),
        (
            one("expect_column_values_to_match_regex", column="a", regex="[[:alpha:]]"),
            "POSIX class",
        ),
        (
            one("expect_column_value_lengths_to_be_between", column="a", min_value="quack"),
            "min_value",
        ),
        (
            one(
                "expect_column_values_to_be_between",
                column="a",
                max_value={"$PARAMETER": "now - 1"},
            ),
            "plain parameter names",
        ),
        (
            one("expect_column_values_to_be_between", column="a", max_value={"x": 1}),
            "not a suite parameter",
        ),
    ],
)
def test_bad_arguments_are_named(document, message):
    with pytest.raises(ConfigError, match=message):
        parse_suite(document)


def test_kwargs_are_coerced_like_gx():
    """Same inputs, same coerced values as GX's own pydantic models (parity depends on it)."""
    import great_expectations as gx

    cases = [
        ("ExpectColumnValuesToBeBetween", {"column": "a", "min_value": 0, "max_value": "10"}),
        ("ExpectColumnValuesToBeBetween", {"column": "a", "min_value": "2020-01-01"}),
        ("ExpectColumnValuesToBeBetween", {"column": "a", "min_value": True, "strict_min": 1}),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "a", "min_value": "2020-01-01T00:00:00+01:00"},
        ),
        (
            "ExpectColumnValueLengthsToBeBetween",
            {"column": "a", "min_value": 4.0, "max_value": "7"},
        ),
        ("ExpectColumnValueLengthsToEqual", {"column": "a", "value": 3}),
        ("ExpectColumnValuesToNotBeNull", {"column": "a", "mostly": 1}),
    ]
    for class_name, kwargs in cases:
        model = getattr(gx.expectations, class_name)(**kwargs)
        ours = parse_suite(one(model.expectation_type, **kwargs)).expectations[0].kwargs
        for key in kwargs:
            theirs = getattr(model, key)
            assert ours[key] == theirs and type(ours[key]) is type(theirs), (class_name, key)


def test_supported_kwargs_mirror_gx_field_types():
    """Our argument models copy GX's field types; fail loudly if GX's change."""
    import great_expectations as gx

    from sluice.validation._suite import SUPPORTED_EXPECTATIONS as models

    for type_, (model, _) in models.items():
        class_name = "".join(part.capitalize() for part in type_.split("_"))
        theirs = getattr(gx.expectations, class_name).__fields__
        for name, field in model.__fields__.items():
            if name in ("result_format", "catch_exceptions", "include_config"):
                continue
            if name in ("row_condition", "condition_parser"):
                assert name in theirs
                continue
            assert _shape(field.outer_type_) == _shape(theirs[name].outer_type_), (type_, name)


def _shape(annotation) -> object:
    """A comparable form of a field type: Union members in order, Annotated stripped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _shape(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return tuple(_shape(a) for a in typing.get_args(annotation))
    if origin is not None:
        return origin.__name__
    if isinstance(annotation, type) and annotation.__name__ == "ConstrainedFloatValue":
        return ("confloat", annotation.ge, annotation.le)
    return getattr(annotation, "__name__", str(annotation))


def test_supported_types_include_the_issue_list():
    required = {
        "expect_column_to_exist",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_null",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_match_regex",
        "expect_column_values_to_not_match_regex",
        "expect_column_value_lengths_to_be_between",
        "expect_column_value_lengths_to_equal",
        "expect_column_values_to_be_of_type",
        "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_be_unique",
    }
    assert required <= set(SUPPORTED_EXPECTATIONS)


@pytest.mark.parametrize(
    "type_, kwargs",
    [
        ("expect_table_row_count_to_be_between", {"min_value": 3, "max_value": 1}),
        ("expect_table_row_count_to_be_between", {"min_value": 1, "max_value": 1}),
        ("expect_table_row_count_to_be_between", {"min_value": 1.5}),
        ("expect_column_values_to_be_between", {"column": "a"}),
        ("expect_column_value_lengths_to_be_between", {"column": "a"}),
        (
            "expect_column_value_lengths_to_be_between",
            {"column": "a", "min_value": 3, "max_value": 1},
        ),
        ("expect_column_values_to_be_in_set", {"column": "a", "value_set": "abc"}),
        ("expect_column_values_to_be_in_type_list", {"column": "a", "type_list": "int"}),
        ("expect_column_to_exist", {"column": "a", "column_index": "x"}),
        ("expect_column_values_to_be_unique", {"column": "a", "mostly": 0}),
    ],
)
def test_the_loader_accepts_exactly_what_gx_models_accept(type_, kwargs):
    """GX builds each expectation's model before it runs: a suite its model refuses fails
    on every table, so the loader refuses it too (and accepts what GX's model accepts)."""
    import great_expectations as gx

    model = getattr(gx.expectations, "".join(p.capitalize() for p in type_.split("_")))
    try:
        model(**kwargs)
        gx_accepts = True
    except Exception:
        gx_accepts = False
    try:
        parse_suite(one(type_, **kwargs))
        we_accept = True
    except ConfigError:
        we_accept = False
    assert we_accept == gx_accepts
