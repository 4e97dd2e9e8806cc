"""Features declared in a contract, computed the same way on every path.

Public surface::

    spec = contract.features                         # FeatureSpec
    stats = fit_stats(train_table, spec)             # at training; stats.to_dict() is JSON
    store = InMemoryFeatureStore()                   # or the Cassandra store
    state = KeyedFeatureStore(store, spec.aggregates)  # a stream consumer's keyed state
    store.record(to_store_events(table, spec))       # record first ...
    matrix = compute_features(table, spec, stats, store)   # ... then compute
    matrix.values, matrix.names                      # float32 [rows, features], fixed order
    reference_statistics(matrix).to_dict()           # drift reference (JSON)
    spec.spec_hash()                                 # stable digest for the model registry

Feature order: pass-through columns, transforms in declared order, then per
window the count/sum/mean aggregates, then seconds since the previous event.
Aggregates are point-in-time: an event at time t with key k sees the entity's
events in [t - window, t) plus same-time events whose key sorts before k.
``entity_aggregates(history, queries, spec)`` is that math as one pure function,
so a store only has to supply history.
"""

from sluice.features._aggregates import entity_aggregates
from sluice.features._compute import FeatureMatrix, compute_features
from sluice.features._keyed import KeyedFeatureStore
from sluice.features._reference import FeatureReference, ReferenceStatistics, reference_statistics
from sluice.features._spec import (
    AggregateSpec,
    CategoryIndex,
    DayOfWeek,
    EqualityFlag,
    FeatureSpec,
    HourOfDay,
    Log1p,
    Standardize,
    Transform,
    window_label,
)
from sluice.features._store import (
    STORE_SCHEMA,
    FeatureStore,
    InMemoryFeatureStore,
    distinct_entities,
    from_micros,
    to_micros,
    to_store_events,
)
from sluice.features._transforms import FeatureStats, StandardizeStats, fit_stats

__all__ = [
    "STORE_SCHEMA",
    "AggregateSpec",
    "CategoryIndex",
    "DayOfWeek",
    "EqualityFlag",
    "FeatureMatrix",
    "FeatureReference",
    "FeatureSpec",
    "FeatureStats",
    "FeatureStore",
    "HourOfDay",
    "InMemoryFeatureStore",
    "KeyedFeatureStore",
    "Log1p",
    "ReferenceStatistics",
    "Standardize",
    "StandardizeStats",
    "Transform",
    "compute_features",
    "distinct_entities",
    "entity_aggregates",
    "fit_stats",
    "from_micros",
    "reference_statistics",
    "to_micros",
    "to_store_events",
    "window_label",
]
