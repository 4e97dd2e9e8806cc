"""The scoring network: a small MLP over the contract's feature matrix.

The architecture is described by a frozen, JSON-serializable `MLPConfig` so a
registry version can rebuild the module from metadata and then load a plain
`state_dict` into it: no pickled Python objects ever cross the registry.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

__all__ = ["MLP", "MLPConfig", "exact_logits", "predict_scores", "select_device"]


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
    the state_dict: a registered version carries its scaling with its weights.
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


def select_device(preference: str = "auto") -> torch.device:
    """CUDA when present and allowed (`auto` or `cuda`), otherwise the CPU fallback.

    A contract asking for `cuda` on a host without a GPU still scores (on CPU):
    the design requires every GPU path to have a CPU fallback.
    """
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {preference!r}")
    if preference != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def exact_logits(module: MLP, x: torch.Tensor) -> torch.Tensor:
    """The MLP's logits as a fixed sequence of elementwise IEEE operations.

    A GEMM kernel picks its blocking, and so its summation order, from the batch
    shape: a row's logit from `module(x)` can change in the last bits with the
    batch it arrives in. Here every output is `sum_k x_k * w_k` accumulated in k
    order with separate multiply and add ops, then `+ bias`; each op is exactly
    rounded on every backend, so a row gets the same logit alone or in any
    batch, on CPU or CUDA (the design requires the same score on every path).
    It costs a few ms per 1024 rows on one core for the network sizes used here.
    """
    z = (x - module.input_mean) / module.input_std
    z = torch.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
    for layer in module.layers:
        if isinstance(layer, nn.Linear):
            w = layer.weight.t()
            acc = z[:, 0:1] * w[0]
            for k in range(1, w.shape[0]):
                acc = acc + z[:, k : k + 1] * w[k]
            z = acc + layer.bias
        elif isinstance(layer, nn.ReLU):
            z = torch.relu(z)
        elif not isinstance(layer, nn.Dropout):  # dropout is the identity at inference
            raise TypeError(f"exact_logits does not support layer {layer!r}")
    return z.squeeze(-1)


def predict_scores(
    module: MLP, matrix: np.ndarray, device: torch.device, batch_rows: int = 1024
) -> np.ndarray:
    """Fraud probabilities (float64) for a float32 feature matrix, in batches.

    Batch-invariant (see `exact_logits`): the score of a row does not depend on
    `batch_rows` or on the other rows. Runs under `torch.inference_mode`; the
    sigmoid is taken in float64 NumPy on the host so it is the same whatever
    device computed the logits.
    """
    if batch_rows <= 0:
        raise ValueError(f"batch_rows must be > 0, got {batch_rows}")
    rows = matrix.shape[0]
    logits = np.empty(rows, dtype=np.float64)
    if rows == 0:
        return logits
    features = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))
    module.eval()
    with torch.inference_mode():
        for start in range(0, rows, batch_rows):
            batch = features[start : start + batch_rows].to(device, non_blocking=True)
            out = exact_logits(module, batch)
            logits[start : start + batch.shape[0]] = out.cpu().numpy()
    # sigmoid(z) = exp(-log(1 + exp(-z))): no overflow for very negative logits.
    return np.exp(-np.logaddexp(0.0, -logits))
