"""Trainers: what `pipelines.train` calls to fit a model, and the types they share.

A trainer is a function `(data: TrainingData, config: TrainConfig) -> Candidate`. It
fits on `data.x_train` / `data.y_train` (the contract's features, computed by the same
code as scoring) and returns the model file in a registrable format, which output is the
score, and whether the artifact needs trust to load. The contract names its trainer
(`trainer: module:function`); `pipelines.train` scores the candidate on the holdout
through its runtime, registers it and applies the champion gate.

`fit_mlp_candidate` is the built-in one (the MLP of `sluice.models`, exported as ONNX by
default); `pipelines.train_gbm.fit_lightgbm_candidate` is a team-style one (LightGBM).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from sluice.contract import Contract
from sluice.errors import ConfigError
from sluice.features import FeatureStats
from sluice.models import MLP, MLPConfig, ModelFormat, ModelOutput, export_module

__all__ = [
    "Candidate",
    "TrainConfig",
    "TrainingData",
    "fit_mlp",
    "fit_mlp_candidate",
    "load_trainer",
]


class TrainConfig(BaseModel):
    """Arguments of one training run (also stored in the version's train_params)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contract: str = Field("fraud", description="Contract name or YAML path.")
    rows: int = Field(50_000, ge=1_000, description="Generated transactions (train + holdout).")
    seed: int = Field(7, ge=0, description="Seeds the data, the weights and the batch order.")
    epochs: int = Field(6, ge=1, le=1000)
    batch_rows: int = Field(256, ge=1, description="Rows per optimizer step.")
    learning_rate: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    hidden_dims: tuple[int, ...] = Field((64, 32), min_length=1)
    holdout_fraction: float = Field(0.2, gt=0, lt=1, description="Latest rows kept for the AUC.")
    threads: int = Field(1, ge=1, description="torch intra-op threads while training.")
    trainer: str | None = Field(None, description="module:function; default: the contract's.")
    export_format: ModelFormat = Field("onnx", description="The built-in MLP's registered format.")


@dataclass(frozen=True)
class TrainingData:
    """What a trainer fits on: the contract's features of the training rows, in
    `feature_names` order, and their labels. The holdout that judges the candidate is not
    here: a trainer that wants early stopping splits its own validation rows off these."""

    contract: Contract
    feature_names: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    stats: FeatureStats


@dataclass(frozen=True)
class Candidate:
    """A trainer's answer: the model file, its format and how its output is the score."""

    model: bytes
    format: ModelFormat
    output: ModelOutput
    architecture: dict[str, str | int | float | bool | list[str | int | float | bool]]
    metrics: dict[str, float]
    trusted: bool = False


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_mlp(
    x: np.ndarray, y: np.ndarray, config: TrainConfig, architecture: MLPConfig
) -> tuple[MLP, float]:
    """Train the MLP with BCE on logits; returns the module and the last epoch's mean loss."""
    torch.manual_seed(config.seed)
    net = MLP(architecture)
    net.fit_input_scaling(x)
    features = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    labels = torch.from_numpy(y.astype(np.float32))
    optimizer = torch.optim.Adam(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    order_rng = torch.Generator().manual_seed(config.seed)
    loss_sum = 0.0
    net.train()
    for _ in range(config.epochs):
        loss_sum, steps = 0.0, 0
        for idx in torch.randperm(len(labels), generator=order_rng).split(config.batch_rows):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(features[idx]), labels[idx])
            loss.backward()
            optimizer.step()
            loss_sum, steps = loss_sum + float(loss.detach()), steps + 1
        loss_sum /= max(steps, 1)
    net.eval()
    return net, loss_sum


def fit_mlp_candidate(data: TrainingData, config: TrainConfig) -> Candidate:
    """The built-in trainer: the MLP, exported as `config.export_format` (ONNX by default;
    torch-export or TorchScript), its output one logit per row. torch-export and TorchScript
    run code when loaded, so those candidates are marked trusted: this repository's own code
    made them."""
    architecture = MLPConfig(input_dim=len(data.feature_names), hidden_dims=config.hidden_dims)
    with _torch_threads(config.threads):
        net, last_loss = fit_mlp(data.x_train, data.y_train, config, architecture)
        model = export_module(net, len(data.feature_names), config.export_format)
    return Candidate(
        model=model,
        format=config.export_format,
        trusted=config.export_format != "onnx",
        output=ModelOutput(link="logit"),
        architecture={"family": "mlp", "hidden_dims": list(architecture.hidden_dims)},
        metrics={"train_loss": last_loss},
    )


def load_trainer(ref: str) -> Callable[[TrainingData, TrainConfig], Candidate]:
    """The function a `module:function` reference names (the contract's `trainer`)."""
    module_name, _, func = ref.partition(":")
    try:
        trainer = getattr(importlib.import_module(module_name), func)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"trainer {ref!r}: cannot import it: {exc}") from exc
    if not callable(trainer):
        raise ConfigError(f"trainer {ref!r} is not a function")
    return trainer
