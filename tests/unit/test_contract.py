"""Contract loading: the real fraud contract, and each way a contract can be wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from pydantic import ValidationError

from sluice.config import REPO_ROOT, ConsistencyLevel
from sluice.contract import (
    PREDICTION_COLUMNS,
    Contract,
    Device,
    ModelRef,
    contract_path,
    load_contract,
    parse_arrow_type,
)
from sluice.datagen import TRANSACTION_SCHEMA
from sluice.errors import ConfigError

FRAUD_YAML = REPO_ROOT / "configs" / "contracts" / "fraud.yaml"
REAL_SUITE = REPO_ROOT / "configs" / "expectations" / "transactions.json"

EXPECTED_FEATURES = (
    "amount",
    "amount_log1p",
    "amount_log1p_z",
    "merchant_category_idx",
    "channel_idx",
    "currency_idx",
    "hour_of_day",
    "day_of_week",
    "country_mismatch",
    "card_count_1h",
    "card_amount_sum_1h",
    "card_amount_mean_1h",
    "card_count_24h",
    "card_amount_sum_24h",
    "card_amount_mean_24h",
    "card_seconds_since_prev",
)


@pytest.fixture
def raw() -> dict[str, Any]:
    return yaml.safe_load(FRAUD_YAML.read_text())


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """A suite file the contract can point at: the real one once it exists."""
    path = tmp_path / "suite.json"
    if REAL_SUITE.is_file():
        path.write_text(REAL_SUITE.read_text())
    else:
        path.write_text(json.dumps({"name": "transactions", "expectations": [], "meta": {}}))
    return path


@pytest.fixture
def write(tmp_path: Path, suite: Path):
    def _write(raw: dict[str, Any], name: str = "c.yaml") -> Path:
        data = {**raw}
        data.setdefault("suite_path", str(suite))
        if data["suite_path"] == "configs/expectations/transactions.json":
            data["suite_path"] = str(suite)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return _write


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_contract(path)
    return str(info.value)


def test_fraud_contract_file_loads_by_name():
    if not REAL_SUITE.is_file():
        pytest.skip(
            "configs/expectations/transactions.json is not committed yet (validation layer)"
        )
    contract = load_contract("fraud")
    assert contract.name == "fraud"
    assert contract.resolved_suite_path == REAL_SUITE
    assert load_contract(FRAUD_YAML) == contract


def test_valid_contract_fields(write, raw):
    contract = load_contract(write(raw))
    assert contract.arrow_schema == TRANSACTION_SCHEMA
    assert contract.scoring_schema == TRANSACTION_SCHEMA.remove(
        TRANSACTION_SCHEMA.get_field_index("is_fraud")
    )
    assert (contract.key_column, contract.entity_column) == ("transaction_id", "card_id")
    assert (contract.event_time_column, contract.label_column) == ("event_time", "is_fraud")
    assert contract.model == ModelRef(name="fraud", alias="champion")
    assert str(contract.model) == "fraud@champion"
    assert contract.output.predictions_table == "predictions"
    assert contract.output.consistency is ConsistencyLevel.LOCAL_QUORUM
    assert contract.output.ttl_s == 90 * 86400
    assert contract.device is Device.AUTO
    assert contract.feature_names == EXPECTED_FEATURES
    agg = contract.features.aggregates
    assert agg is not None
    assert (agg.entity_column, agg.event_time_column, agg.key_column) == (
        "card_id",
        "event_time",
        "transaction_id",
    )


def test_contract_is_frozen(write, raw):
    contract = load_contract(write(raw))
    with pytest.raises(ValidationError):
        contract.name = "other"  # type: ignore[misc]


def test_contract_path_resolves_names_and_keeps_paths(tmp_path):
    assert contract_path("fraud") == FRAUD_YAML
    assert contract_path(tmp_path / "x.yaml") == tmp_path / "x.yaml"


@pytest.mark.parametrize(
    "field, bad",
    [
        ("key_column", "tx_id"),
        ("entity_column", "card_number"),
        ("event_time_column", "ts"),
        ("label_column", "fraud_flag"),
    ],
)
def test_missing_column_names_path_field_and_column(write, raw, field, bad):
    path = write({**raw, field: bad})
    message = _error(path)
    assert str(path) in message
    assert field in message
    assert repr(bad) in message


def test_feature_on_missing_column_names_path_and_column(write, raw):
    raw["features"]["transforms"][0]["column"] = "amount_usd"
    path = write(raw)
    message = _error(path)
    assert str(path) in message
    assert "features.transforms[0] (amount_log1p)" in message
    assert "'amount_usd'" in message


def test_passthrough_of_missing_column(write, raw):
    raw["features"]["passthrough"] = ["amount", "velocity"]
    message = _error(write(raw))
    assert "features.passthrough[1]" in message and "'velocity'" in message


@pytest.mark.parametrize(
    "mutate, name",
    [
        (lambda f: f["transforms"].append({"name": "x", "op": "sqrt", "column": "amount"}), "sqrt"),
        (lambda f: f["aggregates"].update(functions=["count", "median"]), "median"),
        (lambda f: f["transforms"][0].update(colour="red"), "colour"),
    ],
    ids=["transform-op", "aggregate-function", "unknown-key"],
)
def test_unknown_feature_names_path_and_name(write, raw, mutate, name):
    mutate(raw["features"])
    path = write(raw)
    message = _error(path)
    assert str(path) in message
    assert name in message
    assert "features" in message


def test_missing_suite_names_path_and_suite(write, raw, tmp_path):
    missing = tmp_path / "nope" / "transactions_v2.json"
    path = write({**raw, "suite_path": str(missing)})
    message = _error(path)
    assert str(path) in message
    assert "suite_path" in message
    assert str(missing) in message


def test_missing_relative_suite_is_resolved_under_repo_root(write, raw):
    path = write({**raw, "suite_path": "configs/expectations/no_such_suite.json"})
    message = _error(path)
    assert str(REPO_ROOT / "configs/expectations/no_such_suite.json") in message


def test_missing_contract_file(tmp_path):
    message = _error(tmp_path / "absent.yaml")
    assert "absent.yaml" in message


def test_unknown_top_level_key_and_bad_yaml(write, raw, tmp_path):
    assert "colour" in _error(write({**raw, "colour": "blue"}))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    assert "not valid YAML" in _error(bad)


def test_bad_arrow_type_names_column(write, raw):
    raw["input_schema"]["amount"] = "doubel"
    message = _error(write(raw))
    assert "'amount'" in message and "'doubel'" in message


def test_feature_type_mismatch_is_refused(write, raw):
    raw["features"]["transforms"].append({"name": "cat_log", "op": "log1p", "column": "channel"})
    message = _error(write(raw))
    assert "'channel'" in message and "numeric" in message


def test_an_equality_flag_of_two_kinds_of_column_is_refused(write, raw):
    raw["features"]["transforms"].append(
        {"name": "odd_flag", "op": "equal", "columns": ["country", "amount"]})
    message = _error(write(raw))
    assert "(odd_flag): columns 'country' (string) and 'amount' (double) cannot be compared" \
        in message, message  # fmt: skip


def test_feature_must_not_read_the_label(write, raw):
    raw["features"]["passthrough"] = ["amount", "is_fraud"]
    assert "label" in _error(write(raw))


def test_aggregate_columns_must_match_contract(write, raw):
    raw["features"]["aggregates"]["entity_column"] = "merchant_id"
    message = _error(write(raw))
    assert "features.aggregates.entity_column" in message and "'merchant_id'" in message


def test_event_time_must_be_a_timestamp(write, raw):
    raw["event_time_column"] = "amount"
    assert "not a timestamp" in _error(write(raw))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("fraud@champion", ModelRef(name="fraud", alias="champion")),
        ("fraud/3", ModelRef(name="fraud", version=3)),
    ],
)
def test_model_ref_parses(text, expected):
    assert ModelRef.model_validate(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize("text", ["fraud", "fraud/latest", "Fraud@champion", "fraud@"])
def test_model_ref_rejects(text):
    with pytest.raises(ValidationError):
        ModelRef.model_validate(text)


def test_bad_model_ref_in_contract_names_field(write, raw):
    message = _error(write({**raw, "model": "fraud"}))
    assert "model" in message and "name@alias" in message


@pytest.mark.parametrize(
    "text, typ",
    [
        ("string", pa.string()),
        ("double", pa.float64()),
        ("int8", pa.int8()),
        ("bool", pa.bool_()),
        ("timestamp[us, tz=UTC]", pa.timestamp("us", tz="UTC")),
        ("timestamp[ms]", pa.timestamp("ms")),
    ],
)
def test_parse_arrow_type_round_trips(text, typ):
    assert parse_arrow_type(text) == typ
    assert str(typ) == text


def test_contract_validated_directly_fills_aggregate_columns(raw, suite):
    contract = Contract.model_validate({**raw, "suite_path": str(suite)})
    assert contract.features.aggregates is not None
    assert contract.features.aggregates.key_column == "transaction_id"


# -- names that reach CQL: checked at load, the message names the field ----------------------
def _rename_column(raw: dict[str, Any], old: str, new: str) -> None:
    raw["input_schema"] = {new if k == old else k: v for k, v in raw["input_schema"].items()}
    for field in ("key_column", "entity_column", "event_time_column", "label_column"):
        if raw.get(field) == old:
            raw[field] = new


@pytest.mark.parametrize(
    ("column", "rule"),
    [("Amount", "should match pattern"), ("order", "reserved CQL keyword"),
     ("transaction-id", "should match pattern"), ("x" * 49, "should match pattern")],
    ids=["upper-case", "reserved", "dash", "too-long"],
)  # fmt: skip
def test_column_names_that_cql_cannot_take_are_refused(write, raw, column, rule):
    _rename_column(raw, "merchant_id", column)
    message = _error(write(raw))
    assert f"input_schema.{column}" in message and rule in message


def test_key_column_that_cql_cannot_take_is_refused(write, raw):
    _rename_column(raw, "transaction_id", "primary")
    message = _error(write(raw))
    assert "input_schema.primary" in message and "reserved CQL keyword" in message


@pytest.mark.parametrize("table", ["Predictions", "select", "scores-v2"])
@pytest.mark.parametrize("field", ["predictions_table", "quarantine_table"])
def test_output_tables_that_cql_cannot_take_are_refused(write, raw, field, table):
    raw["output"][field] = table
    message = _error(write(raw))
    assert f"output.{field}" in message and repr(table) in message


def test_contract_name_leaves_room_for_the_feature_events_table(write, raw):
    raw["name"] = "c" * 33  # + "_feature_events" = 48 characters, Cassandra's limit
    assert load_contract(write(raw)).name == raw["name"]
    raw["name"] = "c" * 34
    assert "name: got" in _error(write(raw))


def test_prediction_columns_are_the_predictions_tables_own():
    from sluice.store import predictions_table

    fraud = load_contract("fraud")
    own = {n for n, _ in predictions_table(fraud).columns}
    assert own - {fraud.entity_column, fraud.event_time_column} == set(PREDICTION_COLUMNS)


@pytest.mark.parametrize("field", ["key_column", "entity_column"])
def test_contract_column_must_not_take_a_predictions_column_name(write, raw, field):
    _rename_column(raw, raw[field], "score")
    message = _error(write(raw))
    assert f"{field}: 'score' is a column the predictions table adds itself" in message


# -- the decision section (sluice.decisions) -------------------------------------------------


@pytest.mark.parametrize(("rules", "needles"), [
    ([("approve", 0.1), ("block", 0.9)],
     ["rules[0].min_score", "is 0.1", "must start at 0"]),
    ([("approve", 0.0), ("review", 0.5), ("block", 0.5)],
     ["rules[2].min_score", "0.5 is not above rules[1]'s 0.5", "must increase"]),
    ([("approve", 0.0), ("block", 0.9), ("review", 0.5)],
     ["rules[2].min_score", "0.5 is not above rules[1]'s 0.9"]),
    ([("approve", 0.0), ("review", 0.5), ("approve", 0.8)],
     ["rules[2].label", "'approve' is already the label of rules[0]"]),
    ([("approve", 0.0), ("escalate", 0.5)],
     ["decision.rules[1].label", "'escalate'", "approve", "review", "block"]),
    ([("approve", 0.0), ("block", 1.5)],
     ["decision.rules[1].min_score", "1.5", "less than or equal to 1"]),
    ([], ["decision.rules", "at least 1"]),
])  # fmt: skip
def test_a_bad_decision_policy_is_refused_at_load_naming_field_and_rule(write, raw, rules,
                                                                        needles):  # fmt: skip
    raw["decision"] = [{"label": a, "min_score": s} for a, s in rules]
    message = _error(write(raw))
    assert "c.yaml: invalid contract" in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_an_unknown_key_in_a_decision_rule_is_refused(write, raw):
    raw["decision"] = [{"label": "approve", "min_score": 0.0, "max_score": 0.5}]
    assert "decision.rules[0].max_score: unknown key" in _error(write(raw))


def test_a_contract_without_a_decision_policy_scores_without_decisions(write, raw):
    del raw["decision"]
    raw["gate"]["slices"]["threshold"] = 0.5  # 'decision' needs a policy that alerts
    assert load_contract(write(raw)).decision is None
