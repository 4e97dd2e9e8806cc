"""The declared feature spec: what a contract's ``features:`` section parses into.

A spec is pure data (frozen pydantic models). Feature names come out in one fixed
order — pass-through columns, then transforms in declared order, then entity
aggregates (window by window: count, sum, mean), then seconds since the previous
event — and that order is the column order of every ``FeatureMatrix``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AggregateSpec",
    "CategoryIndex",
    "DayOfWeek",
    "EqualityFlag",
    "FeatureSpec",
    "HourOfDay",
    "Log1p",
    "Standardize",
    "Transform",
    "window_label",
]

_NAME = r"^[a-z][a-z0-9_]{0,62}$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _TransformBase(_Frozen):
    name: str = Field(pattern=_NAME, description="Feature name (a column of the matrix).")

    def input_columns(self) -> tuple[str, ...]:
        raise NotImplementedError


class _OneColumn(_TransformBase):
    column: str = Field(min_length=1, description="Input column the transform reads.")

    def input_columns(self) -> tuple[str, ...]:
        return (self.column,)


class Log1p(_OneColumn):
    """``log(1 + x)`` of a numeric column (tames heavy-tailed amounts)."""

    op: Literal["log1p"]


class Standardize(_OneColumn):
    """``(x - mean) / std`` with mean and std captured by ``fit_stats`` at training.

    With ``log1p: true`` the column is log1p-transformed first (a heavy tail would
    otherwise dominate the mean and std).
    """

    op: Literal["standardize"]
    log1p: bool = Field(False, description="Apply log1p before standardizing.")


class CategoryIndex(_OneColumn):
    """Index of a string value in a vocabulary fitted at training.

    Index 0 is the "unknown" bucket (a value never seen at training, or null);
    known values get 1..K in sorted order.
    """

    op: Literal["category_index"]
    max_categories: int = Field(
        1000, ge=1, le=1_000_000, description="Keep the most frequent values; others -> 0."
    )


class HourOfDay(_OneColumn):
    """Hour of the event time in UTC, 0..23."""

    op: Literal["hour_of_day"]


class DayOfWeek(_OneColumn):
    """Day of the week of the event time in UTC, Monday = 0 .. Sunday = 6."""

    op: Literal["day_of_week"]


class EqualityFlag(_TransformBase):
    """1.0 where two columns are equal (``equal``) or differ (``not_equal``), else 0.0.

    A null on either side gives 0.0 for both ops: a missing value proves nothing. (A float
    NaN is a value here, as Arrow compares it: NaN differs from everything, itself
    included.) The two columns must be of one kind (text, numbers or times): the contract
    refuses others at load.
    """

    op: Literal["equal", "not_equal"]
    columns: tuple[str, str] = Field(description="The two columns compared.")

    def input_columns(self) -> tuple[str, ...]:
        return self.columns


Transform = Annotated[
    Log1p | Standardize | CategoryIndex | HourOfDay | DayOfWeek | EqualityFlag,
    Field(discriminator="op"),
]

Aggregate = Literal["count", "sum", "mean"]


def window_label(seconds: int) -> str:
    """``3600`` -> ``"1h"``, ``86400`` -> ``"24h"``, ``900`` -> ``"15m"``, ``45`` -> ``"45s"``."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


