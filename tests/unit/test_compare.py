"""`sluice models compare`'s figures on hand-made prediction-log rows, and its gauges."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sluice.contract import load_contract
from sluice.drift import (
    LoggedScore,
    compare_versions,
    format_pairs,
    read_key_labels,
    write_compare_metrics,
)
from sluice.errors import ConfigError
from sluice.models import roc_auc


def _rows() -> tuple[list[LoggedScore], dict[str, int]]:
    rng = np.random.default_rng(3)
    keys = [f"tx_{i:04d}" for i in range(200)]
    labels = {k: int(rng.random() < 0.3) for k in keys}
    a = np.clip(np.array([0.7 if labels[k] else 0.2 for k in keys]) + rng.normal(0, 0.15, 200),
                0, 1)  # fmt: skip
    b = np.clip(a + rng.normal(0, 0.1, 200), 0, 1)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    rows = [LoggedScore(k, "fraud/1", "champion", float(s), "review" if s >= 0.5 else "approve",
                        now) for k, s in zip(keys, a, strict=True)]  # fmt: skip
    rows += [LoggedScore(k, "fraud/2", "shadow", float(s), "review" if s >= 0.5 else "approve",
                         now) for k, s in zip(keys[:150], b[:150], strict=True)]  # fmt: skip
    # A retry, logged first: the latest row of a key and version is the one compared.
    rows.insert(0, LoggedScore(keys[0], "fraud/2", "shadow", 0.99, "block",
                               datetime(2020, 1, 1, tzinfo=UTC)))  # fmt: skip
    rows += [LoggedScore("other", "fraud/3", "challenger", 0.4, None)]  # no key in common
    return rows, labels


def test_pairs_report_correlation_agreement_delta_and_auc():
    rows, labels = _rows()
    (pair,) = compare_versions(rows, labels)
    a = {r.key: r for r in rows if r.model_version == "fraud/1"}
    b = {r.key: r for r in rows if r.model_version == "fraud/2" and r.score != 0.99}
    keys = sorted(b)
    sa, sb = np.array([a[k].score for k in keys]), np.array([b[k].score for k in keys])
    assert (pair.a, pair.b, pair.rows, pair.labelled) == ("fraud/1", "fraud/2", 150, 150)
    assert pair.correlation == pytest.approx(np.corrcoef(sa, sb)[0, 1])
    assert pair.mean_abs_delta == pytest.approx(np.abs(sa - sb).mean())
    agree = np.mean([a[k].decision == b[k].decision for k in keys])
    assert pair.decision_agreement == pytest.approx(agree) and 0.5 < agree < 1
    y = np.array([labels[k] for k in keys])
    assert pair.auc_a == pytest.approx(roc_auc(y, sa)) and pair.auc_b == pytest.approx(
        roc_auc(y, sb))
    unlabelled = compare_versions(rows)[0]
    assert unlabelled.auc_a is None and unlabelled.labelled == 0
    lines = [line.split() for line in format_pairs(rows, [pair]).splitlines()]
    assert ["fraud/2", "shadow", "151"] in lines  # rows logged per version and role
    assert ["fraud/1", "fraud/2", "150"] == next(x for x in lines if x[:2] == ["fraud/1",
                                                                             "fraud/2"])[:3]


def test_gauges_carry_the_same_figures(tmp_path):
    rows, labels = _rows()
    pairs = compare_versions(rows, labels)
    path = write_compare_metrics("fraud", pairs, tmp_path / "compare.prom")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(path.read_text()) for s in fam.samples}
    pair = (("a", "fraud/1"), ("b", "fraud/2"), ("contract", "fraud"))
    assert samples[("sluice_compare_rows", pair)] == 150
    assert samples[("sluice_compare_score_correlation", pair)] == pytest.approx(
        pairs[0].correlation)
    auc_b = ("sluice_compare_auc", (*pair, ("version", "fraud/2")))
    assert samples[auc_b] == pytest.approx(pairs[0].auc_b)


def test_labels_come_from_the_key_and_label_columns(tmp_path):
    contract = load_contract("fraud")
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"transaction_id": ["a", "b", None], "is_fraud": [1, 0, 1]}), path)
    assert read_key_labels(path, contract) == {"a": 1, "b": 0}
    pq.write_table(pa.table({"transaction_id": ["a"]}), path)
    with pytest.raises(ConfigError, match="is_fraud"):
        read_key_labels(path, contract)
