"""Metadata stored beside every model version, and the statistics it is built from.

Everything here is plain JSON (pydantic models with extra="forbid"): the
registry never stores a pickled object, so reading a version's metadata
cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
from pydantic import BaseModel, ConfigDict, Field

from sluice.models._net import MLPConfig

__all__ = [
    "FeatureReference",
    "ModelMeta",
    "reference_stats",
    "roc_auc",
    "spec_hash",
    "table_fingerprint",
]

# Deciles are enough for a PSI-style drift score and keep metadata small.
_REFERENCE_QUANTILES = tuple(round(q / 10, 1) for q in range(11))


class FeatureReference(BaseModel):
    """Training-time distribution of one feature, the baseline for drift detection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: int = Field(..., ge=0, description="Rows with a finite value.")
    missing: int = Field(0, ge=0, description="Rows whose value was NaN or infinite.")
    mean: float
    std: float = Field(..., ge=0.0)
    min: float
    max: float
    quantiles: tuple[float, ...] = Field(
        ..., description="Values at probabilities 0.0, 0.1, ..., 1.0 (bin edges for PSI)."
    )
    bin_fractions: tuple[float, ...] = Field(
        ..., description="Share of training rows in each quantile bin (sums to 1)."
    )


class ModelMeta(BaseModel):
    """Everything needed to rebuild, trust and monitor one trained model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contract: str = Field(..., min_length=1, description="Contract the model was trained for.")
    architecture: MLPConfig
    feature_names: tuple[str, ...] = Field(..., min_length=1)
    feature_spec_hash: str = Field(..., min_length=1, description="spec_hash of the FeatureSpec.")
    feature_stats: dict[str, Any] = Field(
        ..., description="sluice.features.FeatureStats as JSON (standardize stats, vocabularies)."
    )
    reference: dict[str, FeatureReference] = Field(
        ..., description="Training distribution of every feature, by feature name."
    )
    metrics: dict[str, float] = Field(default_factory=dict, description="e.g. holdout_auc.")
    data_fingerprint: str = Field(..., min_length=1, description="table_fingerprint of the data.")
    train_params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def model_post_init(self, __context: Any) -> None:
        if len(self.feature_names) != self.architecture.input_dim:
            raise ValueError(
                f"feature_names has {len(self.feature_names)} names but "
                f"architecture.input_dim is {self.architecture.input_dim}"
            )
        missing = set(self.feature_names) - set(self.reference)
        if missing:
            raise ValueError(f"reference is missing features {sorted(missing)}")


def spec_hash(spec: BaseModel | Mapping[str, Any]) -> str:
    """A stable hash of a feature spec (canonical JSON), to match models to contracts."""
    data = spec.model_dump(mode="json") if isinstance(spec, BaseModel) else dict(spec)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def table_fingerprint(table: pa.Table) -> str:
    """Content hash of a training table: same rows in the same order -> same fingerprint.

    The table is re-chunked into one record batch and written as Arrow IPC, so
    the hash does not depend on how the rows happened to be chunked.
    """
    table = table.replace_schema_metadata(None).combine_chunks()
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=max(table.num_rows, 1)):
            writer.write_batch(batch)
    return "sha256:" + hashlib.sha256(sink.getvalue()).hexdigest()


def reference_stats(matrix: np.ndarray, names: Sequence[str]) -> dict[str, FeatureReference]:
    """Per-feature reference distribution of a (rows, features) matrix."""
    if matrix.ndim != 2 or matrix.shape[1] != len(names):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(names)} feature names")
    values = matrix.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    out: dict[str, FeatureReference] = {}
    for j, name in enumerate(names):  # one loop per feature (tens), never per row
        column = values[finite[:, j], j]
        if column.size == 0:
            out[name] = FeatureReference(
                count=0, missing=int(values.shape[0]), mean=0.0, std=0.0, min=0.0, max=0.0,
                quantiles=(0.0,) * len(_REFERENCE_QUANTILES),
                bin_fractions=(0.0,) * (len(_REFERENCE_QUANTILES) - 1),
            )  # fmt: skip
            continue
        edges = np.quantile(column, _REFERENCE_QUANTILES)
        # Interior edges only: values below/above the extremes fall into the end bins.
        bins = np.searchsorted(edges[1:-1], column, side="right")
        fractions = np.bincount(bins, minlength=len(edges) - 1) / column.size
        out[name] = FeatureReference(
            count=int(column.size),
            missing=int(values.shape[0] - column.size),
            mean=float(column.mean()),
            std=float(column.std()),
            min=float(column.min()),
            max=float(column.max()),
            quantiles=tuple(float(e) for e in edges),
            bin_fractions=tuple(float(f) for f in fractions),
        )
    return out


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum (Mann-Whitney U) identity.

    Tied scores get their average rank, so a constant scorer gets exactly 0.5.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels has {y.size} values but scores has {s.size}")
    positives = int(y.sum())
    negatives = int(y.size - positives)
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs at least one positive and one negative label")
    order = np.argsort(s, kind="mergesort")
    sorted_scores = s[order]
    # Average ranks over runs of equal scores (1-based ranks).
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], s.size]
    run_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    rank_sum = ranks[y].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))
