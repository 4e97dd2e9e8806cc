"""Stream integration fixtures: one trained model and the session's Ray for every test."""

from __future__ import annotations

import pytest
from stream_helpers import StreamEnv

from sluice.models import ModelRegistry


@pytest.fixture(scope="package")
def stream_env(local_services, platform_config, ray_session, tmp_path_factory) -> StreamEnv:
    from pipelines.train import TrainConfig, train

    root = tmp_path_factory.mktemp("stream")
    registry = ModelRegistry(root / "registry")
    train(TrainConfig(rows=10_000, epochs=2), registry)
    return StreamEnv(platform_config, registry, root / "registry",
                     ray_session.address_info["gcs_address"], root)  # fmt: skip
