"""Model registry: immutable versions and movable aliases on any pyarrow filesystem.

    registry = ModelRegistry.from_config()            # .state/registry by default
    version = registry.register("fraud", net, meta)   # 1, 2, ... never overwritten
    registry.promote("fraud", version)                # fraud@champion -> version
    registry.rollback("fraud")                        # back to the previous champion
    model = registry.load("fraud@champion")           # cached per (name, version, device)
    scores = model.predict(feature_matrix)

A version holds the weights (a plain state_dict, loaded with
`torch.load(weights_only=True)`), the architecture, the feature spec hash,
training metrics, a fingerprint of the training data, the feature stats used
to standardize inputs and a reference distribution of every feature (for
drift detection). Missing names, versions and aliases raise
`sluice.errors.ModelNotFound` naming them.
"""

from sluice.models._artifact import ModelArtifact, load_artifact, save_artifact
from sluice.models._manifest import AliasEvent, Manifest, ModelRef, VersionRecord, parse_model_ref
from sluice.models._meta import ModelMeta, roc_auc, table_fingerprint
from sluice.models._net import MLP, MLPConfig, exact_logits, predict_scores, select_device
from sluice.models._registry import (
    LoadedModel,
    ModelRegistry,
    ModelSummary,
    VersionInfo,
    check_feature_spec,
)

__all__ = [
    "check_feature_spec",
    "MLP",
    "AliasEvent",
    "LoadedModel",
    "MLPConfig",
    "Manifest",
    "ModelArtifact",
    "ModelMeta",
    "ModelRef",
    "ModelRegistry",
    "ModelSummary",
    "VersionInfo",
    "VersionRecord",
    "exact_logits",
    "load_artifact",
    "parse_model_ref",
    "predict_scores",
    "roc_auc",
    "save_artifact",
    "select_device",
    "table_fingerprint",
]
