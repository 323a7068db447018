"""Free-energy estimators against exact answers: Gaussians, harmonic switching, an Einstein crystal."""
import numpy as np
import pytest
import torch

from molfree import freeenergy as fe
from molfree import units
from molfree.energies.analytic import HarmonicEnergy

D = 3
SIGMA0, SIGMA1, MU, OFFSET = 1.0, 0.8, 0.3, 0.7
EXACT = -D * np.log(SIGMA1 / SIGMA0) + OFFSET  # F1 - F0 in kT


def u0(x):
    return 0.5 * np.sum(x**2, -1) / SIGMA0**2


def u1(x):
    return 0.5 * np.sum((x - MU) ** 2, -1) / SIGMA1**2 + OFFSET


def samples(state, n, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, SIGMA0, (n, D)) if state == 0 else rng.normal(MU, SIGMA1, (n, D))


def within(result, exact, tol=0.02):
    assert abs(result.delta_f - exact) <= max(3 * result.error, 1e-12), (result, exact)
    assert abs(result.delta_f - exact) <= tol, (result, exact)
    assert 0 < result.error < 0.05


def test_exp_forward_and_reverse():
    x0, x1 = samples(0, 40000, 1), samples(1, 40000, 2)
    within(fe.exp(u1(x0) - u0(x0)), EXACT)
    within(fe.exp(u0(x1) - u1(x1), direction="reverse"), EXACT)


def test_bar():
    x0, x1 = samples(0, 20000, 3), samples(1, 20000, 4)
    within(fe.bar(u1(x0) - u0(x0), u0(x1) - u1(x1)), EXACT)


def interpolated_state(lam):
    """Exact distribution of u_λ = (1−λ)u0 + λu1: Gaussian with combined precision."""
    precision = (1 - lam) / SIGMA0**2 + lam / SIGMA1**2
    mean = lam * MU / SIGMA1**2 / precision
    return mean, precision**-0.5


def test_mbar_on_interpolated_gaussians():
    lambdas = np.linspace(0, 1, 5)
    rng = np.random.default_rng(5)
    xs = [rng.normal(*interpolated_state(lam), (4000, D)) for lam in lambdas]
    x = np.concatenate(xs)
    u_kn = np.stack([(1 - lam) * u0(x) + lam * u1(x) for lam in lambdas])
    result = fe.mbar(u_kn, [4000] * 5)
    within(result.total, EXACT)
    assert result.overlap.shape == (5, 5)
    assert np.allclose(result.overlap.sum(1), 1.0)
    assert result.delta_f[0, -1] == pytest.approx(-result.delta_f[-1, 0])


@pytest.mark.parametrize("method,k", [("trapezoid", 21), ("simpson", 11), ("gauss-legendre", 6)])
def test_ti_quadratures(method, k):
    lambdas = fe.gauss_legendre_lambdas(k) if method == "gauss-legendre" else np.linspace(0, 1, k)
    rng = np.random.default_rng(6)
    dudl = []
    for lam in lambdas:
        x = rng.normal(*interpolated_state(lam), (6000, D))
        dudl.append(u1(x) - u0(x))
    within(fe.ti(lambdas, dudl, method=method, decorrelate=False), EXACT, tol=0.03 if method == "trapezoid" else 0.02)


def test_jarzynski_harmonic_switching():
    """Switch u = x²/(2σ(t)²) from σ0 to σ1 in steps, relaxing with an exact Ornstein-Uhlenbeck kernel."""
    rng = np.random.default_rng(7)
    n, steps, a = 20000, 20, 0.5
    sigmas = np.linspace(SIGMA0, SIGMA1, steps + 1)
    x = rng.normal(0, SIGMA0, (n, D))
    work = np.zeros(n)
    for s in range(steps):
        work += 0.5 * np.sum(x**2, -1) * (1 / sigmas[s + 1] ** 2 - 1 / sigmas[s] ** 2)
        x = a * x + np.sqrt(1 - a**2) * sigmas[s + 1] * rng.standard_normal((n, D))
    exact = -D * np.log(SIGMA1 / SIGMA0)
    result = fe.jarzynski(work)
    within(result, exact)
    assert result.details["mean_work"] >= exact  # second law


def test_einstein_crystal_mbar_across_spring_constants():
    """Harmonic wells (molfree.HarmonicEnergy) with k from 500 to 2000 kJ/mol/nm²: ΔF from log Z."""
    temperature, n_atoms = 300.0, 4
    springs = np.geomspace(500.0, 2000.0, 7)
    centers = np.random.default_rng(8).uniform(0, 1, (n_atoms, 3))
    energies = [HarmonicEnergy(centers, k) for k in springs]
    rng = np.random.default_rng(9)
    xs = []
    for e in energies:
        std = np.sqrt(units.kT(temperature) / float(e.spring_constant[0]))
        xs.append(centers + rng.normal(0, std, (6000, n_atoms, 3)))
    x = torch.tensor(np.concatenate(xs))
    u_kn = np.stack([e.reduced(x, temperature=temperature).numpy() for e in energies])
    result = fe.mbar(u_kn, [6000] * len(springs))
    exact = -(energies[-1].log_partition_function(temperature) - energies[0].log_partition_function(temperature))
    within(result.total, exact)


def test_bad_input():
    x0 = samples(0, 100, 10)
    x_far = np.concatenate([x0, x0 + 50])
    u_far = np.stack([u0(x_far), 0.5 * np.sum((x_far - 50) ** 2, -1)])
    with pytest.raises(fe.PoorOverlapError, match="poor overlap"):
        fe.mbar(u_far, [100, 100])
    with pytest.raises(ValueError, match="NaN"):
        fe.exp(np.array([0.1, np.nan, 0.3]))
    with pytest.raises(ValueError, match="NaN"):
        fe.mbar(np.array([[0.0, np.nan, 1.0], [0.5, 0.2, 0.1]]), [2, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fe.ti([0.0, 0.5, 1.2], [np.ones(5)] * 3)
    with pytest.raises(ValueError, match="Gauss-Legendre"):
        fe.ti([0.0, 0.5, 1.0], [np.ones(5)] * 3, method="gauss-legendre")
    with pytest.raises(ValueError, match="direction"):
        fe.exp(np.ones(4), direction="sideways")
    with pytest.raises(ValueError, match="u_kn"):
        fe.mbar(np.zeros((2, 10)), [4, 4])


def test_decorrelation_of_correlated_and_constant_series():
    """An AR(1) series (statistical inefficiency (1 + φ)/(1 − φ) = 19) is thinned about 19-fold; a constant one
    (the gas leg of a rigid solute: u = 0 at every λ) keeps every sample and gives ΔF = 0."""
    from molfree.freeenergy.hydration import analyse_u_kln
    from molfree.freeenergy.timeseries import decorrelate

    rng = np.random.default_rng(0)
    noise = rng.normal(size=40_000)
    x = np.zeros_like(noise)
    for t in range(1, x.size):
        x[t] = 0.9 * x[t - 1] + noise[t]
    assert 12 < x.size / decorrelate(x).size < 28
    np.testing.assert_array_equal(decorrelate(np.full(50, 3.0)), np.arange(50))
    gas = analyse_u_kln(np.zeros((4, 4, 30)))
    assert gas.delta_f == 0.0 and gas.n_uncorrelated == 30
