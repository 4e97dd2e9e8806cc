"""Serve unit fixtures: one small model trained by the real pipeline, shared by the session."""

from __future__ import annotations

import sys

import pytest

from sluice.config import REPO_ROOT
from sluice.models import ModelRegistry

# `pipelines` and `serve_apps` live at the repository root, not in the installed package.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def serve_registry(tmp_path_factory) -> ModelRegistry:
    """A registry with fraud/1 (champion) and fraud/2 (challenger), both small."""
    from fixture_models import train_champion

    from pipelines.train import TrainConfig, train

    registry = ModelRegistry(tmp_path_factory.mktemp("serve_models") / "registry")
    train_champion(TrainConfig(rows=3000, epochs=1, seed=5), registry)
    second = train(TrainConfig(rows=3000, epochs=2, seed=6), registry)
    if second.alias != "challenger":  # the second beat the first: make the roles explicit
        registry.promote("fraud", 1)
        registry.promote("fraud", 2, alias="challenger")
    return registry
