"""Explainer: attributions that sum to the score's change, the same for a row in any batch."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from model_factories import FEATURES, make_meta, make_model

from sluice.contract import load_contract
from sluice.datagen import generate_dataset
from sluice.decisions import DecisionPolicy
from sluice.features import InMemoryFeatureStore
from sluice.models import SCORE_TOLERANCE, Explainer, ModelOutput
from sluice.scoring import Scorer

FAITHFUL = 1e-6
"""|sum of a row's attributions - (score(row) - score(baseline))|: float64 sums of float32
model outputs; measured 2.6e-8 on the fraud MLP."""


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(FEATURES))).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A torch model (torch.export, trusted) and a tree model (LightGBM through ONNX)."""
    import lightgbm

    from pipelines.train_gbm import lightgbm_to_onnx
    from sluice.models import ModelRegistry

    registry = ModelRegistry(str(tmp_path_factory.mktemp("explain-registry")))
    registry.register("mlp", make_model(7, "torch-export"),
                      make_meta(fmt="torch-export", trusted=True))  # fmt: skip
    x = _rows(300, seed=5)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int32)
    gbm = lightgbm.LGBMClassifier(n_estimators=20, n_jobs=1, verbose=-1, min_child_samples=5)
    gbm.fit(x, y)
    tree_meta = make_meta().model_copy(update={"output": ModelOutput(index=1, column=1,
                                                                      link="probability")})
    registry.register("gbm", lightgbm_to_onnx(gbm, len(FEATURES)), tree_meta)
    return {"torch": registry.load("mlp/1", device="cpu"),
            "tree": registry.load("gbm/1", device="cpu")}  # fmt: skip


@pytest.mark.parametrize("kind", ["torch", "tree"])
def test_attributions_sum_to_the_change_of_the_score(models, kind):
    model = models[kind]
    explainer = Explainer(model)
    x = _rows(64, seed=11)
    contributions = explainer.attributions(x)
    assert contributions.shape == (64, len(FEATURES)) and contributions.dtype == np.float64
    gap = contributions.sum(axis=1) - (model.predict(x) - explainer.baseline_score)
    assert np.abs(gap).max() <= FAITHFUL, np.abs(gap).max()
    assert np.abs(contributions).sum(axis=1).min() > 0  # the rows differ from the baseline
    # The baseline is the training medians stored with the model.
    ref = model.meta.reference.features
    assert explainer.baseline[0].tolist() == pytest.approx(
        [ref[n].quantiles[list(ref[n].quantile_levels).index(0.5)] for n in FEATURES])


@pytest.mark.parametrize("kind", ["torch", "tree"])
def test_a_row_gets_the_same_explanation_alone_or_in_any_batch(models, kind):
    explainer = Explainer(models[kind])
    x = _rows(50, seed=12)
    together = explainer.attributions(x)
    alone = explainer.attributions(x[17:18])
    shuffled = explainer.attributions(x[[40, 17, 3]])
    # Within SCORE_TOLERANCE, as the scores themselves across batch sizes (README "Bring
    # your own model"): onnxruntime's tree ensemble sums in another order per batch size,
    # and torch's GEMM kernels pick their blocking by batch shape and CPU (on AVX-512 a row
    # scored in a batch of 2 or 3 differs from the same row in a batch of 50 by one float32
    # ulp; on the machines of earlier CI runs it did not).
    np.testing.assert_allclose(alone[0], together[17], rtol=0, atol=SCORE_TOLERANCE)
    np.testing.assert_allclose(shuffled[1], together[17], rtol=0, atol=SCORE_TOLERANCE)
    # Another explainer of the same model (another process, path or replica) agrees.
    assert np.array_equal(Explainer(models[kind]).attributions(x), together)


@pytest.mark.parametrize("kind", ["torch", "tree"])
def test_the_attributions_are_captums_shapley_value_sampling(models, kind):
    """The same method and the same permutations as Captum's ShapleyValueSampling, the
    reference: equal to float32 rounding (the tree ensemble's scores, as everywhere, to
    SCORE_TOLERANCE: Captum calls the model on other batch sizes)."""
    from captum.attr import ShapleyValueSampling

    model = models[kind]
    explainer = Explainer(model)
    x = _rows(40, seed=14)

    def scores(t):
        return torch.from_numpy(model.predict(t.detach().numpy()))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(explainer.seed)
        want = ShapleyValueSampling(scores).attribute(
            torch.from_numpy(x), baselines=torch.from_numpy(explainer.baseline),
            n_samples=explainer.samples, perturbations_per_eval=len(FEATURES)).numpy()
    got = explainer.attributions(x)
    assert np.abs(got).max() > 1e-3  # not trivially equal
    np.testing.assert_allclose(got, want, rtol=0, atol=SCORE_TOLERANCE)


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31 - 1, 2**32 - 1])
def test_the_permutations_are_torch_randperms_without_torch(seed):
    """The Explainer draws Captum's permutations without importing torch: the same as
    torch.randperm in a generator seeded with the same seed, size by size."""
    from sluice.models._explain import _randperms

    for d in (1, 2, 3, 5, 16, 17, 40, 100):
        rng = torch.Generator().manual_seed(seed)
        want = [torch.randperm(d, generator=rng).tolist() for _ in range(20)]
        assert _randperms(d, 20, seed).tolist() == want, (seed, d)


