"""A team's own trainer, the way a team writes one: LightGBM, exported to ONNX.

    python -m pipelines.train --trainer pipelines.train_gbm:fit_lightgbm_candidate

or `trainer: pipelines.train_gbm:fit_lightgbm_candidate` in the contract, so that
`sluice drift --retrain` retrains it too. `pipelines.train` computes the features,
calls this function, scores the ONNX file it returns through onnxruntime on the
holdout and registers it behind the same champion gate as the built-in MLP.

The ONNX graph comes from `onnxmltools.convert_lightgbm` (a TreeEnsembleClassifier
node, run natively by onnxruntime). Its outputs are the label and a (rows, 2)
probability matrix (ZipMap off), so the score is output 1, column 1.
"""

from __future__ import annotations

import numpy as np

from pipelines.trainers import Candidate, TrainConfig, TrainingData
from sluice.errors import ConfigError
from sluice.models import ModelOutput

__all__ = ["GBM_PARAMS", "fit_lightgbm_candidate", "lightgbm_to_onnx"]

GBM_PARAMS = {"n_estimators": 300, "max_depth": 6, "num_leaves": 63, "learning_rate": 0.05}
"""A realistic fraud GBM: 300 trees of depth 6."""


def lightgbm_to_onnx(model: object, n_features: int) -> bytes:
    """A fitted `lightgbm.LGBMClassifier` as ONNX bytes (dynamic batch, float32 input)."""
    try:
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType
    except ImportError as exc:
        raise ConfigError(f"exporting LightGBM to ONNX needs onnxmltools: {exc}") from exc
    onnx_model = convert_lightgbm(
        model,
        initial_types=[("features", FloatTensorType([None, n_features]))],
        zipmap=False,
        target_opset=15,
    )
    return onnx_model.SerializeToString()


def fit_lightgbm_candidate(
    data: TrainingData, config: TrainConfig, params: dict[str, float | int] | None = None
) -> Candidate:
    """Fit a LightGBM classifier on the contract's features; return it as ONNX."""
    try:
        import lightgbm
    except ImportError as exc:
        raise ConfigError(f"trainer lightgbm needs the lightgbm package: {exc}") from exc
    params = {**GBM_PARAMS, **(params or {})}
    model = lightgbm.LGBMClassifier(
        **params, random_state=config.seed, n_jobs=config.threads, verbose=-1,
        deterministic=True, force_row_wise=True,
    )  # fmt: skip
    model.fit(data.x_train, data.y_train.astype(np.int32))
    return Candidate(
        model=lightgbm_to_onnx(model, data.x_train.shape[1]),
        format="onnx",
        output=ModelOutput(index=1, column=1, link="probability"),
        architecture={"family": "lightgbm", **{k: v for k, v in params.items()}},
        metrics={},
    )
