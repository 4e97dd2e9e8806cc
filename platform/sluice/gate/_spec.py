"""The promotion gate a contract declares: which checks a model version must pass to lead.

    gate:
      auc: {min: 0.75, max_drop: 0.02}          # floor, and margin below the champion
      calibration: {metric: ece, max: 0.03}     # or brier
      slices:
        by: {country: country, channel: channel, card_country_vs_country: [card_country, country]}
        threshold: decision                     # the lowest score the decision policy alerts at
        min_negatives: 100                      # smaller slices are shown, not judged
        limits:
          - {metric: false_positive_rate, max_difference: 0.06, slices: [country, channel]}
      latency:                                  # p99 of one scoring call, on the serving runtime
        - {batch_rows: 1, max_p99_ms: 5}

Every section is optional; a contract without `gate` has no gate. Field rules (bounds,
known metrics) are checked here; the rules that need the contract (slice columns in the
input schema, a decision threshold to take) are `GateSpec.problems`, which `Contract`
reports at load with the other contract problems.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "SLICE_METRICS",
    "AucCheck",
    "CalibrationCheck",
    "GateSpec",
    "LatencyBudget",
    "SliceLimit",
    "SliceSpec",
]

SliceMetric = Literal[
    "false_positive_rate", "true_positive_rate", "false_negative_rate", "selection_rate"
]
SLICE_METRICS: tuple[str, ...] = SliceMetric.__args__  # type: ignore[attr-defined]
_SLICE_NAME = r"^[a-z][a-z0-9_]{0,47}$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AucCheck(_Frozen):
    """Holdout AUC: at least `min`, and at most `max_drop` below the champion's AUC on the
    same holdout rows (the champion that leads when the candidate is judged)."""

    min: float = Field(0.5, ge=0.0, le=1.0, allow_inf_nan=False, description="AUC floor.")
    max_drop: float | None = Field(
        0.0, ge=0.0, lt=1.0, allow_inf_nan=False,
        description="How far below the champion's AUC a candidate may be; null: not compared.",
    )  # fmt: skip


class CalibrationCheck(_Frozen):
    """How far the scores are from observed fraud rates: Brier score or expected
    calibration error (equal-width score bins, weighted by rows)."""

    metric: Literal["brier", "ece"] = "ece"
    max: float = Field(gt=0.0, le=1.0, allow_inf_nan=False, description="Highest value passed.")
    bins: int = Field(10, ge=2, le=100, description="Score bins of the ECE.")


class SliceLimit(_Frozen):
    """A disparity limit on one metric between the slices of each slicing (fairlearn's
    `MetricFrame.difference()` / `.ratio()` over the judged slices)."""

    metric: SliceMetric
    max_difference: float | None = Field(
        None, ge=0.0, lt=1.0, allow_inf_nan=False,
        description="Highest slice's value minus the lowest's must not exceed this.",
    )  # fmt: skip
    min_ratio: float | None = Field(
        None, gt=0.0, le=1.0, allow_inf_nan=False,
        description="Lowest slice's value over the highest's must be at least this.",
    )  # fmt: skip
    slices: tuple[str, ...] | None = Field(
        None, min_length=1, description="Which slicings (names under `by`); default all."
    )

    @model_validator(mode="after")
    def _one_limit(self) -> SliceLimit:
        if self.max_difference is None and self.min_ratio is None:
            raise ValueError(f"{self.metric}: give max_difference or min_ratio (or both)")
        return self


class SliceSpec(_Frozen):
    """Slicings of the holdout rows and the disparity limits between their slices."""

    by: dict[str, str | tuple[str, str]] = Field(
        min_length=1,
        description="Slicing name -> an input column (one slice per value) or two columns "
        "(two slices: 'same' and 'different' value).",
    )
    threshold: Literal["decision"] | float = Field(
        "decision",
        description="Score at which a row counts as flagged: a number in (0, 1), or "
        "'decision': the lowest min_score of a decision rule that alerts (review, block).",
    )
    min_negatives: int = Field(
        100, ge=1, description="A slice with fewer label-0 rows is shown but not judged."
    )
    limits: tuple[SliceLimit, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self) -> SliceSpec:
        import re

        problems = []
        if isinstance(self.threshold, float) and not 0.0 < self.threshold < 1.0:
            problems.append(f"threshold: {self.threshold:g} is not a score in (0, 1)")
        for name, columns in self.by.items():
            if not re.match(_SLICE_NAME, name):
                problems.append(f"by.{name}: a slicing name is lowercase letters, digits, '_'")
            if isinstance(columns, tuple) and columns[0] == columns[1]:
                problems.append(f"by.{name}: compares column {columns[0]!r} with itself")
        for i, limit in enumerate(self.limits):
            for name in limit.slices or ():
                if name not in self.by:
                    problems.append(f"limits[{i}].slices: {name!r} is not a slicing under by "
                                    f"({', '.join(self.by)})")  # fmt: skip
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def columns(self, name: str) -> tuple[str, ...]:
        spec = self.by[name]
        return (spec,) if isinstance(spec, str) else tuple(spec)


class LatencyBudget(_Frozen):
    """p99 of one scoring call (`LoadedModel.predict`, which runs passes of at most 4,096
    rows) at `batch_rows` rows, on the runtime and device that serve the model."""

    batch_rows: int = Field(ge=1, le=1_000_000)
    max_p99_ms: float = Field(gt=0.0, allow_inf_nan=False)
    runs: int = Field(200, ge=10, le=10_000, description="Timed passes (after 3 warm-ups).")


class GateSpec(_Frozen):
    """The contract's `gate` section: every check a version must pass to become champion."""

    auc: AucCheck = AucCheck()
    calibration: CalibrationCheck | None = None
    slices: SliceSpec | None = None
    latency: tuple[LatencyBudget, ...] = ()

    @model_validator(mode="after")
    def _unique_batches(self) -> GateSpec:
        sizes = [b.batch_rows for b in self.latency]
        if len(sizes) != len(set(sizes)):
            raise ValueError(f"latency: batch_rows {sizes} repeats a batch size")
        return self

    def problems(
        self, schema: pa.Schema, label: str | None, alert_threshold: float | None
    ) -> list[str]:
        """What the contract contradicts: unknown slice columns, the label as a slice, a
        'decision' threshold without an alerting decision rule."""
        out = []
        if label is None:
            out.append("gate: the gate judges a model on labelled holdout rows; the contract "
                       "declares no label_column")  # fmt: skip
        if self.slices is not None:
            for name in self.slices.by:
                columns = self.slices.columns(name)
                for column in columns:
                    if column not in schema.names:
                        out.append(f"gate.slices.by.{name}: column {column!r} is not in "
                                   "input_schema")  # fmt: skip
                    elif column == label:
                        out.append(f"gate.slices.by.{name}: {column!r} is the label")
                if len(columns) == 2 and set(columns) <= set(schema.names):
                    a, b = (schema.field(c).type for c in columns)
                    if a != b:
                        out.append(f"gate.slices.by.{name}: compares {columns[0]!r} ({a}) with "
                                   f"{columns[1]!r} ({b}); they must have one type")  # fmt: skip
            if self.slices.threshold == "decision" and alert_threshold is None:
                out.append("gate.slices.threshold: 'decision' needs a decision rule that "
                           "alerts (review or block); give a number instead")  # fmt: skip
        return out

    def digest(self, alert_threshold: float | None = None) -> str:
        """``gate-`` and 12 hex digits: a report made for another gate is stale. A
        ``threshold: decision`` is hashed as the score it resolves to (`alert_threshold`,
        the contract's), so moving the decision policy's alert threshold changes the gate."""
        doc = self.model_dump(mode="json")
        if self.slices is not None and self.slices.threshold == "decision":
            doc["slices"]["threshold"] = {"decision": alert_threshold}
        canon = json.dumps(doc, sort_keys=True)
        return "gate-" + hashlib.sha256(canon.encode()).hexdigest()[:12]
