"""Analytic targets against known minima, exact integrals and independent formulas."""
import math

import numpy as np
import pytest
import scipy.optimize
import torch

from molfree import units
from molfree.energies.analytic import (DoubleWellEnergy, GaussianMixtureEnergy, HarmonicEnergy,
                                       LennardJonesClusterEnergy)


def icosahedron(scale: float) -> np.ndarray:
    """Centre + 12 vertices of an icosahedron at distance ``scale``."""
    g = (1 + 5**0.5) / 2
    v = []
    for s1 in (-1, 1):
        for s2 in (-1, 1):
            v += [(0, s1, s2 * g), (s1, s2 * g, 0), (s2 * g, 0, s1)]
    v = np.array(v, dtype=float)
    v *= scale / np.linalg.norm(v[0])
    return np.vstack([np.zeros(3), v])


def minimise(energy, x0):
    def fun(flat):
        x = torch.tensor(flat.reshape(x0.shape), dtype=torch.float64)
        e, f = energy.energy_and_forces(x)
        return float(e), -f.numpy().ravel()

    res = scipy.optimize.minimize(fun, x0.ravel(), jac=True, method="L-BFGS-B", options={"gtol": 1e-10})
    return res.fun, res.x.reshape(x0.shape)


def test_lj13_global_minimum():
    energy = LennardJonesClusterEnergy(13, sigma=1.0)
    rng = np.random.default_rng(0)
    e, _ = minimise(energy, icosahedron(1.1) + 0.02 * rng.standard_normal((13, 3)))
    assert e == pytest.approx(-44.326801, abs=1e-5)


def test_lj13_sampling_convention_is_twice_the_pair_sum_plus_oscillator():
    x = torch.tensor(icosahedron(1.0) + np.array([0.3, -0.2, 0.5]), dtype=torch.float64)
    physical = LennardJonesClusterEnergy(13)(x)
    com_term = 0.5 * (x - x.mean(0)).pow(2).sum()
    assert LennardJonesClusterEnergy.lj13()(x) == pytest.approx(float(2 * physical + com_term), rel=1e-12)
    # the centre-of-mass term does not see translations
    assert LennardJonesClusterEnergy.lj13()(x + 3.0) == pytest.approx(float(LennardJonesClusterEnergy.lj13()(x)))


def test_lj_pair_against_textbook_formula():
    r = 1.3
    x = torch.tensor([[0.0, 0, 0], [r, 0, 0]], dtype=torch.float64)
    assert float(LennardJonesClusterEnergy(2, epsilon=0.7, sigma=0.9)(x)) == pytest.approx(
        4 * 0.7 * ((0.9 / r) ** 12 - (0.9 / r) ** 6))


def test_dw4_pair_minimum_and_value():
    energy = DoubleWellEnergy.dw4()
    s = math.sqrt(4 / (2 * 0.9))
    assert float(energy.b * s**2 + energy.c * s**4) == pytest.approx(-16 / 3.6)
    # a square with side 4+s has 4 pairs at 4+s and 2 diagonals at (4+s)·√2
    side = 4 + s
    x = torch.tensor([[0, 0], [side, 0], [side, side], [0, side]], dtype=torch.float64)
    diag = side * math.sqrt(2) - 4
    expected = 4 * (-16 / 3.6) + 2 * (-4 * diag**2 + 0.9 * diag**4)
    assert float(energy(x)) == pytest.approx(expected)


@pytest.mark.parametrize("make", [
    lambda: LennardJonesClusterEnergy.lj13(),
    lambda: DoubleWellEnergy.dw4(),
    lambda: GaussianMixtureEnergy.grid(),
    lambda: HarmonicEnergy(np.zeros((5, 3)), [1.0, 2.0, 3.0, 4.0, 5.0]),
])
def test_forces_are_minus_gradient_by_finite_differences(make):
    energy = make()
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.uniform(-1.5, 1.5, (energy.n_atoms, energy.dim)) * (energy.n_atoms ** (1 / 3)),
                     dtype=torch.float64)
    forces = energy.forces(x)
    h = 1e-6
    for idx in [(0, 0), (energy.n_atoms - 1, energy.dim - 1)]:
        xp, xm = x.clone(), x.clone()
        xp[idx] += h
        xm[idx] -= h
        fd = -(energy(xp) - energy(xm)) / (2 * h)
        assert float(forces[idx]) == pytest.approx(float(fd), rel=1e-5, abs=1e-6)


def test_batched_equals_single_and_float32():
    energy = LennardJonesClusterEnergy.lj13()
    x = torch.tensor(np.stack([icosahedron(1.0 + 0.05 * k) for k in range(4)]), dtype=torch.float64)
    batched = energy(x)
    assert batched.shape == (4,)
    for k in range(4):
        assert float(energy(x[k])) == pytest.approx(float(batched[k]), rel=1e-12)
    assert energy(x.float()).dtype == torch.float32
    assert torch.allclose(energy(x.float()).double(), batched, rtol=1e-5)


def test_harmonic_partition_function_by_quadrature():
    energy = HarmonicEnergy(np.array([[0.3]]), 250.0)
    temperature = 300.0
    grid = torch.linspace(-1, 1.6, 20001, dtype=torch.float64)
    boltzmann = torch.exp(-energy(grid.reshape(-1, 1, 1)) / units.kT(temperature))
    z = torch.trapezoid(boltzmann, grid)
    assert math.log(float(z)) == pytest.approx(energy.log_partition_function(temperature), abs=1e-8)


def test_gaussian_mixture_is_normalised_and_samples_match():
    energy = GaussianMixtureEnergy.grid(n_per_side=3, spacing=4.0, std=0.7)
    t = torch.linspace(-9, 9, 601, dtype=torch.float64)
    xx, yy = torch.meshgrid(t, t, indexing="ij")
    pts = torch.stack([xx, yy], -1).reshape(-1, 1, 2)
    density = torch.exp(-energy(pts) / energy.kt).reshape(601, 601)
    z = torch.trapezoid(torch.trapezoid(density, t), t)
    assert float(z) == pytest.approx(1.0, abs=1e-6)
    samples = energy.sample(20000, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (20000, 1, 2)
    assert samples.reshape(-1, 2).var(0).numpy() == pytest.approx(2 / 3 * 16 + 0.49, rel=0.05)


def test_bad_input_is_refused():
    energy = LennardJonesClusterEnergy.lj13()
    with pytest.raises(ValueError, match="shape"):
        energy(torch.zeros(13, 2))
    with pytest.raises(ValueError, match="particles"):
        energy(torch.zeros(12, 3))
    x = torch.zeros(13, 3)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        energy(x)
    with pytest.raises(ValueError, match="positive"):
        HarmonicEnergy(np.zeros((2, 3)), -1.0)
    with pytest.raises(ValueError, match="reduced form"):
        energy(torch.rand(13, 3), box=torch.tensor([[1.0, 0.5, 0], [0, 1, 0], [0, 0, 1]]))
