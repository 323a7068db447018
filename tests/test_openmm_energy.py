"""OpenMMEnergy against direct OpenMM Context evaluations."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from molfree import systems
from molfree.energies.openmm_energy import OpenMMEnergy


@pytest.fixture(scope="module")
def alanine():
    return systems.load("alanine-dipeptide-vacuum")


@pytest.fixture(scope="module")
def water():
    return systems.load("water-box", size=2.0, relax_iterations=20)


def reference(system, positions, box=None):
    """Energy (kJ/mol) and forces (kJ/mol/nm) from a fresh Context, through openmm.unit."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    if box is not None:
        context.setPeriodicBoxVectors(*(openmm.Vec3(*row) * unit.nanometer for row in box))
    context.setPositions(positions * unit.nanometer)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def perturbed(positions, n, scale, seed=0):
    rng = np.random.default_rng(seed)
    return positions[None] + scale * rng.standard_normal((n, *positions.shape))


def test_batch_matches_context(alanine):
    x = perturbed(alanine.positions, 4, 0.005)
    energies, forces = alanine.energy.energy_and_forces(torch.tensor(x))
    for i in range(len(x)):
        e_ref, f_ref = reference(alanine.system, x[i])
        assert energies[i].item() == pytest.approx(e_ref, rel=1e-10, abs=1e-8)
        np.testing.assert_allclose(forces[i].numpy(), f_ref, rtol=1e-8, atol=1e-8)


def test_periodic_boxes_per_configuration(water):
    scales = np.array([0.98, 1.0, 1.03])
    x = water.positions[None] * scales[:, None, None]
    boxes = water.box[None] * scales[:, None, None]
    energies, forces = water.energy.energy_and_forces(torch.tensor(x), torch.tensor(boxes))
    assert len(set(energies.tolist())) == 3
    for i in range(len(x)):
        e_ref, f_ref = reference(water.system, x[i], boxes[i])
        assert energies[i].item() == pytest.approx(e_ref, rel=1e-9)
        np.testing.assert_allclose(forces[i].numpy(), f_ref, rtol=1e-7, atol=1e-6)


def test_gradient_is_minus_force_and_matches_finite_differences(alanine):
    x = torch.tensor(perturbed(alanine.positions, 1, 0.005, seed=1)[0], requires_grad=True)
    e = alanine.energy(x)
    (grad,) = torch.autograd.grad(2.5 * e, x)
    _, f_ref = reference(alanine.system, x.detach().numpy())
    np.testing.assert_allclose(grad.numpy(), -2.5 * f_ref, rtol=1e-10, atol=1e-8)
    h = 1e-6
    for atom, axis in [(1, 0), (8, 2), (15, 1)]:
        step = torch.zeros_like(x)
        step[atom, axis] = h
        fd = (alanine.energy(x.detach() + step) - alanine.energy(x.detach() - step)).item() / (2 * h)
        assert fd == pytest.approx(-f_ref[atom, axis], rel=1e-5, abs=1e-4)


def test_contexts_created_once_and_thread_pool(alanine, monkeypatch):
    created = []

    class CountingContext(openmm.Context):
        def __init__(self, *args):
            created.append(self)
            super().__init__(*args)

    monkeypatch.setattr(openmm, "Context", CountingContext)
    pooled = OpenMMEnergy(alanine.system, n_contexts=2)
    x = torch.tensor(perturbed(alanine.positions, 5, 0.005))
    results = [pooled(x) for _ in range(3)]
    assert len(created) == 2
    single = OpenMMEnergy(alanine.system)
    torch.testing.assert_close(results[0], single(x), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(results[2], results[0], rtol=0, atol=0)
    assert len(created) == 3


def test_pickle_and_copy_without_contexts(alanine):
    energy = OpenMMEnergy(alanine.system)
    x = torch.tensor(alanine.positions)
    e = energy(x)
    assert energy._contexts is not None
    for clone in (pickle.loads(pickle.dumps(energy)), copy.deepcopy(energy)):
        assert clone._contexts is None
        assert clone(x).item() == pytest.approx(e.item(), rel=1e-12)
    assert energy._contexts is not None


def test_float32_in_float32_out(alanine):
    x64 = torch.tensor(perturbed(alanine.positions, 2, 0.005))
    x32 = x64.float().requires_grad_(True)
    e32 = alanine.energy(x32)
    assert e32.dtype == torch.float32
    (grad,) = torch.autograd.grad(e32.sum(), x32)
    assert grad.dtype == torch.float32
    torch.testing.assert_close(e32.double(), alanine.energy(x64), rtol=1e-4, atol=1e-2)


def test_single_configuration_gives_scalar(alanine):
    e = alanine.energy(alanine.positions)
    assert e.ndim == 0
    assert e.item() == pytest.approx(reference(alanine.system, alanine.positions)[0], rel=1e-10)


def test_openmm_exception_gives_inf_and_zero_force(water):
    x = np.stack([water.positions, water.positions])
    boxes = np.stack([water.box, water.box * 0.85])  # 1.7 nm < twice the 0.9 nm cutoff: OpenMM raises
    energies, forces = water.energy.energy_and_forces(torch.tensor(x), torch.tensor(boxes))
    assert np.isfinite(energies[0].item())
    assert energies[1].item() == np.inf
    assert torch.all(forces[1] == 0)


def test_validation(alanine, water):
    n = alanine.n_atoms
    with pytest.raises(ValueError):
        alanine.energy(torch.zeros(2, n, 2, dtype=torch.float64))
    with pytest.raises(ValueError):
        alanine.energy(torch.zeros(2, n + 1, 3, dtype=torch.float64))
    bad = torch.tensor(alanine.positions).clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError):
        alanine.energy(bad)
    with pytest.raises(ValueError):
        alanine.energy(torch.tensor(alanine.positions), torch.eye(3, dtype=torch.float64) * 3)
    with pytest.raises(ValueError):
        water.energy(torch.tensor(water.positions))
    with pytest.raises(ValueError):
        OpenMMEnergy(alanine.system, n_contexts=0)
