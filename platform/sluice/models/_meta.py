"""Metadata stored beside every model version, the data fingerprint and the AUC metric.

A version trained by `pipelines.train` also carries its lineage (`_lineage`) and its
gate report (`sluice.gate`).

Everything here is plain JSON (pydantic models with extra="forbid"): the
registry never stores a pickled object, so reading a version's metadata
cannot run code.
"""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
from pydantic import BaseModel, ConfigDict, Field

from sluice.features import FeatureStats, ReferenceStatistics
from sluice.gate._report import GateReport
from sluice.models._formats import ModelFormat
from sluice.models._lineage import Lineage

__all__ = ["ModelMeta", "ModelOutput", "roc_auc", "table_fingerprint"]

JsonScalar = str | int | float | bool


class ModelOutput(BaseModel):
    """Which output of the model is the score, and how it maps to a probability."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(0, ge=0, description="Output number (a classifier's probabilities: 1).")
    column: int | None = Field(
        None, ge=0, description="Column of a (rows, k) output, e.g. 1: the positive class."
    )
    link: Literal["probability", "logit"] = Field(
        "probability", description="probability: the output is the score; logit: sigmoid of it."
    )


class ModelMeta(BaseModel):
    """Everything needed to rebuild, trust and monitor one trained model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contract: str = Field(..., min_length=1, description="Contract the model was trained for.")
    format: ModelFormat = Field(..., description="Artifact format (sluice.models._formats).")
    output: ModelOutput = Field(default_factory=ModelOutput)
    trusted: bool = Field(
        False, description="Registered from a trusted source: may run code when loaded."
    )
    architecture: dict[str, JsonScalar | list[JsonScalar]] = Field(
        default_factory=dict, description="What the model is, for people (family, sizes)."
    )
    feature_names: tuple[str, ...] = Field(..., min_length=1)
    feature_spec_hash: str = Field(..., min_length=1, description="FeatureSpec.spec_hash().")
    feature_stats: FeatureStats = Field(
        ..., description="Fitted at training (standardize stats, category vocabularies)."
    )
    reference: ReferenceStatistics = Field(
        ..., description="Training distribution of every feature (the drift baseline)."
    )
    metrics: dict[str, float] = Field(default_factory=dict, description="e.g. holdout_auc.")
    data_fingerprint: str = Field(..., min_length=1, description="table_fingerprint of the data.")
    train_params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    lineage: Lineage | None = Field(
        None, description="Data rows and time range, contract digest, code and library "
        "versions (null: registered by hand from an artifact without them).",
    )  # fmt: skip
    gate: GateReport | None = Field(
        None, description="The contract's promotion gate on the holdout, judged at "
        "registration (null: registered without a labelled holdout).",
    )  # fmt: skip
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def model_post_init(self, __context: Any) -> None:
        missing = set(self.feature_names) - set(self.reference.features)
        if missing:
            raise ValueError(f"reference is missing features {sorted(missing)}")
        if self.feature_stats.spec_hash != self.feature_spec_hash:
            raise ValueError(
                f"feature_stats were fitted for spec {self.feature_stats.spec_hash}, "
                f"not {self.feature_spec_hash}"
            )


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
