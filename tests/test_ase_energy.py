"""ASEEnergy: units, box handling, forces, with ASE's LennardJones and tblite GFN2-xTB."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.lj import LennardJones

from molfree import systems, units
from molfree.energies.analytic import LennardJonesClusterEnergy
from molfree.energies.ase_energy import ASEEnergy

SIGMA_NM = 0.34
EPSILON_KJ = 0.997


def lj_calculator(**kwargs):
    """ASE LJ (Å, eV) with the parameters of SIGMA_NM / EPSILON_KJ; cutoff 1 µm, so its energy shift is negligible."""
    return LennardJones(sigma=SIGMA_NM * units.NM_TO_ANGSTROM, epsilon=EPSILON_KJ * units.KJ_PER_MOL_TO_EV,
                        rc=1e4, smooth=False, **kwargs)


def cluster(n=7, seed=3):
    """Random non-overlapping cluster positions ``[n, 3]`` in nm."""
    rng = np.random.default_rng(seed)
    points = [np.zeros(3)]
    while len(points) < n:
        p = rng.uniform(-0.6, 0.6, 3)
        if min(np.linalg.norm(p - q) for q in points) > 0.33:
            points.append(p)
    return np.array(points)


def test_lennard_jones_matches_analytic_energy_and_forces():
    x0 = cluster()
    atoms = Atoms("Ar7", positions=x0 * units.NM_TO_ANGSTROM)
    energy = ASEEnergy(lj_calculator(), atoms)
    x = torch.tensor(x0[None] + 0.01 * np.random.default_rng(0).standard_normal((3, 7, 3)))
    e, f = energy.energy_and_forces(x)
    reference = LennardJonesClusterEnergy(7, epsilon=EPSILON_KJ, sigma=SIGMA_NM)
    e_ref, f_ref = reference.energy_and_forces(x)
    torch.testing.assert_close(e, e_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(f, f_ref, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(atoms.positions, x0 * units.NM_TO_ANGSTROM)  # template untouched
    assert atoms.calc is None


def test_box_overrides_template_cell():
    s = systems.load("lj-fcc", cells=2, cutoff=1.5)
    atoms = s.to_ase()
    energy = ASEEnergy(LennardJones(sigma=units.NM_TO_ANGSTROM, epsilon=units.KJ_PER_MOL_TO_EV,
                                    rc=1.5 * units.NM_TO_ANGSTROM, smooth=False), atoms)
    scaled_box = s.box * 1.05
    x = np.stack([s.positions, s.positions * 1.05])
    e = energy(torch.tensor(x), torch.tensor(np.stack([s.box, scaled_box])))
    direct = atoms.copy()
    direct.calc = energy.calculator
    direct.set_cell(scaled_box * units.NM_TO_ANGSTROM, scale_atoms=True)
    assert e[1].item() == pytest.approx(direct.get_potential_energy() * units.EV_TO_KJ_PER_MOL, rel=1e-12)
    assert e[0].item() == pytest.approx(energy(s.positions).item(), rel=1e-12)  # template cell = s.box
    np.testing.assert_allclose(atoms.cell[:], s.box * units.NM_TO_ANGSTROM)


def test_gradient_is_minus_force_float32():
    x0 = cluster()
    energy = ASEEnergy(lj_calculator(), Atoms("Ar7", positions=x0 * units.NM_TO_ANGSTROM))
    x = torch.tensor(x0, dtype=torch.float32, requires_grad=True)
    e = energy(x)
    assert e.dtype == torch.float32
    (grad,) = torch.autograd.grad(e, x)
    torch.testing.assert_close(grad, -energy.forces(torch.tensor(x0)).float())


@pytest.fixture(scope="module")
def xtb():
    tblite_ase = pytest.importorskip("tblite.ase")
    atoms = systems.load("alanine-dipeptide-vacuum").to_ase()
    return ASEEnergy(tblite_ase.TBLite(method="GFN2-xTB", verbosity=0), atoms), atoms


def test_tblite_units_against_direct_call(xtb):
    energy, atoms = xtb
    assert units.EV_TO_KJ_PER_MOL == pytest.approx(96.485332, rel=1e-7)
    x = atoms.positions * units.ANGSTROM_TO_NM
    e, f = energy.energy_and_forces(torch.tensor(x))
    direct = atoms.copy()
    direct.calc = energy.calculator
    e_ev, f_ev = direct.get_potential_energy(), direct.get_forces()
    assert np.isfinite(e.item())
    assert e.item() == pytest.approx(e_ev * units.EV_TO_KJ_PER_MOL, rel=1e-10)
    np.testing.assert_allclose(f.numpy(), f_ev * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM, rtol=1e-8, atol=1e-6)


def test_tblite_forces_match_finite_differences(xtb):
    energy, atoms = xtb
    x = torch.tensor(atoms.positions * units.ANGSTROM_TO_NM)
    forces = energy.forces(x)
    h = 1e-4  # nm
    for atom, axis in [(1, 0), (8, 2)]:
        step = torch.zeros_like(x)
        step[atom, axis] = h
        fd = (energy(x + step) - energy(x - step)).item() / (2 * h)
        assert -fd == pytest.approx(forces[atom, axis].item(), rel=1e-3, abs=0.5)
