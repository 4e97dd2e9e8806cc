"""The contract's decision policy: thresholds to labels and its id (load errors: test_contract)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sluice.contract import load_contract
from sluice.decisions import Decision, DecisionPolicy, decision_counts, is_alerting


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


def test_review_and_block_alert_and_rows_without_a_decision_do_not() -> None:
    decisions = pa.array(["approve", None, "block", "review"], pa.string())
    assert is_alerting(decisions).to_pylist() == [False, False, True, True]