class AggregateSpec(_Frozen):
    """Point-in-time aggregates of ``value_column`` per entity.

    For an event ``e`` at time ``t`` with key ``k``, a window of ``w`` seconds covers
    the entity's events ``x`` with ``t - w <= x.time`` and ``(x.time, x.key) <
    (t, k)``: strictly before ``e`` in (event time, key) order. Events at the very
    same time count only when their key sorts before ``k`` — a total order, so the
    result is deterministic and ``e`` never counts itself. Events after ``e`` never
    count, whenever they were recorded.

    Inside a contract the three column names default to the contract's key,
    entity and event-time columns.
    """

    entity_column: str = Field(min_length=1, description="Entity the aggregates group by.")
    event_time_column: str = Field(min_length=1, description="Timestamp column.")
    key_column: str = Field(min_length=1, description="Unique event key (ties, replays).")
    value_column: str = Field("amount", min_length=1, description="Numeric column aggregated.")
    windows_s: tuple[int, ...] = Field(
        (3600, 86400), min_length=1, description="Window lengths in seconds."
    )
    functions: tuple[Aggregate, ...] = Field(("count", "sum", "mean"), min_length=1)
    seconds_since_previous: bool = Field(
        True, description="Add seconds since the entity's previous event."
    )
    max_lookback_s: int = Field(
        7 * 86400,
        gt=0,
        description="Cap of seconds-since-previous; also its value when there is no "
        "previous event within the lookback.",
    )
    name_prefix: str | None = Field(
        None, pattern=_NAME, description="Prefix of the feature names; default entity minus _id."
    )

    @model_validator(mode="after")
    def _windows_positive_unique(self) -> AggregateSpec:
        if any(w <= 0 for w in self.windows_s):
            raise ValueError(f"windows_s must be positive seconds, got {list(self.windows_s)}")
        if len(set(self.windows_s)) != len(self.windows_s):
            raise ValueError(f"windows_s has a repeated window: {list(self.windows_s)}")
        if len(set(self.functions)) != len(self.functions):
            raise ValueError(f"functions has a repeated function: {list(self.functions)}")
        return self

    @property
    def prefix(self) -> str:
        return self.name_prefix or self.entity_column.removesuffix("_id")

    @property
    def horizon_s(self) -> int:
        """How far back before an event its aggregates can look."""
        longest = max(self.windows_s)
        return max(longest, self.max_lookback_s) if self.seconds_since_previous else longest

    @property
    def feature_names(self) -> tuple[str, ...]:
        p, v = self.prefix, self.value_column
        names = []
        for w in self.windows_s:
            label = window_label(w)
            for fn in self.functions:
                names.append(f"{p}_count_{label}" if fn == "count" else f"{p}_{v}_{fn}_{label}")
        if self.seconds_since_previous:
            names.append(f"{p}_seconds_since_prev")
        return tuple(names)

    def input_columns(self) -> tuple[str, ...]:
        return (self.entity_column, self.event_time_column, self.key_column, self.value_column)


class FeatureSpec(_Frozen):
    """The features of a contract: pass-through columns, transforms, entity aggregates."""

    passthrough: tuple[str, ...] = Field((), description="Numeric columns copied as they are.")
    transforms: tuple[Transform, ...] = ()
    aggregates: AggregateSpec | None = None

    @model_validator(mode="after")
    def _names_unique(self) -> FeatureSpec:
        names = self.feature_names
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(f"feature name {name!r} is declared twice; names must be unique")
            seen.add(name)
        if not names:
            raise ValueError("the spec declares no feature")
        return self

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Column names of the feature matrix, in matrix order."""
        aggs = self.aggregates.feature_names if self.aggregates else ()
        return (*self.passthrough, *(t.name for t in self.transforms), *aggs)

    def input_columns(self) -> tuple[str, ...]:
        """Input columns the features read, each once, in first-use order."""
        cols = list(self.passthrough)
        for t in self.transforms:
            cols.extend(t.input_columns())
        if self.aggregates:
            cols.extend(self.aggregates.input_columns())
        return tuple(dict.fromkeys(cols))

    def spec_hash(self) -> str:
        """A stable digest of the spec (16 hex chars) for the model registry.

        It is the SHA-256 of the spec's canonical JSON (sorted keys, defaults
        included), so it does not depend on YAML key order or Python process, and
        changes whenever any feature, parameter or default changes.
        """
        payload = json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
        ).encode()
        return hashlib.sha256(payload).hexdigest()[:16]
