"""The request model generated from the contract, and request parsing (413/422 rules)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timezone

import pyarrow as pa
import pytest
from serve_testkit import json_rows

from serve_apps.scoring.schemas import RequestParser, RequestRejected, required_columns, row_model
from sluice.contract import load_contract


@pytest.fixture(scope="module")
def contract():
    return load_contract("fraud")


@pytest.fixture(scope="module")
def parser(contract):
    return RequestParser(contract, max_rows=5)


def reject(parser: RequestParser, body: bytes | str) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        parser.parse(body.encode() if isinstance(body, str) else body)
    return info.value


def test_row_model_has_one_field_per_scoring_column(contract):
    model = row_model(contract)
    assert list(model.model_fields) == contract.scoring_schema.names
    assert "is_fraud" not in model.model_fields  # the label is never an input
    assert required_columns(contract) == frozenset(contract.scoring_schema.names)
    schema = model.model_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["properties"]["amount"]["type"] == "number"
    assert schema["properties"]["event_time"]["format"] == "date-time"


def test_types_follow_the_arrow_schema(contract):
    wide = contract.model_copy(update={"input_schema": {
        **contract.input_schema, "flags": "int8", "ratio": "float", "ok": "bool"}})  # fmt: skip
    model = row_model(wide)
    base = json_rows(1)[0]
    assert model.model_validate_json(json.dumps({**base, "flags": 127, "ratio": 0.5, "ok": True}))
    # not required (the suite does not ask for them), so absent is fine
    assert model.model_validate_json(json.dumps(base)).flags is None
    p = RequestParser(wide, max_rows=2)
    for bad, rule in [({"flags": 128}, "less_than_equal"), ({"flags": 1.5}, "int_type"),
                      ({"ratio": 1e39}, "less_than_equal"), ({"ok": "yes"}, "bool_type")]:
        err = reject(p, json.dumps({**base, **bad}))
        assert err.status == 422
        assert [(x.loc, x.rule) for x in err.problems] == [(f"row.{next(iter(bad))}", rule)]


def test_one_row_and_a_list(parser):
    rows = json_rows(3)
    one, many = parser.parse(json.dumps(rows[0]).encode())
    assert many is False and len(one) == 1 and one[0]["transaction_id"] == rows[0]["transaction_id"]
    got, many = parser.parse(json.dumps(rows).encode())
    assert many is True
    assert [r["transaction_id"] for r in got] == [r["transaction_id"] for r in rows]
    assert got[0]["event_time"].tzinfo is not None


@pytest.mark.parametrize("text", ["2024-05-01T12:00:00.5+02:00", "2024-05-01T10:00:00.5Z"])
def test_times_keep_their_instant_and_offset_in_a_stdlib_timezone(parser, text):
    base = json_rows(1)[0]
    (row,), _ = parser.parse(json.dumps({**base, "event_time": text}).encode())
    t = row["event_time"]
    # a datetime.timezone, not pydantic's TzInfo (pyarrow looks for pytz on each of those)
    assert type(t.tzinfo) is timezone
    assert t == datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)
    assert t.isoformat() == datetime.fromisoformat(text).isoformat()
    assert pa.array([t]).cast(pa.timestamp("us", tz="UTC")).to_pylist() == [t]


@pytest.mark.parametrize(
    ("change", "loc", "rule"),
    [
        ({"colour": "red"}, "row.colour", "extra_forbidden"),
        ({"amount": "12.5"}, "row.amount", "float_type"),
        ({"card_id": 123}, "row.card_id", "string_type"),
        ({"event_time": "2024-05-01T12:00:00"}, "row.event_time", "timezone_aware"),
        ({"event_time": 1714564800}, "row.event_time", "datetime_type"),
        ({"amount": None}, "row.amount", "float_type"),
    ],
)
def test_shape_errors_name_the_field_and_the_rule(parser, change, loc, rule):
    err = reject(parser, json.dumps({**json_rows(1)[0], **change}))
    assert err.status == 422
    assert [(p.loc, p.rule) for p in err.problems] == [(loc, rule)]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(parser, literal):
    row = json_rows(1)[0]
    text = json.dumps(row).replace(json.dumps(row["amount"]), literal, 1)
    err = reject(parser, text)
    assert [(p.loc, p.rule) for p in err.problems] == [("row.amount", "finite_number")]
    assert err.problems[0].value in ("nan", "inf", "-inf")


def test_missing_fields_are_named(parser):
    row = json_rows(1)[0]
    del row["card_id"], row["event_time"]
    err = reject(parser, json.dumps(row))
    assert {(p.loc, p.rule) for p in err.problems} == {
        ("row.card_id", "missing"), ("row.event_time", "missing")}  # fmt: skip


def test_errors_in_a_list_carry_the_row_index(parser):
    rows = json_rows(3)
    rows[2]["amount"] = "x"
    err = reject(parser, json.dumps(rows))
    assert [(p.loc, p.rule) for p in err.problems] == [("rows[2].amount", "float_type")]


def test_more_rows_than_max_rows_is_413(parser):
    err = reject(parser, json.dumps(json_rows(6)))
    assert err.status == 413 and "at most 5" in err.message


@pytest.mark.parametrize("body", [b"", b"42", b'"row"', b"[]", b"{not json", b"\xff\xfe"])
def test_bodies_that_are_not_rows_are_422(parser, body):
    err = reject(parser, body)
    assert err.status == 422 and err.problems
