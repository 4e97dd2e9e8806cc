"""Small models and metadata for the model tests (no data generation needed)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from sluice.features import FeatureMatrix, FeatureStats, reference_statistics
from sluice.models import MLP, MLPConfig, ModelMeta, ModelOutput, export_module

FEATURES = ("amount_z", "foreign", "count_1h")
SMALL_TRAIN = {"rows": 6000, "seed": 3, "epochs": 4}  # the shared `trained` fixture


def make_meta(
    auc: float = 0.8,
    contract: str = "fraud",
    spec_hash: str = "0123456789abcdef",
    fmt: str = "onnx",
    trusted: bool = False,
) -> ModelMeta:
    matrix = np.random.default_rng(0).normal(size=(200, len(FEATURES))).astype(np.float32)
    return ModelMeta(
        contract=contract,
        format=fmt,
        output=ModelOutput(link="logit"),
        trusted=trusted,
        architecture={"family": "mlp", "hidden_dims": [8]},
        feature_names=FEATURES,
        feature_spec_hash=spec_hash,
        feature_stats=FeatureStats(spec_hash=spec_hash),
        reference=reference_statistics(FeatureMatrix(matrix, FEATURES)),
        metrics={"holdout_auc": auc},
        data_fingerprint="sha256:data",
        train_params={"seed": 1},
    )


def make_net(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(MLPConfig(input_dim=len(FEATURES), hidden_dims=(8,)))


@lru_cache(maxsize=32)
def make_model(seed: int = 0, fmt: str = "onnx") -> bytes:
    """`make_net(seed)` exported as `fmt` (one logit per row)."""
    return export_module(make_net(seed), len(FEATURES), fmt)
