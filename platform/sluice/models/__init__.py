"""Model registry: immutable versions and movable aliases on any pyarrow filesystem.

    registry = ModelRegistry.from_config()            # .state/registry by default
    version = registry.register("fraud", net, meta)   # 1, 2, ... never overwritten
    registry.promote("fraud", version)                # fraud@champion -> version
    registry.rollback("fraud")                        # back to the previous champion
    model = registry.load("fraud@champion")           # cached per (name, version, device)
    scores = model.predict(feature_matrix)

A version holds the model file in one of three formats (ONNX, torch.export,
TorchScript: `_formats`), run by its own runtime (`_runtime`), and its metadata:
the format, which output is the score, whether it came from a trusted source,
the feature spec hash, training metrics, a fingerprint of the training data,
the feature stats used to compute its inputs and a reference distribution of
every feature (for drift detection). Registration checks the artifact's
format, safety and signature against the feature names; nothing half-registered
remains. Missing names, versions and aliases raise `sluice.errors.ModelNotFound`.
"""

from sluice.models._artifact import ModelArtifact, check_artifact, load_artifact, save_artifact
from sluice.models._explain import Explainer
from sluice.models._formats import FORMATS, ModelFormat, detect_format
from sluice.models._manifest import AliasEvent, Manifest, ModelRef, VersionRecord, parse_model_ref
from sluice.models._meta import ModelMeta, ModelOutput, roc_auc, table_fingerprint
from sluice.models._promotion import check_feature_spec
from sluice.models._registry import LoadedModel, ModelRegistry, ModelSummary, VersionInfo
from sluice.models._runtime import SCORE_TOLERANCE, select_device, set_thread_budget

_TORCH_NAMES = ("MLP", "MLPConfig", "export_module")


def __getattr__(name: str) -> object:
    """The torch-built names (`_net`), imported on first use: scoring an ONNX model, and
    validating or recording events, never needs torch (~0.9 s to import, ~200 MB)."""
    if name in _TORCH_NAMES:
        from sluice.models import _net

        return getattr(_net, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "FORMATS",
    "MLP",
    "SCORE_TOLERANCE",
    "AliasEvent",
    "Explainer",
    "LoadedModel",
    "MLPConfig",
    "Manifest",
    "ModelArtifact",
    "ModelFormat",
    "ModelMeta",
    "ModelOutput",
    "ModelRef",
    "ModelRegistry",
    "ModelSummary",
    "VersionInfo",
    "VersionRecord",
    "check_artifact",
    "check_feature_spec",
    "detect_format",
    "export_module",
    "load_artifact",
    "parse_model_ref",
    "roc_auc",
    "save_artifact",
    "select_device",
    "set_thread_budget",
    "table_fingerprint",
]
