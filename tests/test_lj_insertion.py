"""LJ solute in an LJ fluid: the torch energies against OpenMM, exact soft-core endpoints of u_θ, and the insertion
free energy by three independent estimators (neural TI, MBAR over a soft-core ladder, Widom insertion)."""
import dataclasses

import numpy as np
import pytest
import torch

from molfree import units
from molfree.freeenergy import lj_insertion as lji
from molfree.freeenergy import solute_ti
from molfree.freeenergy.alchemy import LAMBDA_STERICS
from molfree.freeenergy.solute_environment import SoluteEnvironment

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


def test_solute_environment_and_learned_path_on_the_lj_fluid(states):
    """The solute–environment LJ of :mod:`solute_ti` (built from the OpenMM System) equals this module's coupling at
    every s; u_θ has exact endpoints for any schedule and network, and a finite ∂u_θ/∂λ at λ → 0 even for a
    solute on top of a solvent particle (where linear coupling diverges)."""
    x = torch.cat([states[0].positions[:4], states[-1].positions[:4]])
    environment = SoluteEnvironment(CI.openmm_system(alchemical=False), [lji.SOLUTE], x[:, lji.SOLUTE + 1:])
    frames, solute = torch.arange(x.shape[0]), x[:, lji.SOLUTE:lji.SOLUTE + 1]
    kt = units.kT(CI.temperature)
    for s in (0.0, 0.3, 1.0):
        torch.testing.assert_close(environment.lennard_jones(frames, solute, s) / kt, CI.coupling()(x, s),
                                   rtol=1e-12, atol=1e-12)
    torch.manual_seed(0)
    potential = solute_ti.lambda_potential(environment, CI.temperature, correction_cutoff=CI.cutoff)
    with torch.no_grad():
        potential.schedule.raw.copy_(torch.linspace(-1, 1, potential.schedule.raw.numel(), dtype=torch.float64))
    y = solute_ti.pack(frames, solute)
    torch.testing.assert_close(potential.excess(y, 0.0), torch.zeros(x.shape[0], dtype=torch.float64))
    torch.testing.assert_close(potential.excess(y, 1.0), CI.coupling()(x, 1.0), rtol=1e-12, atol=1e-12)
    overlapping = solute_ti.pack(frames[:1], x[:1, lji.SOLUTE + 1:lji.SOLUTE + 2] + 1e-3)
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


def test_neural_ti_mbar_and_widom_agree_within_a_tenth_kt(states):
    """βμ_ex of the CI system (32 + 1, ρ* = 0.5, T* = 2) three independent ways agree within 0.1 kT and their error
    bars: neural TI from 100 coupled samples (300 training steps, per-sample TI of the solute), MBAR over the
    9-state soft-core ladder, and Widom insertion into the λ = 0 samples (100 insertions per frame)."""
    coupled = dataclasses.replace(states[-1], positions=states[-1].positions[:100], moves=states[-1].moves // 5)
    neural, _ = lji.neural_ti(CI, coupled, seed=0)
    agree({"neural TI": neural, "MBAR": lji.mbar_ladder(CI, states),
           "Widom": lji.widom(CI, states[0], insertions_per_frame=100, seed=1)})
