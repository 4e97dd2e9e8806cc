"""Reference statistics of training features, for drift detection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sluice.features import FeatureMatrix, ReferenceStatistics, reference_statistics


def _matrix() -> FeatureMatrix:
    rng = np.random.default_rng(0)
    n = 10_000
    values = np.column_stack(
        [
            rng.lognormal(3.0, 1.0, n),  # continuous, heavy-tailed
            rng.random(n) < 0.1,  # a flag: only two distinct values
            np.full(n, 7.0),  # constant
            np.where(np.arange(n) % 4 == 0, np.nan, 1.0),  # with missing values
            np.full(n, np.nan),  # nothing finite
        ]
    ).astype(np.float32)
    return FeatureMatrix(values, ("amount", "flag", "constant", "gappy", "empty"))


def test_reference_statistics_are_json_and_round_trip():
    ref = reference_statistics(_matrix())
    text = json.dumps(ref.to_dict(), allow_nan=False)
    assert ReferenceStatistics.from_dict(json.loads(text)) == ref


def test_histogram_counts_cover_every_finite_value():
    ref = reference_statistics(_matrix(), bins=10)
    assert ref.rows == 10_000
    for name, feat in ref.features.items():
        assert sum(feat.bin_counts) == feat.count, name
        assert feat.count + feat.missing == 10_000
        assert list(feat.bin_edges) == sorted(set(feat.bin_edges)), name
        assert len(feat.bin_counts) == max(len(feat.bin_edges) - 1, 0)


def test_continuous_feature_uses_quantile_bins():
    amount = reference_statistics(_matrix(), bins=10).features["amount"]
    assert len(amount.bin_counts) == 10
    assert max(amount.bin_counts) - min(amount.bin_counts) <= 2  # about equal shares
    assert list(amount.quantiles) == sorted(amount.quantiles)
    assert amount.quantiles[amount.quantile_levels.index(0.5)] == pytest.approx(
        float(np.exp(3.0)), rel=0.05
    )


def test_discrete_constant_missing_and_empty_features():
    feats = reference_statistics(_matrix()).features
    ones = int(np.nansum(_matrix().column("flag")))
    assert feats["flag"].bin_edges == (0.0, 0.5, 1.0)  # one bin per value
    assert feats["flag"].bin_counts == (10_000 - ones, ones)
    assert feats["constant"].bin_counts == (10_000,) and feats["constant"].mean == 7.0
    assert feats["gappy"].missing == 2_500 and feats["gappy"].count == 7_500
    assert feats["empty"].mean is None and feats["empty"].bin_counts == ()


def test_bins_must_be_positive():
    with pytest.raises(ValueError):
        reference_statistics(_matrix(), bins=0)
