"""The contract's `gate` section: the fraud gate as shipped, and each way one is refused."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice.config import REPO_ROOT
from sluice.contract import load_contract
from sluice.errors import ConfigError
from sluice.jobs import load_job

FRAUD_YAML = REPO_ROOT / "configs" / "contracts" / "fraud.yaml"


@pytest.fixture
def write(tmp_path: Path):
    base = yaml.safe_load(FRAUD_YAML.read_text())
    base["suite_path"] = str(REPO_ROOT / base["suite_path"])

    def _write(edit) -> Path:
        doc = copy.deepcopy(base)
        edit(doc)
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    return _write


def test_the_fraud_gate_declares_every_kind_of_check():
    contract = load_contract("fraud")
    gate = contract.gate
    assert gate is not None
    assert (gate.auc.min, gate.auc.max_drop) == (0.75, 0.02)
    assert gate.calibration is not None and gate.calibration.metric == "ece"
    assert gate.slices is not None
    assert gate.slices.columns("card_country_vs_country") == ("card_country", "country")
    assert {limit.metric for limit in gate.slices.limits} == {"false_positive_rate"}
    assert contract.alert_threshold == 0.5  # 'decision': the review rule's min_score
    # The latency budgets cover one request and the batch job's batch size in use.
    batch_rows = load_job(REPO_ROOT / "configs/jobs/fraud_batch.yaml").batch_rows
    assert sorted(b.batch_rows for b in gate.latency) == [1, batch_rows]


def test_the_digest_changes_with_any_threshold(write):
    fraud = load_contract("fraud")
    before = fraud.gate.digest(fraud.alert_threshold)
    path = write(lambda d: d["gate"]["auc"].update({"min": 0.76}))
    changed = load_contract(path)
    assert changed.gate.digest(changed.alert_threshold) != before
    assert fraud.gate.digest(fraud.alert_threshold) == before  # stable across loads

    # 'threshold: decision' follows the decision policy: moving review moves the gate.
    def later_review(doc: dict[str, Any]) -> None:
        doc["decision"][1]["min_score"] = 0.6

    moved = load_contract(write(later_review))
    assert moved.gate == fraud.gate and moved.alert_threshold == 0.6
    assert moved.gate.digest(moved.alert_threshold) != before


def _set(*keys: str, value: Any):
    def edit(doc: dict[str, Any]) -> None:
        node = doc["gate"]
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[keys[-1]] = value

    return edit


@pytest.mark.parametrize(("edit", "field", "rule"), [
    (_set("slices", "limits", "0", "metric", value="fpr"), "gate.slices.limits[0].metric",
     "false_positive_rate"),
    (_set("calibration", "metric", value="logloss"), "gate.calibration.metric", "brier"),
    (_set("slices", "by", "region", value="region"), "gate.slices.by.region",
     "column 'region' is not in input_schema"),
    (_set("slices", "by", "label", value="is_fraud"), "gate.slices.by.label", "is the label"),
    (_set("slices", "limits", "0", "slices", value=["nope"]), "limits[0].slices",
     "'nope' is not a slicing"),
    (_set("auc", "min", value=1.5), "gate.auc.min", "less than or equal to 1"),
    (_set("auc", "max_drop", value=-0.1), "gate.auc.max_drop", "greater than or equal to 0"),
    (_set("calibration", "max", value=0), "gate.calibration.max", "greater than 0"),
    (_set("slices", "threshold", value=1.5), "threshold", "1.5 is not a score in (0, 1)"),
    (_set("slices", "threshold", value="review"), "gate.slices.threshold", "decision"),
    (_set("slices", "limits", "0", "min_ratio", value=2.0), "gate.slices.limits[0].min_ratio",
     "less than or equal to 1"),
    (_set("slices", "limits", "0", "max_difference", value=None), "gate.slices.limits[0]",
     "give max_difference or min_ratio"),
    (_set("slices", "by", "country", value=["country", "country"]), "by.country",
     "compares column 'country' with itself"),
    (_set("latency", "1", "batch_rows", value=1), "gate: latency", "repeats a batch size"),
    (_set("latency", "0", "max_p99_ms", value=0), "gate.latency[0].max_p99_ms",
     "greater than 0"),
    (_set("auc", "floor", value=0.8), "gate.auc.floor", "unknown key"),
    (_set("slices", "by", "country", value=["country", "amount"]), "gate.slices.by.country",
     "they must have one type"),
])  # fmt: skip
def test_a_bad_gate_is_refused_at_load_naming_field_and_rule(write, edit, field, rule):
    with pytest.raises(ConfigError) as err:
        load_contract(write(edit))
    assert field in str(err.value) and rule in str(err.value), str(err.value)


def test_a_decision_threshold_needs_a_decision_rule_that_alerts(write):
    def approve_only(doc: dict[str, Any]) -> None:
        doc["decision"] = [{"label": "approve", "min_score": 0.0}]

    with pytest.raises(ConfigError, match="gate.slices.threshold: 'decision' needs a decision "
                                          "rule that alerts"):  # fmt: skip
        load_contract(write(approve_only))


def test_a_gate_needs_a_label_column(write):
    def no_label(doc: dict[str, Any]) -> None:
        doc.pop("label_column")
        doc["input_schema"].pop("is_fraud")

    with pytest.raises(ConfigError, match="declares no label_column"):
        load_contract(write(no_label))


def test_a_contract_without_a_gate_has_none(write):
    assert load_contract(write(lambda d: d.pop("gate"))).gate is None
