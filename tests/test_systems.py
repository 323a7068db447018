"""Every system loads consistently; independent implementations of the toy energies agree."""
from __future__ import annotations

import functools

import numpy as np
import openmm
import pytest
import torch

from molfree import systems, units
from molfree.energies.analytic import DoubleWellEnergy, LennardJonesClusterEnergy
from molfree.energies.openmm_energy import OpenMMEnergy


@functools.cache
def load(name: str) -> systems.System:
    return systems.load(name)


def energy_positions(system: systems.System) -> torch.Tensor:
    """The system's positions in the layout its energy takes (planar systems drop z)."""
    return torch.tensor(system.positions[:, : system.energy.dim])


def box_tensor(system: systems.System):
    return None if system.box is None else torch.tensor(system.box)


def test_names_and_unknown_name():
    expected = {"alanine-dipeptide-vacuum", "alanine-dipeptide-implicit", "water-box", "methane-in-water",
                "lj-fluid", "lj13", "lj55", "dw4", "lj-fcc", "nacl-rocksalt"}
    assert set(systems.names()) == expected
    with pytest.raises(ValueError, match="lj13"):
        systems.load("no-such-system")


@pytest.mark.parametrize("name", systems.names())
def test_system_is_consistent(name):
    s = load(name)
    n = s.positions.shape[0]
    assert s.name == name
    assert s.topology.getNumAtoms() == s.system.getNumParticles() == n == s.n_atoms
    assert s.positions.shape == (n, 3) and s.positions.dtype == np.float64
    assert s.temperature > 0 and len(s.description) > 40
    assert (s.box is not None) == s.system.usesPeriodicBoundaryConditions()
    energy = s.energy(energy_positions(s), box_tensor(s))
    assert energy.ndim == 0 and torch.isfinite(energy)
    atoms = s.to_ase()
    assert len(atoms) == n
    np.testing.assert_allclose(atoms.positions, s.positions * units.NM_TO_ANGSTROM)
    np.testing.assert_allclose(atoms.get_masses(), s.masses())
    assert all(atoms.pbc) == (s.box is not None)
    if s.box is not None:
        np.testing.assert_allclose(atoms.cell[:], s.box * units.NM_TO_ANGSTROM)
        assert s.box[0, 0] > 0 and np.allclose(s.box, np.triu(s.box.T).T)
    traj = s.to_mdtraj()
    assert traj.n_atoms == n


def forces_of(system, kind):
    return [f for f in system.getForces() if isinstance(f, kind)]


def test_alanine_dipeptide_implicit_setup():
    s = load("alanine-dipeptide-implicit")
    assert s.system.getNumConstraints() == 0
    assert len(forces_of(s.system, openmm.CustomGBForce)) == 1
    assert not forces_of(s.system, openmm.GBSAOBCForce)
    assert forces_of(s.system, openmm.NonbondedForce)[0].getNonbondedMethod() == openmm.NonbondedForce.NoCutoff
    for word in ("amber96", "OBC1", "no constraints", "NoCutoff"):
        assert word in s.description
    # openmmtools 0.27 AlanineDipeptideImplicit(constraints=None) (amber96 prmtop, OBC1) at these
    # positions (same atom order) gives -162.11341 kJ/mol; the last digits differ by the prmtop's
    # rounded charges.
    assert s.energy(s.positions).item() == pytest.approx(-162.11341, abs=1e-3)


def test_alanine_dipeptide_vacuum_setup():
    s = load("alanine-dipeptide-vacuum")
    assert s.system.getNumConstraints() == 0
    assert not forces_of(s.system, openmm.CustomGBForce)
    assert [r.name for r in s.topology.residues()] == ["ACE", "ALA", "NME"]
    assert "no constraints" in s.description and "amber14" in s.description.lower()


@pytest.mark.parametrize("name, analytic", [("lj13", LennardJonesClusterEnergy.lj13),
                                            ("lj55", LennardJonesClusterEnergy.lj55),
                                            ("dw4", DoubleWellEnergy.dw4)])
def test_openmm_system_equals_analytic_energy(name, analytic):
    s = load(name)
    assert isinstance(s.energy, type(analytic()))
    rng = np.random.default_rng(7)
    x = s.positions[None] + 0.1 * rng.standard_normal((5, *s.positions.shape)) + rng.standard_normal((5, 1, 3))
    if s.energy.dim == 2:
        x[..., 2] = 0.0
    e_mm, f_mm = OpenMMEnergy(s.system).energy_and_forces(torch.tensor(x))
    e_an, f_an = analytic().energy_and_forces(torch.tensor(x[..., : s.energy.dim]))
    torch.testing.assert_close(e_mm, e_an, rtol=1e-9, atol=1e-8)
    torch.testing.assert_close(f_mm[..., : s.energy.dim], f_an, rtol=1e-7, atol=1e-7)
    assert torch.all(f_mm[..., s.energy.dim:] == 0)


