"""Row-wise transforms and the statistics they capture at training.

Every transform maps whole Arrow columns to a float64 numpy vector; nothing here
loops over rows. Statistics (standardize mean/std, category vocabularies) are
fitted once on the training table by ``fit_stats`` and travel with the model, so
scoring reproduces the training transforms exactly.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from sluice.errors import ConfigError
from sluice.features._spec import (
    CategoryIndex,
    DayOfWeek,
    EqualityFlag,
    FeatureSpec,
    HourOfDay,
    Log1p,
    Standardize,
    Transform,
)

__all__ = ["FeatureStats", "StandardizeStats", "apply_transform", "fit_stats", "numeric_column"]

_US_PER_HOUR = 3_600_000_000
_US_PER_DAY = 24 * _US_PER_HOUR


class StandardizeStats(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: float
    std: float = Field(gt=0, description="Never 0: a constant column gets std 1.0.")


class FeatureStats(BaseModel):
    """Statistics captured at training; JSON-serializable via ``to_dict``/``from_dict``.

    ``spec_hash`` ties them to the spec they were fitted for: computing features
    with stats of another spec is refused.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec_hash: str
    standardize: dict[str, StandardizeStats] = Field(default_factory=dict)
    vocabularies: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureStats:
        return cls.model_validate(data)


def _column(table: pa.Table, name: str) -> pa.Array:
    if name not in table.column_names:
        raise ConfigError(
            f"feature input column {name!r} is missing from the table "
            f"(columns: {', '.join(table.column_names)})"
        )
    return table.column(name).combine_chunks()


def numeric_column(table: pa.Table, name: str) -> np.ndarray:
    """A numeric or boolean column as float64; nulls become NaN."""
    col = _column(table, name)
    if pa.types.is_boolean(col.type) or pa.types.is_integer(col.type):
        col = col.cast(pa.float64())
    elif not pa.types.is_floating(col.type):
        raise ConfigError(f"column {name!r} has type {col.type}; a numeric feature needs a number")
    return col.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _log1p(x: np.ndarray) -> np.ndarray:
    # Valid amounts are > 0; a negative value that slipped past validation must not raise
    # or warn inside a scoring batch: below -1 it becomes NaN, at -1 -inf (numpy's log1p).
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log1p(x)


def _micros(table: pa.Table, name: str) -> np.ndarray:
    col = _column(table, name)
    if not pa.types.is_timestamp(col.type):
        raise ConfigError(f"column {name!r} has type {col.type}; a time feature needs a timestamp")
    # Timestamps store UTC instants whatever their tz (naive ones are read as
    # UTC); only the unit needs aligning. ns -> us truncates, like the store.
    col = col.cast(pa.timestamp("us", tz=col.type.tz), safe=False)
    return col.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)


def _vocabulary(col: pa.Array, max_categories: int) -> tuple[str, ...]:
    counts = pc.value_counts(col.drop_null())
    values = counts.field("values").to_pylist()
    freq = counts.field("counts").to_numpy()
    if len(values) > max_categories:
        # Most frequent first, ties by value so the vocabulary is deterministic.
        order = sorted(range(len(values)), key=lambda i: (-freq[i], values[i]))
        values = [values[i] for i in order[:max_categories]]
    return tuple(sorted(str(v) for v in values))


def fit_stats(table: pa.Table, spec: FeatureSpec) -> FeatureStats:
    """Capture what the transforms need from the training table.

    Standardize: mean and population std of the (optionally log1p'd) column over
    finite values. Category index: the sorted distinct values (at most
    ``max_categories``, the most frequent). The result is JSON-serializable
    (``stats.to_dict()``).
    """
    standardize: dict[str, StandardizeStats] = {}
    vocabularies: dict[str, tuple[str, ...]] = {}
    for t in spec.transforms:
        if isinstance(t, Standardize):
            x = numeric_column(table, t.column)
            if t.log1p:
                x = _log1p(x)
            x = x[np.isfinite(x)]
            mean = float(x.mean()) if len(x) else 0.0
            std = float(x.std()) if len(x) else 0.0
            standardize[t.name] = StandardizeStats(mean=mean, std=std if std > 0 else 1.0)
        elif isinstance(t, CategoryIndex):
            col = _column(table, t.column).cast(pa.string())
            vocabularies[t.name] = _vocabulary(col, t.max_categories)
    return FeatureStats(
        spec_hash=spec.spec_hash(), standardize=standardize, vocabularies=vocabularies
    )


@lru_cache(maxsize=256)
def _lookup(vocab: tuple[str, ...]) -> pc.SetLookupOptions:
    """A vocabulary's lookup, built once: every scoring call of a model uses the same one."""
    return pc.SetLookupOptions(pa.array(vocab, pa.string()))


def apply_transform(table: pa.Table, t: Transform, stats: FeatureStats) -> np.ndarray:
    """One transform over the whole table: a float64 vector of ``len(table)``."""
    if isinstance(t, Log1p):
        return _log1p(numeric_column(table, t.column))
    if isinstance(t, Standardize):
        s = stats.standardize.get(t.name)
        if s is None:
            raise ConfigError(f"feature stats have no standardize entry for {t.name!r}; refit")
        x = numeric_column(table, t.column)
        return ((_log1p(x) if t.log1p else x) - s.mean) / s.std
    if isinstance(t, CategoryIndex):
        vocab = stats.vocabularies.get(t.name)
        if vocab is None:
            raise ConfigError(f"feature stats have no vocabulary for {t.name!r}; refit")
        col = _column(table, t.column).cast(pa.string())
        idx = pc.index_in(col, options=_lookup(vocab))
        # Unknown values and nulls share bucket 0; known values are 1..K.
        return pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.float64) + 1.0
    if isinstance(t, HourOfDay):
        us = _micros(table, t.column)
        return np.floor_divide(us, _US_PER_HOUR) % 24
    if isinstance(t, DayOfWeek):
        us = _micros(table, t.column)
        # 1970-01-01 was a Thursday (Monday = 0 -> Thursday = 3).
        return (np.floor_divide(us, _US_PER_DAY) + 3) % 7
    if isinstance(t, EqualityFlag):
        a, b = (_column(table, c) for c in t.columns)
        same = pc.equal(a, b) if t.op == "equal" else pc.not_equal(a, b)
        return pc.fill_null(same, False).to_numpy(zero_copy_only=False).astype(np.float64)
    raise ConfigError(f"unknown transform {t!r}")  # pragma: no cover - union is closed
