"""The contract's decision policy: thresholds to labels, its id, and each way it can be wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml

from sluice.config import REPO_ROOT
from sluice.contract import load_contract
from sluice.decisions import Decision, DecisionPolicy, decision_counts
from sluice.errors import ConfigError

FRAUD_YAML = REPO_ROOT / "configs" / "contracts" / "fraud.yaml"


def policy(*rules: tuple[str, float]) -> DecisionPolicy:
    return DecisionPolicy.model_validate([{"label": a, "min_score": s} for a, s in rules])


FRAUD = policy(("approve", 0.0), ("review", 0.5), ("block", 0.9))


def test_fraud_contract_carries_its_policy() -> None:
    assert load_contract("fraud").decision == FRAUD


@pytest.mark.parametrize(("score", "label"), [
    (0.0, "approve"), (0.4999, "approve"), (0.5, "review"), (0.8999, "review"),
    (0.9, "block"), (1.0, "block"),
    (-0.5, "approve"), (1.5, "block"),  # outside [0, 1]: the nearest rule
])  # fmt: skip
def test_a_score_takes_the_last_rule_it_reaches(score: float, label: str) -> None:
    assert FRAUD.decide(np.array([score])).to_pylist() == [label]
    assert FRAUD.label_of(score) == Decision(label)


def test_decide_is_vectorized_and_in_order() -> None:
    scores = np.array([0.95, 0.1, 0.7, 0.5, 0.9])
    assert FRAUD.decide(scores).to_pylist() == ["block", "approve", "review", "review", "block"]
    assert FRAUD.decide(np.array([])).to_pylist() == []


def test_a_single_rule_labels_every_score() -> None:
    only = policy(("review", 0.0))
    assert only.decide(np.array([0.0, 0.3, 1.0])).to_pylist() == ["review"] * 3


def test_policy_id_is_a_digest_of_the_rules() -> None:
    assert FRAUD.policy_id == policy(("approve", 0.0), ("review", 0.5), ("block", 0.9)).policy_id
    assert FRAUD.policy_id.startswith("dp-") and len(FRAUD.policy_id) == 15
    moved = policy(("approve", 0.0), ("review", 0.6), ("block", 0.9))
    relabeled = policy(("approve", 0.0), ("block", 0.5), ("review", 0.9))
    assert len({FRAUD.policy_id, moved.policy_id, relabeled.policy_id}) == 3


def test_decision_counts_leave_rows_without_a_decision_aside() -> None:
    table = pa.table({"decision": pa.array(["block", None, "approve", "block"], pa.string())})
    assert decision_counts(table) == {"block": 2, "approve": 1}


@pytest.fixture
def write(tmp_path: Path):
    def _write(decision: Any) -> Path:
        raw = yaml.safe_load(FRAUD_YAML.read_text())
        raw["decision"] = decision
        raw["suite_path"] = str(REPO_ROOT / raw["suite_path"])
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return _write


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_contract(path)
    return str(info.value)


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
def test_a_bad_policy_is_refused_at_load_naming_field_and_rule(write, rules, needles) -> None:
    message = _error(write([{"label": a, "min_score": s} for a, s in rules]))
    assert "c.yaml: invalid contract" in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_an_unknown_key_in_a_rule_is_refused(write) -> None:
    message = _error(write([{"label": "approve", "min_score": 0.0, "max_score": 0.5}]))
    assert "decision.rules[0].max_score: unknown key" in message


def test_a_contract_without_a_policy_scores_without_decisions(write) -> None:
    raw = yaml.safe_load(write(None).read_text())
    del raw["decision"]
    path = write(None)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert load_contract(path).decision is None
