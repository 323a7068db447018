"""Umbrella sampling along a torsion of a four-atom chain: windows sample their exact biased distributions,
and MBAR unbiasing recovers the exact torsion free energy."""
import numpy as np
import openmm
import pytest

from molfree import units
from molfree.freeenergy import PoorOverlapError
from molfree.freeenergy.umbrella import torsion, torsion_umbrella, unbiased_log_weights, wrapped

TEMPERATURE = 300.0
BARRIER = 12.0  # kJ/mol: 2·BARRIER ≈ 10 kT at θ = 0 and ±π, rarely crossed by plain MD


def torsion_energy(theta: np.ndarray) -> np.ndarray:
    """kJ/mol: two periodic terms, so the θ > 0 and θ < 0 halves have different free energies."""
    return BARRIER * (1 + np.cos(2 * theta)) + 3.0 * (1 + np.cos(theta - 0.5))


def chain() -> tuple[openmm.System, np.ndarray]:
    """Four 12 Da atoms, stiff harmonic bonds (0.15 nm) and angles (110°), and :func:`torsion_energy`.

    With bonds and angles as the other internal coordinates the Jacobian does not depend on θ, so the
    marginal of θ is exactly ∝ exp(−torsion_energy/kT).
    """
    system = openmm.System()
    for _ in range(4):
        system.addParticle(12.0)
    bonds = openmm.HarmonicBondForce()
    angles = openmm.HarmonicAngleForce()
    torsions = openmm.PeriodicTorsionForce()
    for i in range(3):
        bonds.addBond(i, i + 1, 0.15, 2e5)
    for i in range(2):
        angles.addAngle(i, i + 1, i + 2, np.deg2rad(110), 400.0)
    torsions.addTorsion(0, 1, 2, 3, 2, 0.0, BARRIER)
    torsions.addTorsion(0, 1, 2, 3, 1, 0.5, 3.0)
    for force in (bonds, angles, torsions):
        system.addForce(force)
    a = np.deg2rad(70)
    positions = np.array([[0.15 * np.cos(a), 0.15 * np.sin(a), 0.0], [0, 0, 0], [0.15, 0, 0],
                          [0.15 + 0.15 * np.cos(a), -0.15 * np.sin(a), 0.01]])
    return system, positions


def test_torsion_matches_openmm_convention():
    system, positions = chain()
    force = openmm.CustomTorsionForce("theta")
    force.addTorsion(0, 1, 2, 3)
    probe = openmm.System()
    for _ in range(4):
        probe.addParticle(1.0)
    probe.addForce(force)
    context = openmm.Context(probe, openmm.VerletIntegrator(1.0), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    theta = context.getState(getEnergy=True).getPotentialEnergy()._value
    assert torsion(positions[None], [0, 1, 2, 3])[0] == pytest.approx(theta, abs=1e-12)


def biased_density(grid: np.ndarray, centre: float, k: float) -> np.ndarray:
    """Normalised exact θ density on ``grid`` in the window ``centre`` (rad) with force constant ``k``."""
    p = np.exp(-(torsion_energy(grid) + 0.5 * k * wrapped(grid - centre) ** 2) / units.kT(TEMPERATURE))
    return p / p.sum()


def test_umbrella_windows_sample_their_biased_distributions(one_thread):
    system, positions = chain()
    centres = np.linspace(-np.pi, np.pi, 12, endpoint=False)
    k = 60.0
    samples = torsion_umbrella(system, positions, [0, 1, 2, 3], centres, k, TEMPERATURE, timestep_fs=1.0,
                               equilibration_ps=1.0, production_ps=6.0, frame_ps=0.02, seed=3, keep_positions=True,
                               progress=False)
    theta = samples.theta
    assert theta.shape == (12, 300) and samples.positions.shape == (12, 300, 4, 3)
    assert 0.1 < samples.exchange_acceptance < 1
    assert np.allclose(torsion(samples.positions[5], [0, 1, 2, 3]), theta[5], atol=1e-5)
    grid = np.linspace(-np.pi, np.pi, 20_001)
    for centre, sampled in zip(centres, theta):
        p = biased_density(grid, centre, k)
        exact_mean, exact_spread = np.angle((p * np.exp(1j * grid)).sum()), np.abs((p * np.exp(1j * grid)).sum())
        z = np.exp(1j * sampled).mean()
        assert abs(wrapped(np.angle(z) - exact_mean)) < 0.05, centre
        assert abs(np.abs(z) - exact_spread) < 0.05, centre
    log_w = samples.log_weights()
    assert log_w.shape == (theta.size,) and np.exp(log_w).sum() == pytest.approx(1.0)
    assert np.allclose(log_w, unbiased_log_weights(theta, centres, k, TEMPERATURE))


def test_unbiased_log_weights_recover_the_exact_torsion_free_energy():
    """Exact window samples (inverse CDF) isolate the MBAR unbiasing from MD sampling error: with 12 windows of
    20,000 samples the half-circle ΔF has a statistical error of about 0.03 kT."""
    rng = np.random.default_rng(0)
    centres = np.linspace(-np.pi, np.pi, 12, endpoint=False)
    k = 60.0
    grid = np.linspace(-np.pi, np.pi, 200_001)
    theta = np.stack([np.interp(rng.random(20_000), np.cumsum(biased_density(grid, c, k)), grid) for c in centres])
    w = np.exp(unbiased_log_weights(theta, centres, k, TEMPERATURE))
    plus = w[theta.reshape(-1) > 0].sum()
    density = np.exp(-torsion_energy(grid) / units.kT(TEMPERATURE))
    exact = -np.log(density[grid > 0].sum() / density[grid < 0].sum())
    assert -np.log(plus / (1 - plus)) == pytest.approx(exact, abs=0.1)


def test_unbiased_log_weights_errors():
    centres = np.linspace(-np.pi, np.pi, 4, endpoint=False)
    with pytest.raises(ValueError, match="windows"):
        unbiased_log_weights(np.zeros((3, 10)), centres, 100.0, TEMPERATURE)
    far_apart = np.stack([np.full(50, c) + 0.01 * np.random.default_rng(0).standard_normal(50) for c in centres])
    with pytest.raises(PoorOverlapError):
        unbiased_log_weights(far_apart, centres, 5000.0, TEMPERATURE)


def test_torsion_umbrella_bad_arguments():
    system, positions = chain()
    with pytest.raises(ValueError, match="centres"):
        torsion_umbrella(system, positions, [0, 1, 2, 3], [0.0], 100.0, TEMPERATURE)
    with pytest.raises(ValueError, match="positive"):
        torsion_umbrella(system, positions, [0, 1, 2, 3], [0.0, 1.0], 100.0, TEMPERATURE, production_ps=0)
    with pytest.raises(ValueError, match="exchange_ps"):
        torsion_umbrella(system, positions, [0, 1, 2, 3], [0.0, 1.0], 100.0, TEMPERATURE, exchange_ps=0.01)
    plain = torsion_umbrella(system, positions, [0, 1, 2, 3], [0.0, np.pi], 100.0, TEMPERATURE, equilibration_ps=0.1,
                             production_ps=0.2, exchange_ps=None, progress=False)
    assert plain.theta.shape == (2, 4) and plain.exchange_acceptance is None
