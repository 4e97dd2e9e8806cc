"""A contract's decision policy: score thresholds to actions, applied alike on every path.

The ``decision`` section of a contract is an ordered list of rules; a score takes the
label of the last rule whose ``min_score`` it reaches::

    decision:
      - {label: approve, min_score: 0.0}    # [0, 0.5)
      - {label: review,  min_score: 0.5}    # [0.5, 0.9)
      - {label: block,   min_score: 0.9}    # [0.9, 1]

Checked at load: the labels are known (``Decision``) and each used once, the thresholds
lie in [0, 1] and increase strictly, and the first is 0, so every score in [0, 1] gets a
label. ``policy_id`` is a digest of the rules: every scored row carries it beside its
decision, so a decision can always be traced to the rule that made it, and a changed
policy is a new id.

``Scorer.score_valid`` applies the policy once for all three paths (``decide``), so the
batch job, the stream and the online endpoint decide identically for the same score.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ALERTING", "Decision", "DecisionPolicy", "DecisionRule", "decision_counts",
           "is_alerting"]


class Decision(StrEnum):
    """What happens to a scored transaction."""

    APPROVE = "approve"
    REVIEW = "review"  # an analyst looks at it
    BLOCK = "block"  # refused, and an analyst looks at it


ALERTING = frozenset({Decision.REVIEW, Decision.BLOCK})
"""Decisions that raise an alert for an analyst."""
_ALERTING_SET = pc.SetLookupOptions(pa.array(sorted(d.value for d in ALERTING)))


def is_alerting(decisions: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Whether each decision raises an alert (false where there is none)."""
    return pc.is_in(decisions, options=_ALERTING_SET)


class DecisionRule(BaseModel):
    """Scores from ``min_score`` (inclusive) up to the next rule's get ``label``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: Decision
    min_score: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)


class DecisionPolicy(BaseModel):
    """The ordered rules of a contract's ``decision`` section (a YAML list)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[DecisionRule, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        return {"rules": data} if isinstance(data, list | tuple) else data

    @model_validator(mode="after")
    def _covers_scores(self) -> DecisionPolicy:
        problems = []
        first = self.rules[0]
        if first.min_score != 0.0:
            problems.append(f"rules[0].min_score: is {first.min_score:g}; the first rule must "
                            "start at 0 so every score in [0, 1] gets a label")  # fmt: skip
        for i in range(1, len(self.rules)):
            before, now = self.rules[i - 1].min_score, self.rules[i].min_score
            if now <= before:
                problems.append(f"rules[{i}].min_score: {now:g} is not above rules[{i - 1}]'s "
                                f"{before:g}; thresholds must increase")  # fmt: skip
        seen: dict[Decision, int] = {}
        for i, rule in enumerate(self.rules):
            if rule.label in seen:
                problems.append(f"rules[{i}].label: {rule.label.value!r} is already the label "
                                f"of rules[{seen[rule.label]}]; use each label once")  # fmt: skip
            seen.setdefault(rule.label, i)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def policy_id(self) -> str:
        """``dp-`` and 12 hex digits of the rules' SHA-256: the same rules, the same id."""
        canon = json.dumps([[r.label.value, r.min_score] for r in self.rules])
        return "dp-" + hashlib.sha256(canon.encode()).hexdigest()[:12]

    @property
    def alert_threshold(self) -> float | None:
        """The lowest score that raises an alert (review or block); None if none does."""
        return min((r.min_score for r in self.rules if r.label in ALERTING), default=None)

    def decide(self, scores: np.ndarray) -> pa.Array:
        """The label of each score (a score below 0 takes the first rule's, above 1 the last's)."""
        bounds = np.array([r.min_score for r in self.rules], dtype=np.float64)
        labels = np.array([r.label.value for r in self.rules], dtype=object)
        at = np.searchsorted(bounds, np.asarray(scores, dtype=np.float64), side="right") - 1
        return pa.array(labels[np.clip(at, 0, None)], pa.string())

    def label_of(self, score: float) -> Decision:
        """One score's decision (``decide`` for a single value)."""
        return Decision(self.decide(np.array([score]))[0].as_py())


def decision_counts(scored: pa.Table) -> dict[str, int]:
    """Rows of a table with a ``decision`` column (scored or prediction rows) by decision;
    rows without one aside."""
    counts = pc.value_counts(scored.column("decision").drop_null())
    return {c["values"].as_py(): c["counts"].as_py() for c in counts}
