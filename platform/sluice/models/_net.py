"""The built-in scoring network (a small MLP over the feature matrix) and torch exporters.

`pipelines.train` fits an `MLP` and registers it through `export_module`, like any
team's torch model: as an ONNX graph (the default), a torch.export program or a
TorchScript archive. The registry never holds the module itself, so there is one
runtime path for every model (`sluice.models._runtime`).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

__all__ = ["MLP", "MLPConfig", "export_module"]


class MLPConfig(BaseModel):
    """Architecture of the scoring MLP (stored with every registry version)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field("mlp", pattern=r"^mlp$", description="Architecture family.")
    input_dim: int = Field(..., gt=0, description="Number of input features.")
    hidden_dims: tuple[int, ...] = Field(
        (64, 32), min_length=1, description="Width of each hidden layer, input to output."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer.")


class MLP(nn.Module):
    """Feed-forward network returning one fraud logit per row.

    Entity aggregates arrive unscaled (counts, sums of amounts, seconds up to a
    week), so the network standardizes its own input with per-feature buffers
    fitted on the training matrix (`fit_input_scaling`). The buffers are part of
    the state_dict, so an exported graph carries its scaling with its weights.
    """

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("input_mean", torch.zeros(config.input_dim))
        self.register_buffer("input_std", torch.ones(config.input_dim))
        layers: list[nn.Module] = []
        width = config.input_dim
        for hidden in config.hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def fit_input_scaling(self, matrix: np.ndarray) -> None:
        """Set the input standardization from a training matrix (finite values only)."""
        values = matrix.astype(np.float64)
        finite = np.isfinite(values)
        count = finite.sum(axis=0)
        filled = np.where(finite, values, 0.0)
        mean = filled.sum(axis=0) / np.maximum(count, 1)
        var = (np.where(finite, values - mean, 0.0) ** 2).sum(axis=0) / np.maximum(count, 1)
        std = np.sqrt(var)
        std = np.where(std > 1e-12, std, 1.0)  # a constant column must not divide by zero
        self.input_mean.copy_(torch.from_numpy(mean).float())
        self.input_std.copy_(torch.from_numpy(std).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.input_mean) / self.input_std
        # A missing value (NaN) or overflow lands on the training mean, not in the logits.
        z = torch.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
        return self.layers(z).squeeze(-1)


def export_module(module: nn.Module, n_features: int, fmt: str = "onnx") -> bytes:
    """A torch module that maps a (batch, n_features) float32 matrix to one output per row,
    saved in a registrable format with a dynamic batch dimension: `onnx` (torch.onnx's
    exporter), `torch-export` (`torch.export.save`) or `torchscript` (`torch.jit.script`)."""
    module = module.eval()
    example = torch.zeros(4, n_features)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            torch.onnx.export(
                module, (example,), buffer, input_names=["features"], output_names=["score"],
                dynamic_axes={"features": {0: "batch"}, "score": {0: "batch"}}, dynamo=False,
            )  # fmt: skip
        elif fmt == "torch-export":
            batch = torch.export.Dim("batch")
            program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, buffer)
        elif fmt == "torchscript":
            torch.jit.save(torch.jit.script(module), buffer)
        else:
            raise ValueError(f"cannot export a torch module as {fmt!r}")
    return buffer.getvalue()
