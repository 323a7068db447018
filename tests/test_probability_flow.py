"""Probability-flow generator of the adjoint sampler: exact density against analytic Gaussians and quadrature,
invariances, inversion, and exact Metropolis–Hastings moves in an OpenMM Context."""
import math

import numpy as np
import pytest
import torch
from molfree.openmm import GeneratorMove
from test_generator_move import double_well_context, exact_moments

from molfree import units
from molfree.energies.analytic import DoubleWellEnergy
from molfree.samplers import (
    AdjointConfig,
    AdjointSampler,
    EGNNDrift,
    GeometricSchedule,
    MemorylessSDE,
    MLPDrift,
    ProbabilityFlow,
)

pytestmark = pytest.mark.usefixtures("one_thread")
SDE = MemorylessSDE(GeometricSchedule(0.01, 1.5))


def optimal_gaussian_drift(std: torch.Tensor):
    """The optimal drift for the target N(0, diag(std²)) (``std`` [N, dim], nm): the controlled process is the
    reference bridge pinned to that Gaussian, with marginal variance m_t = (ν_t/ν₁)² std² + ν_t (ν₁ − ν_t)/ν₁, and
    v = ∇ ln p_t − ∇ ln p_ref,t = x (1/ν_t − 1/m_t), written without the cancellation at t → 0."""
    nu1 = SDE.terminal_variance()

    def drift(x, t):
        nu = SDE.schedule.variance(t.double())[:, None, None]
        m = (nu / nu1) ** 2 * std**2 + nu * (nu1 - nu) / nu1
        return (x.double() * (std**2 - nu1) * nu / (nu1**2 * m)).to(x.dtype)

    return drift


def gaussian_log_prob(x, std):
    return (-0.5 * (x / std).pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum((1, 2))


def test_flow_of_the_optimal_drift_generates_the_gaussian_target_with_its_exact_density():
    std = torch.tensor([[0.25, 0.05, 0.05], [0.1, 0.4, 0.2]], dtype=torch.float64)
    flow = ProbabilityFlow(SDE, optimal_gaussian_drift(std), (2, 3), 300.0, n_steps=50, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(0))
    x, log_q = flow.propose(3000)
    assert x.shape == (3000, 2, 3) and log_q.dtype == torch.float64
    assert torch.allclose(x.std(0), std, rtol=0.05)
    assert (log_q - gaussian_log_prob(x, std)).abs().max() < 1e-3
    points = torch.randn(50, 2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 * std
    assert (flow.log_prob(points) - gaussian_log_prob(points, std)).abs().max() < 1e-3


def test_flow_density_of_a_nonlinear_drift_integrates_to_one():
    torch.manual_seed(0)
    net = MLPDrift(1, 2, hidden=32, n_layers=2, length_scale=1.0).double()
    flow = ProbabilityFlow(SDE, lambda x, t: 3 * net(x, t), (1, 2), 300.0, n_steps=20, dtype=torch.float64,
                           batch_size=8192)
    x, log_q = flow.propose(2000)
    assert (flow.log_prob(x[:100]) - log_q[:100]).abs().max() < 1e-3  # the backward pass inverts the forward one
    half = 4.0 * float(x.abs().max())
    grid = torch.linspace(-half, half, 81, dtype=torch.float64)
    points = torch.cartesian_prod(grid, grid).reshape(-1, 1, 2)
    mass = flow.log_prob(points).exp().sum() * (grid[1] - grid[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=0.01)


def trained_dw4_sampler():
    torch.manual_seed(0)
    cfg = AdjointConfig(sigma_max=3.0, n_steps=20, samples_per_iteration=64, train_steps_per_iteration=5,
                        train_batch_size=64, com_free=True)
    sampler = AdjointSampler(DoubleWellEnergy.dw4(), EGNNDrift(hidden=16, n_layers=2, length_scale=4.0),
                             units.REDUCED_TEMPERATURE, cfg, seed=0)
    sampler.train(max_iterations=3, progress=False)
    return sampler


def test_sampler_flow_is_com_free_inverts_and_is_invariant_under_rigid_motions_and_permutations():
    sampler = trained_dw4_sampler()
    flow = sampler.probability_flow(n_steps=20)
    evaluations = sampler.energy_evaluations
    x, log_q = flow.propose(16)
    assert sampler.energy_evaluations == evaluations and x.dtype == torch.float32
    assert x.mean(1).abs().max() < 1e-5
    assert (flow.log_prob(x) - log_q).abs().max() < 1e-3
    angle = 0.7
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = x[:, [2, 0, 3, 1]] @ rotation.T + torch.tensor([1.5, -0.3])
    assert (flow.log_prob(moved) - log_q).abs().max() < 1e-4


def test_flow_refuses_bad_positions():
    flow = ProbabilityFlow(SDE, optimal_gaussian_drift(torch.ones(2, 3, dtype=torch.float64)), (2, 3), 300.0,
                           n_steps=4, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        flow.log_prob(torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match="non-finite"):
        flow.log_prob(torch.full((1, 2, 3), math.nan))
    with pytest.raises(ValueError, match="n must be"):
        flow.propose(0)
    with pytest.raises(ValueError, match="n_steps"):
        ProbabilityFlow(SDE, None, (2, 3), 300.0, n_steps=0)


@pytest.mark.parametrize("n_moves,n_steps,rel,abs_", [(300, 10, 0.1, 0.15),
                                                      pytest.param(2500, 12, 0.07, 0.08, marks=pytest.mark.slow)])
def test_generator_move_with_a_flow_proposal_samples_the_openmm_double_well(n_moves, n_steps, rel, abs_):
    """The flow of the optimal drift for N(0, diag(0.25², 0.05², 0.05²)) nm² proposes independence moves on a
    double well in x; exact acceptance must restore the Context's Boltzmann moments (each move integrates the
    flow twice: ~0.1 s here, so the long chain is marked slow)."""
    barrier = 10.0
    context, _ = double_well_context(barrier)
    std = torch.tensor([[0.25, 0.05, 0.05]], dtype=torch.float64)
    flow = ProbabilityFlow(SDE, optimal_gaussian_drift(std), (1, 3), 300.0, n_steps=n_steps, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(2))
    move = GeneratorMove(flow, seed=1)
    xs = []
    for _ in range(n_moves):
        move.apply(context)
        xs.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value[0, 0])
    xs = np.array(xs[n_moves // 10:])
    second, right = exact_moments(barrier)
    assert 0.1 < move.acceptanceRate < 0.6
    assert np.mean(xs**2) == pytest.approx(second, rel=rel)
    assert np.mean(xs > 0) == pytest.approx(right, abs=abs_)
