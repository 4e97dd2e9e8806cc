"""A model alias is resolved once per job: a promotion mid-job changes no row's version.

The promotion lands after the driver resolved `fraud@champion` and before any scoring
actor starts (inside the job's key check, a driver-side step), so an actor that resolved
the alias itself would score with the new champion.
"""

from __future__ import annotations

import pytest

from pipelines import batch_score
from sluice.datagen import generate_dataset, write_parquet
from sluice.jobs import ActorPool, BatchJob, InputSpec
from sluice.models import ModelRegistry
from sluice.store import session_for

pytestmark = pytest.mark.integration

KEYSPACE = "sluice_test_pin"


@pytest.fixture
def pinned_env(own_keyspace, ray_session):
    cfg = own_keyspace(KEYSPACE)  # fraud/1 is champion
    registry = ModelRegistry.from_config(cfg)
    assert registry.resolve("fraud@champion") == ("fraud", 1)
    artifact = registry.load_artifact("fraud/1")
    second = registry.register("fraud", artifact.data, artifact.meta)  # same spec
    return cfg, registry, second, session_for(cfg.cassandra)


def test_batch_job_scores_every_row_with_the_version_resolved_at_its_start(
    pinned_env, tmp_path, monkeypatch
):
    cfg, registry, second, session = pinned_env
    data = generate_dataset(1_500, seed=5)
    (tmp_path / "in").mkdir()
    write_parquet(data.table, tmp_path / "in" / "part-0.parquet")
    job = BatchJob(name="pin", contract="fraud",
                   input=InputSpec(paths=(str(tmp_path / "in" / "*.parquet"),)),
                   batch_rows=512, actors=ActorPool(min_actors=1, max_actors=1),
                   summary_path=str(tmp_path / "pin.json"))  # fmt: skip

    key_check = batch_score.conflicting_keys

    def promote_then_check(*args, **kwargs):
        registry.promote("fraud", second)  # mid-job: the alias moves before any actor starts
        return key_check(*args, **kwargs)

    monkeypatch.setattr(batch_score, "conflicting_keys", promote_then_check)
    summary = batch_score.run(job, cfg)

    assert registry.resolve("fraud@champion") == ("fraud", second)  # the promotion happened
    assert summary.model_version == "fraud/1"
    rows = session.execute(f"SELECT model_version FROM {KEYSPACE}.predictions", timeout=60)
    versions = [r.model_version for r in rows]
    assert len(versions) == summary.rows_scored > 0
    assert set(versions) == {"fraud/1"}
