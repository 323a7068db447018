"""LJ solute in an LJ fluid: the torch energies against OpenMM, exact soft-core endpoints of u_θ, and the insertion
free energy by three independent estimators (neural TI, MBAR over a soft-core ladder, Widom insertion)."""
import numpy as np
import pytest
import torch

from molfree import units
from molfree.freeenergy import lj_insertion as lji
from molfree.freeenergy.alchemy import LAMBDA_STERICS

torch.set_num_threads(1)
CI = lji.LJInsertion(n_solvent=32, density=0.5, reduced_temperature=2.0, cutoff=1.9)


@pytest.fixture(scope="module")
def states():
    """Independent MC samples on a 9-state λ_sterics ladder of the CI system."""
    return lji.ladder(CI, np.linspace(0, 1, 9), n_samples=500, sweeps=100, sweeps_per_state=25, seed=7)


def test_torch_energies_match_openmm_and_single_particle_moves(states):
    """u₀ + c(x, λ) equals the alchemical OpenMM System's energy / kT; particle_energy gives exact MC differences."""
    import openmm
    from openmm import unit

    x = states[4].positions[:3]
    context = openmm.Context(CI.openmm_system(), openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    coupling = CI.coupling()
    for lam in (0.0, 0.37, 1.0):
        context.setParameter(LAMBDA_STERICS, lam)
        for frame in x:
            context.setPositions(frame.numpy() * unit.nanometer)
            energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            torch_energy = float(CI.solvent_energy(frame[None]) + coupling(frame[None], lam))
            assert energy / units.kT(CI.temperature) == pytest.approx(torch_energy, rel=1e-9, abs=1e-9)
        for k in (lji.SOLUTE, 5):
            moved = x.clone()
            moved[:, k] = (moved[:, k] + 0.31) % CI.box_length
            total = (CI.solvent_energy(moved) + coupling(moved, lam)) - (CI.solvent_energy(x) + coupling(x, lam))
            local = CI.particle_energy(x, k, moved[:, k], lam) - CI.particle_energy(x, k, x[:, k], lam)
            torch.testing.assert_close(local, total, rtol=1e-9, atol=1e-9)


def test_softcore_lambda_potential_has_exact_endpoints_and_finite_dudl(states):
    """u_θ(·, 0) = u₀ and u_θ(·, 1) = u₁ with any schedule and network; ∂u_θ/∂λ by autograd = finite differences,
    and stays finite at λ → 0 even for an overlapping solute (where linear coupling diverges)."""
    torch.manual_seed(0)
    potential = lji.lambda_potential(CI)
    with torch.no_grad():
        potential.schedule.raw.copy_(torch.linspace(-1, 1, potential.schedule.raw.numel(), dtype=torch.float64))
    x = torch.cat([states[0].positions[:4], states[-1].positions[:4]])
    torch.testing.assert_close(potential(x, 0.0), CI.solvent_energy(x), rtol=0, atol=0)
    torch.testing.assert_close(potential(x, 1.0), CI.coupled_energy(x), rtol=1e-12, atol=1e-12)
    for lam in (0.1, 0.5, 0.9):
        fd = (potential(x, lam + 1e-6) - potential(x, lam - 1e-6)) / 2e-6
        torch.testing.assert_close(potential.dudl(x, lam), fd, rtol=1e-5, atol=1e-5)
    overlapping = x[:1].clone()
    overlapping[:, lji.SOLUTE] = overlapping[:, lji.SOLUTE + 1] + 1e-3
    assert torch.isfinite(potential.dudl(overlapping, 1e-4)).all()


def agree(results: dict) -> None:
    """Every pair of estimates within 0.1 kT and within 3 combined standard errors; each error below 0.06 kT."""
    for name, result in results.items():
        print(f"{name:9s} ΔF = {result.delta_f:.4f} ± {result.error:.4f} kT, "
              f"{result.details['energy_evaluations']} energy evaluations, {result.details['wall_seconds']:.1f} s")
        assert 0 < result.error < 0.06, name
    names = list(results)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            difference = abs(results[a].delta_f - results[b].delta_f)
            assert difference <= 0.1, (a, b, difference)
            assert difference <= 3 * np.hypot(results[a].error, results[b].error), (a, b, difference)


def test_mbar_and_widom_agree_within_a_tenth_kt(states):
    """βμ_ex of the CI system (32 + 1, ρ* = 0.5, T* = 2): MBAR over the 9-state soft-core ladder and Widom
    insertion into the λ = 0 samples (100 insertions per frame) agree within 0.1 kT and their error bars."""
    agree({"MBAR": lji.mbar_ladder(CI, states), "Widom": lji.widom(CI, states[0], insertions_per_frame=100, seed=1)})

