from __future__ import annotations

import pytest

from sluice.models import ModelRegistry


@pytest.fixture(scope="session")
def stream_registry(tmp_path_factory) -> ModelRegistry:
    """A registry holding one small fraud model trained by the real pipeline."""
    from fixture_models import train_champion

    from pipelines.train import TrainConfig

    registry = ModelRegistry(tmp_path_factory.mktemp("stream") / "registry")
    train_champion(TrainConfig(rows=3000, seed=5, epochs=1), registry)
    return registry
