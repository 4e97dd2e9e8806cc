"""``Explainer``: why a model gave a row its score, as feature attributions.

    explainer = Explainer(loaded_model)            # baseline: the training medians
    contributions = explainer.attributions(matrix) # (rows, features), float64
    reasons = explainer.reasons(matrix)            # per row: top-k {feature, value, contribution}

The method is Shapley value sampling (Castro et al. 2009), exactly as Captum's
``ShapleyValueSampling`` runs it, with the same permutations: each sampled permutation adds
the row's features one by one to a baseline row, and a feature's attribution is its mean
marginal change of the score. It needs only the model's scores, so it explains every
format the registry runs (ONNX, torch.export, TorchScript; trees and networks alike)
through ``LoadedModel.predict``, on the probability the contract decides on.

Evaluated here as one model call over every step of every permutation (chunked by rows)
rather than through Captum's loop: Captum builds each step's inputs and masks with a few
small tensor operations per feature, which was 80 % of its time (py-spy, a stream
consumer: 20 ms per call whatever the rows, ~19 % of the consumer's time). Captum stays the
reference: ``tests/unit/models/test_explain.py`` checks that both give the same
attributions (to float32 rounding) for a network and a tree ensemble.

Properties the alerts rely on (``tests/unit/models/test_explain.py``):
- faithful: every permutation telescopes, so a row's attributions sum to
  ``score(row) - score(baseline)`` (to float rounding, whatever the number of samples);
- deterministic: the permutations come from a fixed seed (the ones ``torch.randperm`` draws
  in a generator seeded with it, as Captum draws them after ``torch.manual_seed(seed)``,
  computed without torch: `_randperms`; no caller's random state changes) and are
  the same for every row of every call, so a
  row's attributions do not depend on which rows it is explained with: the batch job,
  the stream and the online endpoint give the same row the same explanation — bit for
  bit where the runtime scores a row alike in any batch (torch, the ONNX MLP), within
  ``SCORE_TOLERANCE`` where it does not (onnxruntime's tree ensemble sums in another
  order per batch size), exactly as the scores themselves;
- the baseline is the training median of each feature (the model's reference
  statistics, stored with the version), the same everywhere.

Cost (``samples=20``, 16 features, ONNX MLP, 2 cores): see the README ("Explanations").
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


def _randperms(d: int, samples: int, seed: int) -> np.ndarray:
    """``samples`` permutations of ``range(d)``: exactly what ``torch.randperm(d,
    generator=torch.Generator().manual_seed(seed))`` returns, called ``samples`` times, but
    without importing torch (~0.9 s and ~200 MB in every process that explains a row).

    torch's CPU ``randperm`` (for ``d`` below 2**32 / 20) is a Fisher-Yates shuffle: for
    each ``i < d - 1`` it swaps ``r[i]`` with ``r[i + z]``, ``z`` = the generator's next
    32-bit MT19937 output modulo ``d - i``. Its generator seeds MT19937 with Matsumoto and
    Nishimura's ``init_genrand``, as NumPy's legacy ``RandomState(seed)`` does, whose
    full-range ``uint32`` draws are the raw outputs (so ``seed`` is below 2**32: NumPy
    refuses a larger one). ``tests/unit/models/test_explain.py`` compares both for several
    seeds and sizes."""
    steps = max(d - 1, 0)
    draws = np.random.RandomState(seed).randint(0, 2**32, size=samples * steps,
                                                dtype=np.uint32).tolist()  # fmt: skip
    out = np.empty((samples, d), dtype=np.intp)
    for s in range(samples):
        r = list(range(d))
        for i, z in enumerate(draws[s * steps : (s + 1) * steps]):
            j = i + z % (d - i)
            r[i], r[j] = r[j], r[i]
        out[s] = r
    return out


_CHUNK_INPUTS = 65_536
"""Most perturbed rows per model call (a chunk of rows times samples times features)."""


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
        d = len(self.names)
        perms = _randperms(d, samples, seed)
        # taken[s, k, f]: feature f is among the first k + 1 of permutation s.
        position = np.argsort(perms, axis=1)  # position[s, f]: where f comes in perm s
        self._taken = position[:, None, :] <= np.arange(d)[None, :, None]
        self._position = position

    def attributions(self, matrix: np.ndarray) -> np.ndarray:
        """(rows, features) contributions to each row's score; rows sum to
        ``score - baseline_score``."""
        x = np.ascontiguousarray(matrix, dtype=np.float32)
        d = len(self.names)
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"{self.model.ref}: expected a (rows, {d}) matrix, "
                             f"got shape {x.shape}")  # fmt: skip
        per_row = self.samples * d
        step = max(1, _CHUNK_INPUTS // per_row)
        out = np.empty((x.shape[0], d), dtype=np.float64)
        for lo in range(0, x.shape[0], step):
            out[lo : lo + step] = self._chunk(x[lo : lo + step])
        return out

    def _chunk(self, x: np.ndarray) -> np.ndarray:
        rows, d = x.shape
        s = self.samples
        # Every step of every permutation for every row: (samples, steps, rows, features).
        inputs = np.where(self._taken[:, :, None, :], x[None, None], self.baseline[None, None])
        scores = np.asarray(self.model.predict(inputs.reshape(-1, d)), dtype=np.float32)
        scores = scores.reshape(s, d, rows)
        before = np.concatenate(
            [np.full((s, 1, rows), self.baseline_score, dtype=np.float32), scores[:, :-1]], axis=1
        )
        marginal = scores - before  # [s, k]: the change when permutation s adds its k-th feature
        # Each feature's change in each permutation, summed over the permutations.
        total = np.take_along_axis(marginal, self._position[:, :, None], axis=1).sum(axis=0)
        return (total / s).T.astype(np.float64)

    def reasons(self, matrix: np.ndarray) -> list[list[dict[str, Any]]]:
        """Per row, its ``top_k`` features by absolute contribution (ties: feature order),
        each ``{"feature", "value", "contribution"}``."""
        contributions = self.attributions(matrix)
        order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, : self.top_k]
        out = []
        for row, contrib, top in zip(np.asarray(matrix, dtype=np.float64), contributions,
                                     order.tolist(), strict=True):  # fmt: skip
            out.append([{"feature": self.names[j], "value": float(row[j]),
                         "contribution": float(contrib[j])} for j in top])  # fmt: skip
        return out
