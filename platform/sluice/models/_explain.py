"""``Explainer``: why a model gave a row its score, as feature attributions (Captum).

    explainer = Explainer(loaded_model)            # baseline: the training medians
    contributions = explainer.attributions(matrix) # (rows, features), float64
    reasons = explainer.reasons(matrix)            # per row: top-k {feature, value, contribution}

The method is Shapley value sampling (Castro et al. 2009; Captum's
``ShapleyValueSampling``): each sampled permutation adds the row's features one by one
to a baseline row, and a feature's attribution is its mean marginal change of the
score. It needs only the model's scores, so it explains every format the registry runs
(ONNX, torch.export, TorchScript; trees and networks alike) through
``LoadedModel.predict``, on the probability the contract decides on.

Properties the alerts rely on (``tests/unit/models/test_explain.py``):
- faithful: every permutation telescopes, so a row's attributions sum to
  ``score(row) - score(baseline)`` (to float rounding, whatever the number of samples);
- deterministic: the permutations come from a fixed seed (in a forked torch RNG, so no
  caller's random state changes) and are the same for every row of every call, so a
  row's attributions do not depend on which rows it is explained with: the batch job,
  the stream and the online endpoint give the same row the same explanation — bit for
  bit where the runtime scores a row alike in any batch (torch, the ONNX MLP), within
  ``SCORE_TOLERANCE`` where it does not (onnxruntime's tree ensemble sums in another
  order per batch size), exactly as the scores themselves;
- the baseline is the training median of each feature (the model's reference
  statistics, stored with the version), the same everywhere.

Cost (``samples=20``, 16 features, ONNX MLP, 2 cores): ~16 ms per call plus ~0.2 ms per
row: 20 model calls on (16 × rows) perturbed rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Explainer"]


def _baseline(meta: Any) -> np.ndarray:
    """Each feature's training median (0 for a feature that had no finite value)."""
    values = []
    for name in meta.feature_names:
        ref = meta.reference.features.get(name)
        levels = list(ref.quantile_levels) if ref is not None else []
        if ref is None or not ref.quantiles or 0.5 not in levels:
            values.append(0.0)
        else:
            values.append(float(ref.quantiles[levels.index(0.5)]))
    return np.array([values], dtype=np.float32)


class Explainer:
    """Feature attributions of one loaded model's scores (see the module docstring)."""

    def __init__(self, model: Any, *, samples: int = 20, seed: int = 0, top_k: int = 5) -> None:
        if samples < 1 or top_k < 1:
            raise ValueError(f"samples and top_k must be >= 1, got {samples} and {top_k}")
        self.model = model
        self.samples, self.seed, self.top_k = samples, seed, top_k
        self.names = tuple(model.meta.feature_names)
        self.baseline = _baseline(model.meta)
        self.baseline_score = float(model.predict(self.baseline)[0])

    def attributions(self, matrix: np.ndarray) -> np.ndarray:
        """(rows, features) contributions to each row's score; rows sum to
        ``score - baseline_score``."""
        import torch
        from captum.attr import ShapleyValueSampling

        x = np.ascontiguousarray(matrix, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise ValueError(f"{self.model.ref}: expected a (rows, {len(self.names)}) matrix, "
                             f"got shape {x.shape}")  # fmt: skip
        if x.shape[0] == 0:
            return np.zeros((0, len(self.names)))

        def scores(t: Any) -> Any:
            return torch.from_numpy(self.model.predict(t.detach().cpu().numpy()))

        method = ShapleyValueSampling(scores)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            out = method.attribute(torch.from_numpy(x), baselines=torch.from_numpy(self.baseline),
                                   n_samples=self.samples,
                                   perturbations_per_eval=len(self.names))  # fmt: skip
        return out.detach().cpu().numpy().astype(np.float64)

    def reasons(self, matrix: np.ndarray) -> list[list[dict[str, Any]]]:
        """Per row, its ``top_k`` features by absolute contribution (ties: feature order),
        each ``{"feature", "value", "contribution"}``."""
        contributions = self.attributions(matrix)
        out = []
        for row, contrib in zip(np.asarray(matrix, dtype=np.float64), contributions,
                                strict=True):  # fmt: skip
            order = sorted(range(len(self.names)), key=lambda j: (-abs(contrib[j]), j))
            out.append([{"feature": self.names[j], "value": float(row[j]),
                         "contribution": float(contrib[j])}
                        for j in order[: self.top_k]])  # fmt: skip
        return out
