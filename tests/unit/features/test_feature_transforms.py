"""Row-wise transforms, statistics fitted at training, and compute_features' matrix."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from sluice.errors import ConfigError
from sluice.features import (
    FeatureMatrix,
    FeatureSpec,
    FeatureStats,
    InMemoryFeatureStore,
    compute_features,
    fit_stats,
)

SPEC = FeatureSpec.model_validate(
    {
        "passthrough": ["amount", "flag"],
        "transforms": [
            {"name": "amount_log1p", "op": "log1p", "column": "amount"},
            {"name": "amount_z", "op": "standardize", "column": "amount"},
            {"name": "amount_log_z", "op": "standardize", "column": "amount", "log1p": True},
            {"name": "channel_idx", "op": "category_index", "column": "channel"},
            {"name": "hour", "op": "hour_of_day", "column": "ts"},
            {"name": "dow", "op": "day_of_week", "column": "ts"},
            {"name": "mismatch", "op": "not_equal", "columns": ["country", "card_country"]},
            {"name": "same", "op": "equal", "columns": ["country", "card_country"]},
        ],
    }
)


def _ts(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _table(amount, channel, ts, country, card_country, flag=None) -> pa.Table:
    n = len(amount)
    return pa.table(
        {
            "amount": pa.array(amount, pa.float64()),
            "flag": pa.array(flag if flag is not None else [True] * n, pa.bool_()),
            "channel": pa.array(channel, pa.string()),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "country": pa.array(country, pa.string()),
            "card_country": pa.array(card_country, pa.string()),
        }
    )


TRAIN = _table(
    amount=[10.0, 20.0, 30.0, 40.0],
    channel=["pos", "online", "pos", "atm"],
    ts=[_ts(2024, 1, 1, 0), _ts(2024, 1, 1, 5), _ts(2024, 1, 2, 13), _ts(2024, 1, 7, 23)],
    country=["US", "US", "GB", "DE"],
    card_country=["US", "GB", "GB", "FR"],
)


def test_fit_stats_captures_training_statistics():
    stats = fit_stats(TRAIN, SPEC)
    assert stats.spec_hash == SPEC.spec_hash()
    assert stats.standardize["amount_z"].mean == pytest.approx(25.0)
    assert stats.standardize["amount_z"].std == pytest.approx(np.std([10, 20, 30, 40]))
    log = np.log1p([10.0, 20.0, 30.0, 40.0])
    assert stats.standardize["amount_log_z"].mean == pytest.approx(log.mean())
    assert stats.vocabularies == {"channel_idx": ("atm", "online", "pos")}


def test_stats_are_json_serializable_and_round_trip():
    stats = fit_stats(TRAIN, SPEC)
    text = json.dumps(stats.to_dict())
    assert FeatureStats.from_dict(json.loads(text)) == stats


def test_transforms_on_new_data_use_training_statistics():
    stats = fit_stats(TRAIN, SPEC)
    new = _table(
        amount=[100.0, 25.0, 0.0],
        channel=["moto", None, "pos"],  # moto never seen in training; null -> unknown too
        ts=[_ts(2024, 3, 4, 7, 59), _ts(2024, 3, 10, 23, 0), _ts(2023, 12, 31, 0, 0)],
        country=["US", None, "SE"],
        card_country=["US", "GB", "PL"],
        flag=[False, True, None],
    )
    m = compute_features(new, SPEC, stats)
    assert m.names == SPEC.feature_names
    assert m.values.dtype == np.float32 and m.values.shape == (3, len(SPEC.feature_names))
    std = np.std([10, 20, 30, 40])
    np.testing.assert_allclose(m.column("amount"), [100.0, 25.0, 0.0])
    np.testing.assert_array_equal(m.column("flag"), [0.0, 1.0, np.nan])
    np.testing.assert_allclose(m.column("amount_log1p"), np.log1p([100.0, 25.0, 0.0]), rtol=1e-6)
    np.testing.assert_allclose(m.column("amount_z"), (np.array([100, 25, 0]) - 25) / std, rtol=1e-6)
    # Unknown category and null share bucket 0; known values are 1..K in sorted order.
    np.testing.assert_array_equal(m.column("channel_idx"), [0.0, 0.0, 3.0])
    # 2024-03-04 is a Monday, 2024-03-10 a Sunday, 2023-12-31 a Sunday.
    np.testing.assert_array_equal(m.column("hour"), [7.0, 23.0, 0.0])
    np.testing.assert_array_equal(m.column("dow"), [0.0, 6.0, 6.0])
    # A null on either side proves nothing: 0 for both ops.
    np.testing.assert_array_equal(m.column("mismatch"), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(m.column("same"), [1.0, 0.0, 0.0])


def test_hour_and_weekday_of_naive_and_millisecond_timestamps():
    spec = FeatureSpec.model_validate(
        {
            "transforms": [
                {"name": "hour", "op": "hour_of_day", "column": "ts"},
                {"name": "dow", "op": "day_of_week", "column": "ts"},
            ]
        }
    )
    times = [datetime(2024, 1, 1, 1, 30), datetime(1969, 12, 31, 23, 0)]  # Mon, Wed
    for typ in (pa.timestamp("ms"), pa.timestamp("ns", tz="UTC")):
        t = pa.table({"ts": pa.array(times, typ)})
        m = compute_features(t, spec, fit_stats(t, spec))
        np.testing.assert_array_equal(m.column("hour"), [1.0, 23.0])
        np.testing.assert_array_equal(m.column("dow"), [0.0, 2.0])


def test_category_vocabulary_keeps_most_frequent():
    spec = FeatureSpec.model_validate(
        {"transforms": [{"name": "c", "op": "category_index", "column": "c", "max_categories": 2}]}
    )
    t = pa.table({"c": ["b", "a", "b", "c", "c", "d", "b", "c", None]})
    stats = fit_stats(t, spec)
    assert stats.vocabularies["c"] == ("b", "c")
    np.testing.assert_array_equal(
        compute_features(t, spec, stats).column("c"), [1, 0, 1, 2, 2, 0, 1, 2, 0]
    )


def test_constant_column_standardizes_without_dividing_by_zero():
    spec = FeatureSpec.model_validate(
        {"transforms": [{"name": "z", "op": "standardize", "column": "x"}]}
    )
    t = pa.table({"x": [5.0, 5.0, 5.0]})
    stats = fit_stats(t, spec)
    assert stats.standardize["z"].std == 1.0
    np.testing.assert_array_equal(compute_features(t, spec, stats).column("z"), [0.0, 0.0, 0.0])


def test_stats_of_another_spec_are_refused():
    other = FeatureSpec.model_validate({"passthrough": ["amount"]})
    with pytest.raises(ConfigError, match="refit"):
        compute_features(TRAIN, SPEC, fit_stats(TRAIN, other))


def test_missing_input_column_names_it():
    stats = fit_stats(TRAIN, SPEC)
    with pytest.raises(ConfigError, match="'channel'"):
        compute_features(TRAIN.drop_columns(["channel"]), SPEC, stats)


def test_aggregates_need_a_store():
    spec = FeatureSpec.model_validate(
        {
            "aggregates": {
                "entity_column": "country",
                "event_time_column": "ts",
                "key_column": "channel",
            }
        }
    )
    with pytest.raises(ConfigError, match="FeatureStore"):
        compute_features(TRAIN, spec, fit_stats(TRAIN, spec))
    assert len(compute_features(TRAIN, spec, fit_stats(TRAIN, spec), InMemoryFeatureStore())) == 4


def test_empty_table_gives_an_empty_matrix():
    stats = fit_stats(TRAIN, SPEC)
    m = compute_features(TRAIN.slice(0, 0), SPEC, stats)
    assert m.values.shape == (0, len(SPEC.feature_names))


def test_feature_matrix_accessors():
    m = FeatureMatrix(np.arange(6, dtype=np.float32).reshape(3, 2), ("a", "b"))
    np.testing.assert_array_equal(m.column("b"), [1, 3, 5])
    assert m.to_arrow().column_names == ["a", "b"]
    with pytest.raises(KeyError, match="'c'"):
        m.column("c")
    with pytest.raises(ValueError):
        FeatureMatrix(np.zeros((2, 2)), ("a", "b"))  # float64 is refused
