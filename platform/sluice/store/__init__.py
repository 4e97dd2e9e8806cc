"""Cassandra, the shared store: sessions, schema, writes, the Ray Data sink, features, checkpoints.

Public surface::

    session = session_for(cfg.cassandra)                 # one per process, opened lazily
    apply_schema(session, cfg.cassandra, [contract])     # `sluice schema apply`
    check_schema(session, cfg.cassandra, [contract])     # jobs and replicas: check, never create
    CassandraWriter(session, ks, table, columns, WriteOptions(...)).write(arrow_table)
    ds.write_datasink(CassandraDatasink(cfg.cassandra, table, consistency=..., ttl_s=...))
    store = CassandraFeatureStore.for_contract(cfg.cassandra, contract)   # FeatureStore
    CheckpointStore(cfg.cassandra).commit(job, topic, {partition: offset})
    AlertWriter(cfg.cassandra, contract).write(alert_rows(contract, scored, source, now))

Errors: ``StoreUnavailable`` (cannot reach the cluster, a read failed), ``WriteFailed``
(rows not written after retries, with their keys), ``CredentialsRefused`` (a
``ConfigError``: fix the username/password), ``ConfigError`` (a table is missing or
differs: run ``sluice schema apply``).
"""

from typing import Any

from sluice.store._alerts import AlertReader, AlertWriter
from sluice.store._checkpoints import CheckpointStore
from sluice.store._features import CassandraFeatureStore, feature_ttl_s
from sluice.store._retry import is_transient
from sluice.store._rows import (
    ALERT_COLUMNS,
    QUARANTINE_COLUMNS,
    alert_rows,
    prediction_columns,
    prediction_rows,
    quarantine_rows,
)
from sluice.store._schema import (
    ALERTS_BY_KEY_TABLE,
    ALERTS_TABLE,
    CHECKPOINTS_TABLE,
    PREDICTION_LOG_TABLE,
    SCHEMA_VERSION,
    SCHEMA_VERSION_TABLE,
    TableSpec,
    apply_schema,
    check_schema,
    diff_table,
    existing_table,
    feature_events_table,
    predictions_table,
    quarantine_table,
    schema_change,
    tables_for,
)
from sluice.store._session import (
    CredentialsRefused,
    build_cluster,
    close_sessions,
    connect,
    session_for,
)
from sluice.store._types import arrow_to_cql, check_compatible, to_python
from sluice.store._writer import CassandraWriter, WriteOptions

__all__ = [
    "ALERTS_BY_KEY_TABLE",
    "ALERTS_TABLE",
    "ALERT_COLUMNS",
    "AlertReader",
    "AlertWriter",
    "CHECKPOINTS_TABLE",
    "PREDICTION_LOG_TABLE",
    "QUARANTINE_COLUMNS",
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_TABLE",
    "CassandraDatasink",
    "CassandraFeatureStore",
    "CassandraWriter",
    "CheckpointStore",
    "CredentialsRefused",
    "TableSpec",
    "WriteCounts",
    "WriteOptions",
    "apply_schema",
    "check_schema",
    "alert_rows",
    "arrow_to_cql",
    "build_cluster",
    "check_compatible",
    "close_sessions",
    "connect",
    "diff_table",
    "existing_table",
    "feature_events_table",
    "feature_ttl_s",
    "is_transient",
    "prediction_columns",
    "prediction_rows",
    "predictions_table",
    "quarantine_rows",
    "quarantine_table",
    "schema_change",
    "session_for",
    "tables_for",
    "to_python",
]


def __getattr__(name: str) -> Any:
    # The sink imports ray.data (seconds); load it only for callers that use it.
    if name in ("CassandraDatasink", "WriteCounts"):
        from sluice.store import _datasink

        return getattr(_datasink, name)
    raise AttributeError(f"module 'sluice.store' has no attribute {name!r}")
