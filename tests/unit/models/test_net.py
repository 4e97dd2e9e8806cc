from __future__ import annotations

import numpy as np
import torch

from sluice.models import MLP, MLPConfig, predict_scores


def _net() -> MLP:
    torch.manual_seed(0)
    net = MLP(MLPConfig(input_dim=5, hidden_dims=(16, 8)))
    x = np.random.default_rng(0).normal(10.0, 3.0, size=(300, 5)).astype(np.float32)
    net.fit_input_scaling(x)
    return net.eval()


def test_input_scaling_is_fitted_and_part_of_the_state_dict():
    net = _net()
    assert {"input_mean", "input_std"} <= set(net.state_dict())
    assert np.allclose(net.input_mean.numpy(), 10.0, atol=0.5)
    assert np.allclose(net.input_std.numpy(), 3.0, atol=0.5)


def test_scores_match_the_module_and_do_not_depend_on_the_batch():
    net = _net()
    x = np.random.default_rng(1).normal(10.0, 3.0, size=(257, 5)).astype(np.float32)
    whole = predict_scores(net, x, torch.device("cpu"), batch_rows=1024)
    with torch.no_grad():
        reference = torch.sigmoid(net(torch.from_numpy(x))).double().numpy()
    np.testing.assert_allclose(whole, reference, rtol=1e-5, atol=1e-7)
    # Bit-for-bit the same alone, in odd-sized batches, or in one batch.
    one_by_one = np.concatenate(
        [predict_scores(net, x[i : i + 1], torch.device("cpu")) for i in range(257)]
    )
    assert np.array_equal(one_by_one, whole)
    assert np.array_equal(predict_scores(net, x, torch.device("cpu"), batch_rows=7), whole)


def test_missing_values_land_on_the_training_mean():
    net = _net()
    x = np.full((2, 5), np.nan, dtype=np.float32)
    x[1] = net.input_mean.numpy()
    scores = predict_scores(net, x, torch.device("cpu"))
    assert np.isfinite(scores).all() and scores[0] == scores[1]
    assert predict_scores(net, np.zeros((0, 5), np.float32), torch.device("cpu")).shape == (0,)