def test_lj_cluster_starts_from_mackay_icosahedron():
    for name, n in (("lj13", 13), ("lj55", 55)):
        x = load(name).positions
        assert len(np.unique(np.round(x, 6), axis=0)) == n
        np.testing.assert_allclose(x.mean(0), 0, atol=1e-12)
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)[np.triu_indices(n, 1)]
        assert 0.95 < d.min() <= 1.0 + 1e-9


def truncated_lj(positions, box, cutoff):
    """Minimum-image LJ (σ = ε = 1) truncated at ``cutoff`` for a cubic box; numpy reference."""
    d = positions[:, None] - positions[None]
    d -= box * np.round(d / box)
    r = np.linalg.norm(d, axis=-1)[np.triu_indices(len(positions), 1)]
    r = r[r < cutoff]
    return float(np.sum(4 * (r**-12 - r**-6)))


@pytest.mark.parametrize("name", ["lj-fluid", "lj-fcc"])
def test_periodic_lj_matches_numpy(name):
    s = load(name)
    box = s.box[0, 0]
    np.testing.assert_allclose(s.box, np.eye(3) * box)
    assert s.energy(s.positions, s.box).item() == pytest.approx(truncated_lj(s.positions, box, 2.5), rel=1e-9)


def test_lj_fluid_options():
    s = systems.load("lj-fluid", n_particles=100, density=0.5, reduced_temperature=2.0)
    assert s.n_atoms == 100
    assert 100 / np.linalg.det(s.box) == pytest.approx(0.5)
    assert s.temperature == pytest.approx(2.0 * units.REDUCED_TEMPERATURE)
    assert units.kT(s.temperature) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="cutoff"):
        systems.load("lj-fluid", n_particles=32, density=0.8)


def test_lj_fcc_nearest_neighbours():
    s = load("lj-fcc")
    assert s.n_atoms == 256
    d = s.positions[1:] - s.positions[0]
    d -= s.box[0, 0] * np.round(d / s.box[0, 0])
    r = np.linalg.norm(d, axis=-1)
    assert r.min() == pytest.approx(2 ** (1 / 6))
    assert np.sum(np.isclose(r, 2 ** (1 / 6))) == 12


def test_nacl_madelung_energy():
    s = load("nacl-rocksalt")
    nonbonded = forces_of(s.system, openmm.NonbondedForce)[0]
    charges = [nonbonded.getParticleParameters(i)[0]._value for i in range(s.n_atoms)]
    assert sorted(set(charges)) == [-1.0, 1.0] and sum(charges) == 0
    coulomb = openmm.XmlSerializer.clone(s.system)
    nb = forces_of(coulomb, openmm.NonbondedForce)[0]
    for i, q in enumerate(charges):
        nb.setParticleParameters(i, q, 1.0, 0.0)
    nb.setUseDispersionCorrection(False)
    madelung = 1.747564594633
    expected = -(s.n_atoms / 2) * madelung * units.ONE_4PI_EPS0 / (0.5 * 0.564)
    assert OpenMMEnergy(coulomb)(s.positions, s.box).item() == pytest.approx(expected, rel=1e-3)


def test_solvated_systems():
    water = load("water-box")
    methane = load("methane-in-water")
    for s in (water, methane):
        residues = [r.name for r in s.topology.residues()]
        assert residues.count("HOH") * 3 + 5 * residues.count("CH4") == s.n_atoms
        np.testing.assert_allclose(s.box, np.eye(3) * 2.5)
        nonbonded = forces_of(s.system, openmm.NonbondedForce)[0]
        assert nonbonded.getNonbondedMethod() == openmm.NonbondedForce.PME
        assert nonbonded.getCutoffDistance()._value == pytest.approx(0.9)
        assert "TIP3P" in s.description and "PME" in s.description
        n_water = residues.count("HOH")
        assert -50 * n_water < s.energy(s.positions, s.box).item() < -35 * n_water
    assert [r.name for r in methane.topology.residues()].count("CH4") == 1
    nonbonded = forces_of(methane.system, openmm.NonbondedForce)[0]
    assert sum(nonbonded.getParticleParameters(i)[0]._value for i in range(5)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="cutoff"):
        systems.load("water-box", size=1.6)


def test_dw4_layout():
    s = load("dw4")
    assert s.energy.dim == 2
    assert np.all(s.positions[:, 2] == 0)
    assert units.kT(s.temperature) == pytest.approx(1.0)
