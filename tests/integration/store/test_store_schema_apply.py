"""`sluice schema apply` against real Cassandra: create, re-apply, refuse a different table."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sluice.cli import app
from sluice.contract import load_contract
from sluice.errors import ConfigError
from sluice.store import (
    SCHEMA_VERSION,
    CheckpointStore,
    apply_schema,
    check_schema,
    diff_table,
    existing_table,
    session_for,
    tables_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def applied(store_cfg):
    session = session_for(store_cfg)
    lines = apply_schema(session, store_cfg, [load_contract("fraud")])
    return session, lines


def test_first_apply_creates_keyspace_and_every_table(store_cfg, applied) -> None:
    session, lines = applied
    ks = store_cfg.keyspace
    specs = tables_for([load_contract("fraud")])
    assert lines[0].startswith(f"created keyspace {ks}")
    assert sorted(lines[1:]) == sorted(f"created table {ks}.{t.name}" for t in specs)
    for spec in specs:
        found = existing_table(session.cluster.metadata, ks, spec.name)
        assert found is not None and diff_table(ks, spec, found) == []
    versions = dict(session.execute(f"SELECT table_name, version FROM {ks}.schema_version"))
    assert versions == {t.name: SCHEMA_VERSION for t in specs}


def test_second_apply_through_the_cli_changes_nothing(store_cfg, applied) -> None:
    result = CliRunner().invoke(
        app, ["schema", "apply", "--contract", "fraud"],
        env={"SLUICE_CASSANDRA__KEYSPACE": store_cfg.keyspace},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == f"keyspace {store_cfg.keyspace} exists"
    assert all(line.endswith("is up to date") for line in lines[1:]) and len(lines) == 9


def test_a_table_with_another_key_is_refused_and_left_alone(store_cfg, applied) -> None:
    session, _ = applied
    ks = store_cfg.keyspace
    session.execute(f"CREATE TABLE {ks}.other_predictions (transaction_id bigint PRIMARY KEY, "
                    "score text)")  # fmt: skip
    fraud = load_contract("fraud")
    output = fraud.output.model_copy(update={"predictions_table": "other_predictions"})
    other = fraud.model_copy(update={"output": output})
    with pytest.raises(ConfigError) as info:
        apply_schema(session, store_cfg, [other])
    msg = str(info.value)
    assert (
        f"table {ks}.other_predictions exists with a different partition key "
        "(transaction_id bigint), expected (transaction_id text); drop it "
        f"(DROP TABLE {ks}.other_predictions) or pick another table name"
    ) in msg
    session.cluster.refresh_table_metadata(ks, "other_predictions")
    cols = session.cluster.metadata.keyspaces[ks].tables["other_predictions"].columns
    assert {n: c.cql_type for n, c in cols.items()} == {"transaction_id": "bigint", "score": "text"}


def test_a_schema_2_predictions_table_gains_the_decision_columns(store_cfg, applied) -> None:
    """Schema version 3 adds decision and policy_id: jobs refuse the older table until
    `sluice schema apply` adds them (ALTER TABLE ADD), and its rows are kept."""
    session, _ = applied
    ks = store_cfg.keyspace
    fraud = load_contract("fraud")
    session.execute(f"CREATE TABLE {ks}.v2_predictions (transaction_id text PRIMARY KEY, "
                    "card_id text, event_time timestamp, score double, model_version text, "
                    "features frozen<map<text, double>>, scored_at timestamp)")  # fmt: skip
    session.execute(f"INSERT INTO {ks}.v2_predictions (transaction_id, score) VALUES ('t1', 0.7)")
    old = fraud.model_copy(update={
        "output": fraud.output.model_copy(update={"predictions_table": "v2_predictions"})})
    session.cluster.refresh_table_metadata(ks, "v2_predictions")
    with pytest.raises(ConfigError, match=r"(?s)v2_predictions lacks column\(s\) decision text, "
                       r"policy_id text.*run `sluice schema apply`"):  # fmt: skip
        check_schema(session, store_cfg, [old])
    lines = apply_schema(session, store_cfg, [old])
    assert f"added column(s) decision text, policy_id text to table {ks}.v2_predictions" in lines
    check_schema(session, store_cfg, [old])  # now it serves
    row = session.execute(f"SELECT score, decision FROM {ks}.v2_predictions "
                          "WHERE transaction_id = 't1'").one()  # fmt: skip
    assert (row.score, row.decision) == (0.7, None)
    assert apply_schema(session, store_cfg, [old])[1:] == [
        f"table {ks}.{t.name} is up to date" for t in tables_for([old])]


def test_apply_sets_the_configs_speculative_retry_on_existing_tables(store_cfg, applied) -> None:
    """``cassandra.speculative_retry`` is a table option: apply follows the config on tables
    that exist (an ALTER, rows kept), and a second apply changes nothing."""
    session, _ = applied
    ks = store_cfg.keyspace
    fraud = load_contract("fraud")
    names = [t.name for t in tables_for([fraud])]
    fixed = store_cfg.model_copy(update={"speculative_retry": "50ms"})
    try:
        lines = apply_schema(session, fixed, [fraud])
        assert lines[1:] == [f"set speculative_retry '50ms' on table {ks}.{n}" for n in names]
        rows = session.execute("SELECT table_name, speculative_retry FROM system_schema.tables "
                               "WHERE keyspace_name = %s", (ks,))  # fmt: skip
        assert {r.table_name: r.speculative_retry for r in rows if r.table_name in names} == (
            dict.fromkeys(names, "50ms"))
        assert apply_schema(session, fixed, [fraud])[1:] == [
            f"table {ks}.{n} is up to date" for n in names]
    finally:
        apply_schema(session, store_cfg, [fraud])  # back to the default for the other tests
    assert all(session.cluster.metadata.keyspaces[ks].tables[n].options["speculative_retry"]
               == store_cfg.speculative_retry for n in names)  # fmt: skip


def test_a_newer_schema_version_is_not_overwritten(store_cfg, applied) -> None:
    session, _ = applied
    ks = store_cfg.keyspace
    session.execute(f"UPDATE {ks}.schema_version SET version = 99 WHERE table_name = 'quarantine'")
    try:
        with pytest.raises(ConfigError, match=r"quarantine was applied by a newer Sluice \(schema "
                           rf"version 99 > {SCHEMA_VERSION}\)"):  # fmt: skip
            apply_schema(session, store_cfg, [load_contract("fraud")])
        row = session.execute(
            f"SELECT version FROM {ks}.schema_version WHERE table_name = 'quarantine'"
        ).one()
        assert row.version == 99
    finally:
        session.execute(
            f"UPDATE {ks}.schema_version SET version = {SCHEMA_VERSION} "
            "WHERE table_name = 'quarantine'"
        )


def test_checkpoints_round_trip(store_cfg, applied) -> None:
    store = CheckpointStore(store_cfg)
    assert store.committed("job-a", "tx") == {}
    store.commit("job-a", "tx", {0: 10, 1: 20, 2: 0})
    store.commit("job-a", "tx", {1: 25})
    store.commit("job-b", "tx", {0: 99})
    assert store.committed("job-a", "tx") == {0: 10, 1: 25, 2: 0}
    assert store.committed("job-b", "tx") == {0: 99}
    assert store.committed("job-a", "other") == {}
