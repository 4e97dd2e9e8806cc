"""``compute_features``: a validated input table -> a float32 feature matrix.

Callers record first, then compute::

    store.record(to_store_events(table, spec))
    matrix = compute_features(table, spec, stats, store)

``compute_features`` never writes to the store. Because an event's aggregates
use only events strictly before it (in event time, then key), recording its own
batch first adds nothing to its features, and batches may be recorded and
computed in any order: once every earlier event is recorded, the features of a
row are the same whichever path computes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.errors import ConfigError
from sluice.features._aggregates import entity_aggregates
from sluice.features._spec import FeatureSpec
from sluice.features._store import FeatureStore, from_micros, to_store_events
from sluice.features._transforms import FeatureStats, apply_transform, numeric_column

__all__ = ["FeatureMatrix", "compute_features"]


@dataclass(frozen=True)
class FeatureMatrix:
    """Features of a table: ``values[i]`` is row i of the input, columns are ``names``."""

    values: np.ndarray  # float32, shape (rows, len(names))
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.values.dtype != np.float32 or self.values.ndim != 2:
            raise ValueError(f"values must be a 2-D float32 array, got {self.values.dtype}")
        if self.values.shape[1] != len(self.names):
            raise ValueError(f"{self.values.shape[1]} columns but {len(self.names)} names")

    def __len__(self) -> int:
        return self.values.shape[0]

    def column(self, name: str) -> np.ndarray:
        """One feature as a vector (a view into ``values``)."""
        try:
            return self.values[:, self.names.index(name)]
        except ValueError:
            raise KeyError(f"no feature {name!r}; features: {', '.join(self.names)}") from None

    def to_arrow(self) -> pa.Table:
        """The matrix as an Arrow table (one float32 column per feature)."""
        return pa.table({n: self.values[:, i] for i, n in enumerate(self.names)})


def compute_features(
    table: pa.Table,
    spec: FeatureSpec,
    stats: FeatureStats,
    store: FeatureStore | None = None,
) -> FeatureMatrix:
    """Features of every row of ``table`` in ``spec.feature_names`` order.

    ``stats`` are the ones fitted at training (``fit_stats``) for this very spec;
    stats of another spec are refused with ``ConfigError``. ``store`` is needed
    when the spec has aggregates: it is read (``history``), never written. The
    input must be validated: aggregates need a non-null entity, time and key.
    """
    expected = spec.spec_hash()
    if stats.spec_hash != expected:
        raise ConfigError(
            f"feature stats were fitted for spec {stats.spec_hash}, not for this spec "
            f"({expected}); refit them with fit_stats on the training table"
        )
    columns: list[np.ndarray] = [numeric_column(table, c) for c in spec.passthrough]
    columns.extend(apply_transform(table, t, stats) for t in spec.transforms)
    n = table.num_rows
    values = np.empty((n, len(spec.feature_names)), dtype=np.float32)
    for i, col in enumerate(columns):
        values[:, i] = col
    if spec.aggregates is not None:
        if store is None:
            raise ConfigError("the feature spec has entity aggregates: pass a FeatureStore")
        values[:, len(columns) :] = _aggregates(table, spec, store)
    return FeatureMatrix(values=values, names=spec.feature_names)


def _aggregates(table: pa.Table, spec: FeatureSpec, store: FeatureStore) -> np.ndarray:
    agg = spec.aggregates
    assert agg is not None
    queries = to_store_events(table, agg)
    if queries.num_rows == 0:
        return np.zeros((0, len(agg.feature_names)))
    t = queries["event_time"].cast(pa.int64())
    lo, hi = pc.min_max(t).values()
    start = from_micros(lo.as_py() - agg.horizon_s * 1_000_000)
    # end is exclusive; +1 µs keeps same-time events with a smaller key.
    end = from_micros(hi.as_py() + 1)
    history = store.history(pc.unique(queries["entity"].combine_chunks()), start, end)
    return entity_aggregates(history, queries, agg)
