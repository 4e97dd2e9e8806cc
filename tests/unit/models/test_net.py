from __future__ import annotations

import numpy as np
import torch

from sluice.models import MLP, MLPConfig


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


def test_missing_values_land_on_the_training_mean():
    net = _net()
    x = torch.full((2, 5), float("nan"))
    x[1] = net.input_mean
    with torch.no_grad():
        logits = net(x)
    assert torch.isfinite(logits).all() and logits[0] == logits[1]