def test_rows_explained_in_chunks_get_the_attributions_they_get_together(models, monkeypatch):
    import sluice.models._explain as explain

    explainer = Explainer(models["torch"])
    x = _rows(50, seed=15)
    together = explainer.attributions(x)
    monkeypatch.setattr(explain, "_CHUNK_INPUTS", 7 * explainer.samples * len(FEATURES))
    np.testing.assert_allclose(explainer.attributions(x), together, rtol=0, atol=SCORE_TOLERANCE)


def test_explaining_leaves_the_callers_random_state_alone(models):
    torch.manual_seed(123)
    np.random.seed(123)
    expected, expected_np = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    Explainer(models["torch"]).attributions(_rows(5, seed=1))
    assert torch.equal(torch.rand(3), expected)
    assert np.array_equal(np.random.rand(3), expected_np)


def test_reasons_are_the_top_features_by_absolute_contribution(models):
    explainer = Explainer(models["torch"], top_k=2)
    x = _rows(10, seed=13)
    contributions = explainer.attributions(x)
    for row, contrib, reasons in zip(x, contributions, explainer.reasons(x), strict=True):
        assert len(reasons) == 2
        top = sorted(range(len(FEATURES)), key=lambda j: (-abs(contrib[j]), j))[:2]
        assert [r["feature"] for r in reasons] == [FEATURES[j] for j in top]
        assert [r["value"] for r in reasons] == [float(row[j]) for j in top]
        assert [r["contribution"] for r in reasons] == [float(contrib[j]) for j in top]


def test_bad_shapes_and_settings_are_refused(models):
    with pytest.raises(ValueError, match=r"expected a \(rows, 3\) matrix, got shape \(2, 2\)"):
        Explainer(models["torch"]).attributions(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="samples and top_k must be >= 1"):
        Explainer(models["torch"], samples=0)
    assert Explainer(models["tree"]).attributions(np.zeros((0, 3), np.float32)).shape == (0, 3)


def test_the_scorer_explains_exactly_the_alerting_rows(trained):
    """An alerting row's ``reasons`` are the Explainer's top 5 for its features; the other
    rows have none. The same row scored alone gets the same reasons."""
    registry, _ = trained
    fraud = load_contract("fraud")
    data = generate_dataset(300, seed=31).table
    plain = Scorer(fraud, registry, InMemoryFeatureStore()).score(data).scored
    cut = float(np.quantile(plain["score"].to_numpy(), 0.8))
    policy = DecisionPolicy.model_validate([{"label": "approve", "min_score": 0.0},
                                            {"label": "review", "min_score": cut}])  # fmt: skip
    scorer = Scorer(fraud.model_copy(update={"decision": policy}), registry,
                    InMemoryFeatureStore())  # fmt: skip
    scored = scorer.score(data).scored
    alerting = np.array([d == "review" for d in scored["decision"].to_pylist()])
    reasons = scored["reasons"].to_pylist()
    assert 0 < alerting.sum() < len(alerting)
    assert all((r is not None) == a for r, a in zip(reasons, alerting, strict=True))
    names = list(fraud.feature_names)
    matrix = np.column_stack([scored[n].to_numpy() for n in names])[alerting]
    want = Explainer(scorer.model).reasons(matrix)
    assert [json.loads(r) for r, a in zip(reasons, alerting, strict=True) if a] == want
    assert {r["feature"] for rs in want for r in rs} <= set(names)
    # One alerting row scored alone (its card's history already recorded by the batch).
    i = int(np.flatnonzero(alerting)[-1])
    key = scored["key"][i].as_py()
    row = data.filter(pc.equal(data["transaction_id"], key))
    alone = scorer.score(row).scored
    assert alone["key"].to_pylist() == [key] and alone["reasons"][0].as_py() == reasons[i]
