"""The tables Sluice owns, and ``apply_schema`` (``sluice schema apply``).

Tables (keyspace from the platform config; ``{contract}`` is the contract's name)::

    <output.predictions_table>   one row per scored key (partition key = the contract's key)
    <output.quarantine_table>    rejected rows, PRIMARY KEY ((source, day), key, row_id)
    {contract}_feature_events    entity event history, PRIMARY KEY ((entity), event_time_us, key)
    stream_checkpoints           committed offsets, PRIMARY KEY ((job, topic), partition)
    prediction_log               online predictions, PRIMARY KEY (log_id)
    alerts                       review or block, PRIMARY KEY ((contract, day), event_time, key)
    alerts_by_key                the same rows, PRIMARY KEY ((contract, key))
    schema_version               one row per table Sluice applied

Choices, and why:
- Prediction features are one ``frozen<map<text, double>>`` column, not typed columns:
  the feature set changes with the model, the table does not have to (no ALTER), and a
  frozen map is one cell an upsert replaces (a non-frozen one writes a tombstone first).
- Quarantine partitions by (source, day): a per-source scan walks the days, and no
  partition grows without bound. The caller derives ``day`` from a stable time (a batch
  row's event time, else its file's modification day; a stream message's time) so a
  re-run or a replay lands on the same row.
- Quarantine rows cluster by (key, row_id): ``row_id`` tells refused input rows apart
  (a batch job's ``<file>#<row>``, else a digest of the raw row, see ``quarantine_rows``),
  so rows that share a key but not their contents never collapse onto one row, while a
  re-run or a replay rewrites the same rows. (Schema version 2; version 1 keyed by
  (source, day, key) alone: ``apply_schema`` refuses that table, see the README.)
- Feature events keep event time as ``bigint`` microseconds: CQL ``timestamp`` holds
  milliseconds, and the aggregates' (time, key) order needs the microseconds.
- The prediction log is keyed by ``log_id``, which the server makes (one per scored row):
  a client's ``X-Request-ID`` is only a column beside the scored row's key and the API
  key's name, so no client can overwrite earlier rows by reusing an id. (Schema version 2;
  version 1 keyed it by the request id.)
- Alerts (a ``review`` or ``block`` decision, ``sluice.decisions.ALERTING``) are written
  twice, as Cassandra recommends for two access paths: ``alerts`` partitions by (contract,
  day of the event) and clusters by event time, so an analyst pages a day's newest alerts
  (``ORDER BY event_time DESC``) without a partition growing beyond a day;
  ``alerts_by_key`` answers "the alert of this transaction". Both are keyed by the
  transaction (and its event time), so a re-run, a replay or a retry rewrites the same
  row: one alert per transaction in Cassandra, whatever the path.
- Every timestamp column is supplied by the client; nothing uses ``now()``.

``apply_schema`` is idempotent: it creates what is missing and checks what exists
against the expected definition (read from the driver's ``cluster.metadata``). A column
a newer Sluice added to a table (schema version 3: ``decision`` and ``policy_id`` on the
predictions and the prediction log) is added with ``ALTER TABLE ... ADD``: additive, so
nothing is lost and older rows read null. A table whose key or column types differ fails
with the table, the difference and the fix; it is never dropped or retyped. Extra columns
on an existing table are allowed. Jobs and replicas only check (``check_schema``).
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sluice.config import CassandraConfig
from sluice.contract import FEATURE_EVENTS_SUFFIX, Contract
from sluice.errors import ConfigError, StoreUnavailable
from sluice.store._types import arrow_to_cql, normalize_cql_type

__all__ = [
    "ALERTS_BY_KEY_TABLE",
    "ALERTS_TABLE",
    "CHECKPOINTS_TABLE",
    "PREDICTION_LOG_TABLE",
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_TABLE",
    "TableSpec",
    "apply_schema",
    "check_schema",
    "diff_table",
    "existing_table",
    "feature_events_table",
    "predictions_table",
    "quarantine_table",
    "schema_change",
    "tables_for",
]

log = logging.getLogger(__name__)

SCHEMA_CHANGE_S = 120.0  # how long a schema change may take, and then to reach every live node
SCHEMA_VERSION = 3
"""Bumped when a table definition changes; recorded in ``schema_version``."""

Columns = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TableSpec:
    """A table definition: partition key, clustering columns and the other columns."""

    name: str
    partition_key: Columns
    clustering: Columns = ()
    columns: Columns = ()
    comment: str = field(default="", compare=False)

    @property
    def all_columns(self) -> dict[str, str]:
        return dict((*self.partition_key, *self.clustering, *self.columns))

    @property
    def key_columns(self) -> list[str]:
        return [n for n, _ in (*self.partition_key, *self.clustering)]

    def create_cql(self, keyspace: str, speculative_retry: str) -> str:
        cols = ",\n".join(f"  {n} {t}" for n, t in self.all_columns.items())
        pk = ", ".join(n for n, _ in self.partition_key)
        key = f"({pk})" + "".join(f", {n}" for n, _ in self.clustering)
        comment = self.comment.replace("'", "''")
        return (
            f"CREATE TABLE IF NOT EXISTS {keyspace}.{self.name} (\n{cols},\n"
            f"  PRIMARY KEY ({key})\n) WITH comment = '{comment}'"
            f" AND speculative_retry = '{speculative_retry}'"
        )


def predictions_table(contract: Contract) -> TableSpec:
    schema = contract.arrow_schema

    def col(name: str) -> tuple[str, str]:
        return name, arrow_to_cql(schema.field(name).type)

    return TableSpec(
        name=contract.output.predictions_table,
        partition_key=(col(contract.key_column),),
        columns=(
            col(contract.entity_column),
            (contract.event_time_column, "timestamp"),
            ("score", "double"),
            ("model_version", "text"),
            ("decision", "text"),
            ("policy_id", "text"),
            ("features", "frozen<map<text, double>>"),
            ("scored_at", "timestamp"),
        ),
        comment=f"Sluice predictions of contract {contract.name}",
    )


def quarantine_table(name: str = "quarantine") -> TableSpec:
    return TableSpec(
        name=name,
        partition_key=(("source", "text"), ("day", "date")),
        clustering=(("key", "text"), ("row_id", "text")),
        columns=(
            ("contract", "text"),
            ("raw", "text"),  # the rejected row (or raw message) as JSON
            ("reasons", "text"),  # JSON list of {expectation, column, value}
            ("quarantined_at", "timestamp"),
        ),
        comment="Sluice quarantine: rejected rows with their reasons",
    )


def feature_events_table(contract: Contract) -> TableSpec:
    return TableSpec(
        name=f"{contract.name}{FEATURE_EVENTS_SUFFIX}",
        partition_key=(("entity", "text"),),
        clustering=(("event_time_us", "bigint"), ("key", "text")),
        columns=(("amount", "double"),),
        comment=f"Sluice online feature events of contract {contract.name}",
    )


CHECKPOINTS_TABLE = TableSpec(
    name="stream_checkpoints",
    partition_key=(("job", "text"), ("topic", "text")),
    clustering=(("partition", "int"),),
    columns=(("offset", "bigint"), ("committed_at", "timestamp")),
    comment="Sluice stream checkpoints: the next offset to read per partition",
)

PREDICTION_LOG_TABLE = TableSpec(
    name="prediction_log",
    partition_key=(("log_id", "text"),),
    columns=(
        ("request_id", "text"),
        ("row_key", "text"),
        ("api_key", "text"),
        ("contract", "text"),
        ("model_version", "text"),
        ("features", "frozen<map<text, double>>"),
        ("score", "double"),
        ("decision", "text"),
        ("policy_id", "text"),
        ("role", "text"),  # champion, challenger (canary) or shadow
        ("latency_ms", "double"),
        ("logged_at", "timestamp"),
    ),
    comment="Sluice online prediction log",
)

_ALERT_COLUMNS = (
    ("entity", "text"),
    ("score", "double"),
    ("decision", "text"),
    ("policy_id", "text"),
    ("model_version", "text"),
    ("source", "text"),  # the path and job that wrote it last (batch:<job>, stream:<job>...)
    ("reasons", "text"),  # JSON list of the top feature attributions (sluice.models.Explainer)
    ("alerted_at", "timestamp"),
)
ALERTS_TABLE = TableSpec(
    name="alerts",
    partition_key=(("contract", "text"), ("day", "date")),
    clustering=(("event_time", "timestamp"), ("key", "text")),
    columns=_ALERT_COLUMNS,
    comment="Sluice alerts (review, block) by day of the event",
)
ALERTS_BY_KEY_TABLE = TableSpec(
    name="alerts_by_key",
    partition_key=(("contract", "text"), ("key", "text")),
    columns=(("day", "date"), ("event_time", "timestamp"), *_ALERT_COLUMNS),
    comment="Sluice alerts (review, block) by transaction key",
)

SCHEMA_VERSION_TABLE = TableSpec(
    name="schema_version",
    partition_key=(("table_name", "text"),),
    columns=(("version", "int"), ("applied_at", "timestamp")),
    comment="Sluice schema version per table",
)


def tables_for(contracts: Iterable[Contract]) -> list[TableSpec]:
    """Every table Sluice needs for these contracts (shared tables once)."""
    shared = (CHECKPOINTS_TABLE, PREDICTION_LOG_TABLE, ALERTS_TABLE, ALERTS_BY_KEY_TABLE,
              SCHEMA_VERSION_TABLE)  # fmt: skip
    specs: dict[str, TableSpec] = {t.name: t for t in shared}
    for c in contracts:
        for spec in (
            predictions_table(c),
            quarantine_table(c.output.quarantine_table),
            feature_events_table(c),
        ):
            other = specs.get(spec.name)
            if other is not None and other != spec:
                raise ConfigError(
                    f"contract {c.name}: table {spec.name} is also defined differently by "
                    "another contract or by Sluice; give it another name in the contract"
                )
            specs[spec.name] = spec
    return list(specs.values())


def _fmt(cols: Columns) -> str:
    return "(" + ", ".join(f"{n} {t}" for n, t in cols) + ")" if cols else "(none)"


def _same(a: Columns, b: Columns) -> bool:
    norm = [(n, normalize_cql_type(t)) for n, t in a]
    return norm == [(n, normalize_cql_type(t)) for n, t in b]


def diff_table(keyspace: str, expected: TableSpec, existing: TableSpec) -> list[str]:
    """What differs between the expected table and the one in Cassandra, with the fix.

    Pure: an empty list means the existing table serves. Extra columns are fine.
    """
    where = f"table {keyspace}.{expected.name}"
    fix = f"drop it (DROP TABLE {keyspace}.{expected.name}) or pick another table name"
    problems = []
    if not _same(expected.partition_key, existing.partition_key):
        problems.append(
            f"{where} exists with a different partition key {_fmt(existing.partition_key)}, "
            f"expected {_fmt(expected.partition_key)}; {fix}"
        )
    if not _same(expected.clustering, existing.clustering):
        problems.append(
            f"{where} exists with different clustering columns {_fmt(existing.clustering)}, "
            f"expected {_fmt(expected.clustering)}; {fix}"
        )
    if problems:
        return problems  # a different key means a different table: columns are moot
    have = {n: normalize_cql_type(t) for n, t in existing.all_columns.items()}
    missing = [(n, t) for n, t in expected.columns if n not in have]
    if missing:
        adds = "; ".join(f"ALTER TABLE {keyspace}.{expected.name} ADD {n} {t}" for n, t in missing)
        problems.append(
            f"{where} lacks column(s) {', '.join(f'{n} {t}' for n, t in missing)}; "
            f"`sluice schema apply` adds them ({adds})"
        )
    for name, typ in expected.columns:
        if name in have and have[name] != normalize_cql_type(typ):
            problems.append(
                f"{where} has column {name} of type {existing.all_columns[name]}, expected "
                f"{typ}; {fix}"
            )
    return problems


def existing_table(metadata: Any, keyspace: str, name: str) -> TableSpec | None:
    """The table as Cassandra has it (from ``cluster.metadata``), or None."""
    ks = metadata.keyspaces.get(keyspace)
    meta = ks.tables.get(name) if ks is not None else None
    if meta is None:
        return None
    pk = tuple((c.name, c.cql_type) for c in meta.partition_key)
    ck = tuple((c.name, c.cql_type) for c in meta.clustering_key)
    keys = {n for n, _ in (*pk, *ck)}
    rest = tuple((c.name, c.cql_type) for c in meta.columns.values() if c.name not in keys)
    return TableSpec(name=name, partition_key=pk, clustering=ck, columns=rest)


def _replication(cfg: CassandraConfig) -> dict[str, Any]:
    r = cfg.replication
    if r.strategy == "SimpleStrategy":
        return {"class": "SimpleStrategy", "replication_factor": r.replication_factor}
    return {"class": "NetworkTopologyStrategy", **r.datacenters}


def _replication_cql(cfg: CassandraConfig) -> str:
    items = ", ".join(f"'{k}': {v!r}" for k, v in _replication(cfg).items())
    return "{" + items.replace('"', "'") + "}"


def _replication_differs(cfg: CassandraConfig, have: dict[str, str]) -> str | None:
    want = {k: str(v) for k, v in _replication(cfg).items()}
    have = {k: str(v).rsplit(".", 1)[-1] if k == "class" else str(v) for k, v in have.items()}
    return None if have == want else f"has replication {have}, the config says {want}"


def schema_change(session: Any, cql: str) -> None:
    """Run one DDL statement; return once every live node has the new schema, or raise
    ``StoreUnavailable``. The driver waits for agreement only ``max_schema_agreement_wait``
    (10 s), then logs and returns: a node restarted moments before on a busy machine can
    take longer, and a statement it coordinates meanwhile fails (a cluster test read
    "keyspace ... does not exist" right after creating it)."""
    result = session.execute(cql, timeout=SCHEMA_CHANGE_S)
    if result.response_future.is_schema_agreed:
        return
    control = session.cluster.control_connection
    if not control.wait_for_schema_agreement(wait_time=SCHEMA_CHANGE_S):
        raise StoreUnavailable(f"the Cassandra nodes still disagree on the schema "
                               f"{SCHEMA_CHANGE_S:g} s after: {cql.split(' WITH ')[0]}")


def apply_schema(
    session: Any, cfg: CassandraConfig, contracts: Sequence[Contract] = ()
) -> list[str]:
    """Create the keyspace and every missing table; check the existing ones.

    Returns one line per action or finding. Raises ``ConfigError`` listing every table
    that exists with a different definition (after creating the others).
    """
    ks = cfg.keyspace
    cluster = session.cluster
    lines: list[str] = []
    if ks not in cluster.metadata.keyspaces:
        schema_change(session, f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = "
                               f"{_replication_cql(cfg)}")  # fmt: skip
        lines.append(f"created keyspace {ks} with replication {_replication(cfg)}")
    else:
        have = _keyspace_replication(cluster.metadata.keyspaces[ks])
        differs = _replication_differs(cfg, have)
        lines.append(
            f"keyspace {ks} exists" + (f" but {differs}; change it with ALTER KEYSPACE "
                                       "yourself if that is intended" if differs else "")
        )  # fmt: skip
    problems: list[str] = []
    applied: list[str] = []
    for spec in tables_for(contracts):
        found = existing_table(cluster.metadata, ks, spec.name)
        if found is None:
            schema_change(session, spec.create_cql(ks, cfg.speculative_retry))
            cluster.refresh_table_metadata(ks, spec.name)
            found = existing_table(cluster.metadata, ks, spec.name)
            lines.append(f"created table {ks}.{spec.name}")
        if found is None:  # pragma: no cover - the driver always knows a table it created
            problems.append(f"table {ks}.{spec.name} was created but is not in the metadata")
            continue
        if _set_speculative_retry(session, ks, spec.name, cfg.speculative_retry):
            lines.append(f"set speculative_retry '{cfg.speculative_retry}' on table "
                         f"{ks}.{spec.name}")  # fmt: skip
        added = _add_missing_columns(session, ks, spec, found)
        if added:
            found = existing_table(cluster.metadata, ks, spec.name) or found
            lines.append(f"added column(s) {', '.join(added)} to table {ks}.{spec.name}")
        diff = diff_table(ks, spec, found)
        if diff:
            problems.extend(diff)
        else:
            applied.append(spec.name)
            if not any(line.endswith(f"{ks}.{spec.name}") for line in lines):
                lines.append(f"table {ks}.{spec.name} is up to date")
    if SCHEMA_VERSION_TABLE.name in applied:
        newer = _newer_versions(session, ks)
        problems.extend(
            f"table {ks}.{name} was applied by a newer Sluice (schema version {v} > "
            f"{SCHEMA_VERSION}); upgrade Sluice instead of applying this older schema"
            for name, v in newer.items()
        )
        _record_versions(session, ks, [t for t in applied if t not in newer])
    if problems:
        raise ConfigError("sluice schema apply: tables differ:\n  " + "\n  ".join(problems))
    return lines


def _set_speculative_retry(session: Any, ks: str, table: str, value: str) -> bool:
    """``ALTER TABLE ... WITH speculative_retry`` when the table has another value (an
    option, not the table's shape: apply follows the config)."""
    meta = session.cluster.metadata.keyspaces[ks].tables[table]
    if meta.options.get("speculative_retry") == value:
        return False
    schema_change(session, f"ALTER TABLE {ks}.{table} WITH speculative_retry = '{value}'")
    session.cluster.refresh_table_metadata(ks, table)
    return True


def _add_missing_columns(session: Any, ks: str, spec: TableSpec, found: TableSpec) -> list[str]:
    """``ALTER TABLE ... ADD`` each regular column ``spec`` has and ``found`` lacks, when
    their keys agree (a different key is a different table: ``diff_table`` reports it)."""
    if not (_same(spec.partition_key, found.partition_key)
            and _same(spec.clustering, found.clustering)):  # fmt: skip
        return []
    missing = [(n, t) for n, t in spec.columns if n not in found.all_columns]
    for name, typ in missing:
        schema_change(session, f"ALTER TABLE {ks}.{spec.name} ADD {name} {typ}")
    if missing:
        session.cluster.refresh_table_metadata(ks, spec.name)
    return [f"{n} {t}" for n, t in missing]


def check_schema(session: Any, cfg: CassandraConfig, contracts: Sequence[Contract] = ()) -> None:
    """What a job or replica does at start: check that every table exists as Sluice defines it.

    Creates and alters nothing — that is ``sluice schema apply``'s job, run once by whoever
    owns the keyspace — and raises ``ConfigError`` listing every missing or different table
    with the command to run.
    """
    ks = cfg.keyspace
    metadata = session.cluster.metadata
    if ks not in metadata.keyspaces:
        raise ConfigError(
            f"keyspace {ks} does not exist; create it and Sluice's tables with "
            "`sluice schema apply` (jobs and replicas never create the schema)"
        )
    problems: list[str] = []
    for spec in tables_for(contracts):
        found = existing_table(metadata, ks, spec.name)
        if found is None:
            problems.append(f"table {ks}.{spec.name} does not exist")
        else:
            problems.extend(diff_table(ks, spec, found))
    if problems:
        raise ConfigError(
            "the schema is not applied:\n  " + "\n  ".join(problems)
            + "\nrun `sluice schema apply` (jobs and replicas never create or alter tables)"
        )


def _keyspace_replication(meta: Any) -> dict[str, str]:
    """The keyspace's replication map as CQL shows it (class plus factors)."""
    cql = meta.replication_strategy.export_for_schema()  # "{'class': 'SimpleStrategy', ...}"
    return {str(k): str(v) for k, v in ast.literal_eval(cql).items()}


def _newer_versions(session: Any, ks: str) -> dict[str, int]:
    rows = session.execute(f"SELECT table_name, version FROM {ks}.{SCHEMA_VERSION_TABLE.name}")
    return {r.table_name: r.version for r in rows if (r.version or 0) > SCHEMA_VERSION}


def _record_versions(session: Any, ks: str, tables: list[str]) -> None:
    stmt = session.prepare(
        f"INSERT INTO {ks}.{SCHEMA_VERSION_TABLE.name} (table_name, version, applied_at) "
        "VALUES (?, ?, ?)"
    )
    stmt.is_idempotent = True
    now = datetime.now(UTC)
    for name in tables:
        session.execute(stmt, (name, SCHEMA_VERSION, now))
