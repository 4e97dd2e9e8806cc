"""Table definitions and the schema diff (pure: expected vs existing columns)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sluice.config import CassandraConfig
from sluice.contract import load_contract
from sluice.errors import ConfigError, StoreUnavailable
from sluice.store import (
    ALERT_COLUMNS,
    ALERTS_BY_KEY_TABLE,
    ALERTS_TABLE,
    CHECKPOINTS_TABLE,
    TableSpec,
    diff_table,
    existing_table,
    feature_events_table,
    predictions_table,
    quarantine_table,
    schema_change,
    tables_for,
)

EXPECTED = TableSpec(
    name="predictions",
    partition_key=(("transaction_id", "text"),),
    columns=(("score", "double"), ("features", "frozen<map<text, double>>")),
)


def test_identical_table_has_no_difference_whatever_the_spelling() -> None:
    existing = TableSpec(
        name="predictions",
        partition_key=(("transaction_id", "varchar"),),
        columns=(("features", "frozen<map<text,double>>"), ("score", "double"), ("x", "int")),
    )
    assert diff_table("ks", EXPECTED, existing) == []


def test_different_partition_key_names_table_difference_and_fix() -> None:
    existing = TableSpec(name="predictions", partition_key=(("transaction_id", "int"),),
                         columns=(("score", "text"),))  # fmt: skip
    (msg,) = diff_table("ks", EXPECTED, existing)
    assert msg == (
        "table ks.predictions exists with a different partition key (transaction_id int), "
        "expected (transaction_id text); drop it (DROP TABLE ks.predictions) or pick another "
        "table name"
    )


def test_different_clustering_is_reported() -> None:
    expected = TableSpec(name="t", partition_key=(("a", "text"),), clustering=(("b", "bigint"),))
    existing = TableSpec(name="t", partition_key=(("a", "text"),), clustering=(("b", "timestamp"),))
    (msg,) = diff_table("ks", expected, existing)
    assert "different clustering columns (b timestamp), expected (b bigint)" in msg
    assert "DROP TABLE ks.t" in msg


def test_missing_columns_are_listed_with_the_alter_apply_runs() -> None:
    existing = TableSpec(name="predictions", partition_key=(("transaction_id", "text"),))
    (msg,) = diff_table("ks", EXPECTED, existing)
    assert msg.startswith(
        "table ks.predictions lacks column(s) score double, features frozen<map<text, double>>;"
    )
    assert "`sluice schema apply` adds them (ALTER TABLE ks.predictions ADD score double" in msg


def test_column_of_another_type_is_reported_per_column() -> None:
    existing = TableSpec(
        name="predictions", partition_key=(("transaction_id", "text"),),
        columns=(("score", "float"), ("features", "map<text, double>")),
    )  # fmt: skip
    msgs = diff_table("ks", EXPECTED, existing)
    assert msgs == [
        "table ks.predictions has column score of type float, expected double; "
        "drop it (DROP TABLE ks.predictions) or pick another table name",
        "table ks.predictions has column features of type map<text, double>, expected "
        "frozen<map<text, double>>; drop it (DROP TABLE ks.predictions) or pick another "
        "table name",
    ]


def test_create_cql() -> None:
    cql = CHECKPOINTS_TABLE.create_cql("sluice", CassandraConfig().speculative_retry)
    assert cql.startswith("CREATE TABLE IF NOT EXISTS sluice.stream_checkpoints (")
    assert "PRIMARY KEY ((job, topic), partition)" in cql
    assert "offset bigint" in cql
    assert cql.endswith("AND speculative_retry = '99p'")
    assert CHECKPOINTS_TABLE.create_cql("sluice", "50ms").endswith("speculative_retry = '50ms'")


def test_contract_tables() -> None:
    fraud = load_contract("fraud")
    pred = predictions_table(fraud)
    assert pred.name == fraud.output.predictions_table
    assert pred.partition_key == (("transaction_id", "text"),)
    assert pred.all_columns["features"] == "frozen<map<text, double>>"
    assert pred.all_columns["event_time"] == "timestamp"
    feats = feature_events_table(fraud)
    assert feats.key_columns == ["entity", "event_time_us", "key"]
    q = quarantine_table()
    assert q.key_columns == ["source", "day", "key", "row_id"]
    names = [t.name for t in tables_for([fraud, fraud])]
    assert len(names) == len(set(names)) == 8
    by_day, by_key = ALERTS_TABLE, ALERTS_BY_KEY_TABLE
    assert by_day.key_columns == ["contract", "day", "event_time", "key"]
    assert by_key.key_columns == ["contract", "key"]
    # Both alert tables hold every alert column, so one row shape (alert_rows) fits both.
    assert set(by_day.all_columns) == set(by_key.all_columns) == set(ALERT_COLUMNS)


def test_two_contracts_wanting_one_name_for_different_tables_fail() -> None:
    fraud = load_contract("fraud")
    other = fraud.model_copy(update={"key_column": "card_id", "name": "other"})
    with pytest.raises(ConfigError, match="table predictions is also defined differently"):
        tables_for([fraud, other])


def test_existing_table_reads_driver_metadata() -> None:
    col = lambda n, t: SimpleNamespace(name=n, cql_type=t)  # noqa: E731
    meta = SimpleNamespace(
        partition_key=[col("a", "text")], clustering_key=[col("b", "bigint")],
        columns={"a": col("a", "text"), "b": col("b", "bigint"), "c": col("c", "double")},
    )  # fmt: skip
    md = SimpleNamespace(keyspaces={"ks": SimpleNamespace(tables={"t": meta})})
    spec = existing_table(md, "ks", "t")
    assert spec == TableSpec("t", (("a", "text"),), (("b", "bigint"),), (("c", "double"),))
    assert existing_table(md, "ks", "nope") is None
    assert existing_table(md, "other", "t") is None


class SchemaSession:
    """A session whose schema changes reach agreement (or not) as told; logs the calls."""

    def __init__(self, agreed_at_once: bool, agreed_later: bool) -> None:
        self.calls: list[tuple] = []

        def wait_for_schema_agreement(wait_time: float) -> bool:
            self.calls.append(("wait", wait_time))
            return agreed_later

        self.cluster = SimpleNamespace(control_connection=SimpleNamespace(
            wait_for_schema_agreement=wait_for_schema_agreement))  # fmt: skip
        self.agreed_at_once = agreed_at_once

    def execute(self, cql: str, timeout: float):
        self.calls.append(("execute", cql, timeout))
        return SimpleNamespace(response_future=SimpleNamespace(
            is_schema_agreed=self.agreed_at_once))  # fmt: skip


def test_a_schema_change_returns_once_every_node_has_it_or_says_they_disagree():
    agreed = SchemaSession(agreed_at_once=True, agreed_later=False)
    schema_change(agreed, "DROP KEYSPACE IF EXISTS ks")
    assert agreed.calls == [("execute", "DROP KEYSPACE IF EXISTS ks", 120.0)]

    late = SchemaSession(agreed_at_once=False, agreed_later=True)  # the driver gave up at 10 s
    schema_change(late, "CREATE KEYSPACE ks WITH replication = {}")
    assert late.calls[1] == ("wait", 120.0)

    never = SchemaSession(agreed_at_once=False, agreed_later=False)
    with pytest.raises(StoreUnavailable, match=r"disagree on the schema 120 s after: "
                                               r"CREATE KEYSPACE ks$"):
        schema_change(never, "CREATE KEYSPACE ks WITH replication = {}")
