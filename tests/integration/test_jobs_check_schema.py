"""Jobs and replicas check the schema and never create or alter it: `sluice schema apply`
does. A batch or stream job, or a Serve model replica, against a keyspace that was never
applied, or that lacks a table, fails before it writes anything, naming what is missing
and the command to run, and the keyspace is left exactly as it was.
"""

from __future__ import annotations

import pytest

from pipelines.batch_score import run as batch_run
from pipelines.stream_score import run as stream_run
from sluice.datagen import generate_dataset, write_parquet
from sluice.errors import ConfigError
from sluice.jobs import ActorPool, BatchJob, InputSpec, StreamJob
from sluice.store import session_for
from sluice.stream import ensure_topic

pytestmark = pytest.mark.integration

KEYSPACE = "sluice_test_no_schema"


@pytest.fixture
def unapplied(own_keyspace, tmp_path):
    cfg = own_keyspace(KEYSPACE, apply=False, train_rows=1_000)
    session = session_for(cfg.cassandra)
    (tmp_path / "in").mkdir()
    write_parquet(generate_dataset(50, seed=3).table, tmp_path / "in" / "a.parquet")
    job = BatchJob(name="no_schema", contract="fraud",
                   input=InputSpec(paths=(str(tmp_path / "in" / "*.parquet"),)),
                   actors=ActorPool(min_actors=1, max_actors=1),
                   summary_path=str(tmp_path / "summary.json"))  # fmt: skip
    return cfg, session, job


def _tables(session) -> set[str] | None:
    session.cluster.refresh_schema_metadata()
    ks = session.cluster.metadata.keyspaces.get(KEYSPACE)
    return None if ks is None else set(ks.tables)


def test_a_batch_job_without_the_keyspace_fails_naming_the_command(unapplied):
    cfg, session, job = unapplied
    with pytest.raises(ConfigError, match=rf"keyspace {KEYSPACE} does not exist.*sluice schema"):
        batch_run(job, cfg)
    assert _tables(session) is None  # nothing created


def test_a_job_with_a_table_missing_fails_listing_it_and_creates_nothing(unapplied):
    cfg, session, job = unapplied
    replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    session.execute(f"CREATE KEYSPACE {KEYSPACE} WITH replication = {replication}", timeout=120)
    with pytest.raises(ConfigError, match=rf"table {KEYSPACE}\.predictions does not exist"):
        batch_run(job, cfg)
    assert _tables(session) == set()

    topic = "sluice-test-no-schema"
    ensure_topic(cfg.kafka, topic, 1)
    stream_job = StreamJob(name="no_schema", contract="fraud", topic=topic)
    with pytest.raises(ConfigError, match=r"sluice schema apply"):
        stream_run(stream_job, cfg, max_seconds=5)
    assert _tables(session) == set()


def test_a_model_replica_without_its_tables_does_not_start(unapplied):
    from serve_apps.scoring.deployments import ModelSettings, ScoringModel
    from sluice.contract import load_contract

    cfg, session, _ = unapplied
    with pytest.raises(ConfigError, match=rf"keyspace {KEYSPACE} does not exist.*sluice schema"):
        ScoringModel.func_or_class(ModelSettings(load_contract("fraud"), cfg, cfg.cassandra))
    assert _tables(session) is None
