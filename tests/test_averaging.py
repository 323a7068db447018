"""molfree.averaging.WeightAverage: an independent copy, and the stationary statistics of an EMA."""
import math

import pytest
import torch

from molfree.averaging import WeightAverage


def test_average_is_an_independent_frozen_copy():
    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, 0.9)
    assert all(not p.requires_grad for p in average.module.parameters())
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(average.module.weight, model.weight)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, 1.0)


def test_average_of_noisy_weights_has_the_ema_mean_and_variance():
    """Weights redrawn i.i.d. N(μ, 1) every step: the EMA's stationary mean is μ and its variance
    (1 − d)/(1 + d) once the warm-up rate 9/(10 + n) has fallen below 1 − d."""
    decay, mu, n_weights = 0.98, 2.0, 4000
    model = torch.nn.Linear(n_weights, 1, bias=False)
    average = WeightAverage(model, decay)
    g = torch.Generator().manual_seed(0)
    for _ in range(2000):
        with torch.no_grad():
            model.weight.copy_(mu + torch.randn(model.weight.shape, generator=g))
        average.update(model)
    w = average.module.weight
    expected_var = (1 - decay) / (1 + decay)
    assert abs(float(w.mean()) - mu) < 4 * math.sqrt(expected_var / n_weights)
    assert float(w.var()) == pytest.approx(expected_var, rel=0.1)


def test_build_constructs_the_copy_and_state_round_trips():
    model = torch.nn.Linear(2, 2)
    average = WeightAverage(model, 0.5, build=lambda m: torch.nn.Linear(m.in_features, m.out_features))
    assert torch.equal(average.module.weight, model.weight)
    average.update(model)
    other = WeightAverage(torch.nn.Linear(2, 2), 0.5)
    other.load_state_dict(average.state_dict())
    assert other.n_averaged == 2 and torch.equal(other.module.weight, average.module.weight)
