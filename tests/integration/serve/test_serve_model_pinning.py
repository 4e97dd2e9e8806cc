"""One model version per Serve deployment generation, whatever is promoted meanwhile.

Replicas are built here as Serve builds them (the deployment's class, its ``__init__``,
then ``reconfigure`` with the user_config), against the real Cassandra: a replica added
after a promotion — as the autoscaler or a restart adds one — scores with the version the
generation's first replica resolved; the next generation resolves the alias anew.
"""

from __future__ import annotations

import dataclasses

import pytest

from serve_apps.scoring.deployments import ModelSettings, ScoringModel
from sluice.contract import load_contract
from sluice.models import ModelRegistry

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(own_keyspace) -> ModelSettings:
    cfg = own_keyspace("sluice_test_serve_pin")  # schema applied, fraud/1 champion
    registry = ModelRegistry.from_config(cfg)
    assert registry.resolve("fraud@champion") == ("fraud", 1)
    artifact = registry.load_artifact("fraud/1")
    assert registry.register("fraud", artifact.data, artifact.meta) == 2
    return ModelSettings(load_contract("fraud"), cfg, cfg.cassandra)


def replica(settings: ModelSettings, generation: int):
    model = ScoringModel.func_or_class(settings)
    model.reconfigure({"model_generation": generation})
    return model


def test_a_replica_added_after_a_promotion_keeps_the_generation_version(settings):
    registry = ModelRegistry.from_config(settings.platform)
    first = replica(settings, 1)
    assert first.core.champion.model.ref == "fraud/1"

    registry.promote("fraud", 2)  # promoted, but the deployment's generation is unchanged
    added = replica(settings, 1)
    assert added.core.champion.model.ref == "fraud/1"

    first.reconfigure({"model_generation": 2})  # `serve deploy` with the next generation
    assert first.core.champion.model.ref == "fraud/2"
    assert replica(settings, 2).core.champion.model.ref == "fraud/2"

    registry.rollback("fraud")  # back to fraud/1; a fresh deploy (a new build of the app)
    rebuilt = dataclasses.replace(settings, build_id="next-build")  # resolves anew
    assert replica(rebuilt, 1).core.champion.model.ref == "fraud/1"
    assert replica(settings, 2).core.champion.model.ref == "fraud/2"  # the old build keeps its


def test_a_replica_reports_the_versions_it_holds_and_retires_the_one_swapped_out(settings):
    """``sluice_model_in_use`` (per process: a Serve replica is one)."""
    from sluice.metrics import MODEL_IN_USE

    def in_use() -> dict[str, float]:
        return {v: x for (path, contract, v), x in MODEL_IN_USE.series().items()
                if path == "online" and contract == "fraud"}  # fmt: skip

    model = replica(settings, 1)
    assert in_use() == {"fraud/1": 1.0}
    ModelRegistry.from_config(settings.platform).promote("fraud", 2)
    model.reconfigure({"model_generation": 2})
    assert in_use() == {"fraud/2": 1.0}
