"""Reference statistics of the training features, kept for drift detection.

Per feature: counts, moments, quantiles and a histogram. Bin edges are the
training quantiles (about the same share of training rows per bin) or, for a
feature with at most ``bins`` distinct values, one bin per value. A drift check
bins new data on the same edges and compares shares (e.g. PSI).
Everything is plain floats and ints: ``ReferenceStatistics.to_dict()`` is JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sluice.features._compute import FeatureMatrix

__all__ = ["FeatureReference", "ReferenceStatistics", "reference_statistics"]

QUANTILE_LEVELS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


class FeatureReference(BaseModel):
    """One feature on the training data. Moments are None when no value is finite."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: int = Field(description="Finite values.")
    missing: int = Field(description="NaN or infinite values.")
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    quantile_levels: tuple[float, ...]
    quantiles: tuple[float, ...]
    bin_edges: tuple[float, ...] = Field(
        description="Increasing edges; the first and last bins are open-ended for new data."
    )
    bin_counts: tuple[int, ...] = Field(description="Training rows per bin (len(edges) - 1).")


class ReferenceStatistics(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int
    features: dict[str, FeatureReference]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceStatistics:
        return cls.model_validate(data)


def _one(x: np.ndarray, bins: int) -> FeatureReference:
    finite = x[np.isfinite(x)].astype(np.float64)
    missing = int(len(x) - len(finite))
    if len(finite) == 0:
        return FeatureReference(
            count=0,
            missing=missing,
            mean=None,
            std=None,
            min=None,
            max=None,
            quantile_levels=QUANTILE_LEVELS,
            quantiles=(),
            bin_edges=(),
            bin_counts=(),
        )
    qs = np.quantile(finite, QUANTILE_LEVELS)
    distinct = np.unique(finite)
    if len(distinct) == 1:
        edges = np.array([distinct[0], distinct[0] + 1.0])
    elif len(distinct) <= bins:
        # Discrete features (flags, indices, small counts): one bin per value, cut
        # half-way between values, so a shift between two values stays visible.
        edges = np.concatenate([distinct[:1], (distinct[1:] + distinct[:-1]) / 2, distinct[-1:]])
    else:
        # Quantile cuts: about the same share of training rows per bin; unique()
        # drops the repeated cuts of a value that fills several quantiles.
        edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)))
    counts, _ = np.histogram(finite, bins=edges)
    return FeatureReference(
        count=len(finite),
        missing=missing,
        mean=float(finite.mean()),
        std=float(finite.std()),
        min=float(finite.min()),
        max=float(finite.max()),
        quantile_levels=QUANTILE_LEVELS,
        quantiles=tuple(float(q) for q in qs),
        bin_edges=tuple(float(e) for e in edges),
        bin_counts=tuple(int(c) for c in counts),
    )


def reference_statistics(matrix: FeatureMatrix, bins: int = 10) -> ReferenceStatistics:
    """Per-feature reference statistics of a (training) feature matrix."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    return ReferenceStatistics(
        rows=len(matrix),
        features={name: _one(matrix.values[:, i], bins) for i, name in enumerate(matrix.names)},
    )
