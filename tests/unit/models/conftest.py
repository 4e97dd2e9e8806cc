from __future__ import annotations

import sys

import pytest
from model_factories import SMALL_TRAIN

from sluice.config import REPO_ROOT
from sluice.models import ModelRegistry

# `pipelines` lives at the repository root, which pytest does not put on sys.path
# (pyproject maps only platform/); `python -m pipelines.train` gets it from the cwd.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One small model trained by the real pipeline: (registry, TrainResult)."""
    from pipelines.train import TrainConfig, train

    registry = ModelRegistry(tmp_path_factory.mktemp("trained") / "registry")
    return registry, train(TrainConfig(**SMALL_TRAIN), registry)
