"""OpenMM and ASE plugins of the equivariant potential: units, subsets, PBC, openmm-ml, dynamics, bad input."""
import copy
import pickle
from importlib import resources

import numpy as np
import openmm
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_stress
from openmm import app, unit

from molfree import units
from molfree.md import nve_energy_drift
from molfree.ase import MolfreeCalculator
from molfree.openmm import NeuralForce
from molfree.openmm.neuralforce import NeuralForceComputation
from molfree.potentials import EquivariantPotential
from molfree.potentials.evaluator import PotentialEvaluator

PERIODIC_SYMBOLS = ["C", "O", "N", "H"] * 3


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(energy_scale: float = 0.1, periodic_data: bool | None = True, seed: int = 0) -> EquivariantPotential:
    torch.manual_seed(seed)
    model = EquivariantPotential(["H", "C", "N", "O"], cutoff=0.4, channels=8, l_max=1, n_layers=2,
                                 radial_hidden=16).double()
    model.energy_scale.fill_(energy_scale)
    model.periodic_data = periodic_data
    return model


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def model_path(model, tmp_path_factory):
    return model.save(tmp_path_factory.mktemp("model") / "tiny.molfree")


@pytest.fixture(scope="module")
def alanine():
    """(topology, positions [22, 3] nm) of alanine dipeptide."""
    with resources.as_file(resources.files("molfree.data") / "alanine-dipeptide.pdb") as path:
        pdb = app.PDBFile(str(path))
    return pdb.topology, np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))


def periodic_system(symbols=PERIODIC_SYMBOLS, length=0.8, seed=1):
    """(topology, positions [N, 3] nm, box [3, 3] nm): atoms at least 0.15 nm apart in a cubic box."""
    rng = np.random.default_rng(seed)
    n = len(symbols)
    while True:
        x = rng.uniform(0, length, (n, 3))
        d = x[:, None] - x[None]
        d -= np.round(d / length) * length
        if (np.linalg.norm(d, axis=-1) + np.eye(n)).min() > 0.15:
            break
    box = np.eye(3) * length
    return topology_of(symbols, box), x, box


def topology_of(symbols, box=None) -> app.Topology:
    topology = app.Topology()
    chain = topology.addChain()
    for s in symbols:
        topology.addAtom(s, app.Element.getBySymbol(s), topology.addResidue("X", chain))
    if box is not None:
        topology.setPeriodicBoxVectors(box * unit.nanometer)
    return topology


def system_of(topology, *forces) -> openmm.System:
    system = openmm.System()
    if topology.getPeriodicBoxVectors() is not None:
        system.setDefaultPeriodicBoxVectors(*topology.getPeriodicBoxVectors())
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    for force in forces:
        system.addForce(force)
    return system


def openmm_energy_forces(system, positions, platform="Reference", parameters=None):
    """Energy (kJ/mol) and forces [N, 3] (kJ/mol/nm) of ``system`` at ``positions`` (virtual sites computed)."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    n_extra = system.getNumParticles() - len(positions)
    context.setPositions(np.concatenate([positions, np.zeros((n_extra, 3))]))
    context.computeVirtualSites()
    for name, value in (parameters or {}).items():
        context.setParameter(name, value)
    state = context.getState(energy=True, forces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def symbols_of(topology, atoms=None):
    symbols = [a.element.symbol for a in topology.atoms()]
    return symbols if atoms is None else [symbols[i] for i in atoms]


# ------------------------------------------------------------------------------------------------ agreement


def test_openmm_ase_and_model_agree(model, alanine):
    topology, x = alanine
    e_ref, f_ref = model.bind(symbols_of(topology)).energy_and_forces(torch.tensor(x))
    e_omm, f_omm = openmm_energy_forces(system_of(topology, NeuralForce(model, topology)), x)
    atoms = Atoms(symbols_of(topology), positions=x * units.NM_TO_ANGSTROM, calculator=MolfreeCalculator(model))
    e_ase = atoms.get_potential_energy() * units.EV_TO_KJ_PER_MOL
    f_ase = atoms.get_forces() * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM
    assert e_omm == pytest.approx(float(e_ref), rel=1e-10)
    assert e_ase == pytest.approx(float(e_ref), rel=1e-10)
    np.testing.assert_allclose(f_omm, f_ref.numpy(), atol=1e-9)
    np.testing.assert_allclose(f_ase, f_ref.numpy(), atol=1e-9)
    assert atoms.get_potential_energy() == atoms.get_total_energy() - atoms.get_kinetic_energy()
    assert atoms.calc.get_property("free_energy") == atoms.get_potential_energy()


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_simulation_on_platform(model, model_path, alanine, platform):
    topology, x = alanine
    system = system_of(topology, NeuralForce(model_path, topology, dtype=torch.float64))
    simulation = app.Simulation(topology, system, openmm.VerletIntegrator(0.0005),
                                openmm.Platform.getPlatformByName(platform))
    simulation.context.setPositions(x)
    e0 = simulation.context.getState(energy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    e_ref = float(model.bind(symbols_of(topology))(torch.tensor(x)).detach())
    assert e0 == pytest.approx(e_ref, rel=1e-5)  # the CPU platform rounds positions to float32
    simulation.step(5)
    state = simulation.context.getState(energy=True, positions=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert not np.allclose(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), x)


def test_computation_pickle_deepcopy_and_xml(model, model_path, alanine):
    topology, x = alanine
    numbers = [a.element.atomic_number for a in topology.atoms()]
    computation = NeuralForceComputation(model_path.read_bytes(), numbers, False, "cpu", torch.float64, 0.05)
    assert computation.evaluator is not None  # built, and must not travel with the pickle
    state = openmm_state(system_of(topology), x)
    expected = computation(state)
    for clone in (pickle.loads(pickle.dumps(computation)), copy.deepcopy(computation)):
        assert clone._evaluator is None
        energy, forces = clone(state)
        assert energy == expected[0]
        np.testing.assert_array_equal(forces, expected[1])
    force = NeuralForce(model, topology)
    restored = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(force))
    e_restored, _ = openmm_energy_forces(system_of(topology, restored), x)
    assert e_restored == pytest.approx(expected[0], rel=1e-12)


def openmm_state(system, positions):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context.getState(positions=True)


def test_ml_mm_subset(model, alanine):
    topology, x = alanine
    ml = [6, 7, 8, 9, 10, 11, 12, 13, 14, 15]  # the ALA residue
    energy, forces = openmm_energy_forces(system_of(topology, NeuralForce(model, topology, atoms=ml)), x)
    e_ref, f_ref = model.bind(symbols_of(topology, ml)).energy_and_forces(torch.tensor(x[ml]))
    assert energy == pytest.approx(float(e_ref), rel=1e-10)
    np.testing.assert_allclose(forces[ml], f_ref.numpy(), atol=1e-9)
    others = np.setdiff1d(np.arange(len(x)), ml)
    assert np.all(forces[others] == 0)


def test_periodic_box_from_state_and_wrapping(model):
    topology, x, box = periodic_system()
    system = system_of(topology, NeuralForce(model, topology))
    assert system.usesPeriodicBoundaryConditions()
    energy = model.bind(PERIODIC_SYMBOLS)
    e_ref, f_ref, _ = energy.energy_forces_stress(torch.tensor(x), torch.tensor(box))
    e_omm, f_omm = openmm_energy_forces(system, x)
    assert e_omm == pytest.approx(float(e_ref), rel=1e-10)
    np.testing.assert_allclose(f_omm, f_ref[0].numpy(), atol=1e-9)
    unwrapped = x + np.random.default_rng(0).integers(-2, 3, (len(x), 3)) @ box
    assert openmm_energy_forces(system, unwrapped)[0] == pytest.approx(e_omm, rel=1e-10)
    # the box comes from the State: a strained box changes the energy as the model says
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    scaled_box, scaled_x = box * 1.1, x * 1.1
    context.setPeriodicBoxVectors(*scaled_box)
    context.setPositions(scaled_x)
    e_scaled = context.getState(energy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert e_scaled == pytest.approx(float(energy(torch.tensor(scaled_x), torch.tensor(scaled_box)).detach()), rel=1e-10)
    assert e_scaled != pytest.approx(e_omm, rel=1e-6)


# ------------------------------------------------------------------------------------------------ openmm-ml


def test_mlpotential_create_system(model, model_path, alanine):
    from openmmml import MLPotential

    topology, x = alanine
    potential = MLPotential("molfree", modelPath=str(model_path))
    system = potential.createSystem(topology, device="cpu", precision="double")
    energy, forces = openmm_energy_forces(system, x)
    e_ref, f_ref = model.bind(symbols_of(topology)).energy_and_forces(torch.tensor(x))
    assert energy == pytest.approx(float(e_ref), rel=1e-10)
    np.testing.assert_allclose(forces, f_ref.numpy(), atol=1e-9)
    single = potential.createSystem(topology, device="cpu")
    assert openmm_energy_forces(single, x)[0] == pytest.approx(float(e_ref), rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="precision"):
        potential.createSystem(topology, device="cpu", precision="half")


def test_mlpotential_mixed_system_interpolation(model_path, alanine):
    from openmmml import MLPotential

    topology, x = alanine
    mm = app.ForceField("amber14-all.xml").createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
    ml = list(range(6, 16))  # the ALA residue; its two link bonds get capping virtual sites
    potential = MLPotential("molfree", modelPath=str(model_path))
    mixed = potential.createMixedSystem(topology, mm, ml, device="cpu", precision="double")
    interpolated = potential.createMixedSystem(topology, mm, ml, interpolate=True, device="cpu", precision="double")
    e_mm, _ = openmm_energy_forces(mm, x)
    e_mixed, f_mixed = openmm_energy_forces(mixed, x)
    e_one, f_one = openmm_energy_forces(interpolated, x, parameters={"lambda_interpolate": 1.0})
    e_zero, _ = openmm_energy_forces(interpolated, x, parameters={"lambda_interpolate": 0.0})
    assert e_one == pytest.approx(e_mixed, rel=1e-8)
    np.testing.assert_allclose(f_one, f_mixed, atol=1e-6)
    assert e_zero == pytest.approx(e_mm, abs=1e-5)  # the same MM terms, summed in another order
    assert e_mixed != pytest.approx(e_mm, rel=1e-3)


# ------------------------------------------------------------------------------------------------ dynamics


def nve_drift(model, n_steps: int) -> tuple[float, float]:
    """(drift kJ/mol/ns/atom from a linear fit, std of the total energy kJ/mol) of OpenMM NVE at 0.5 fs, 300 K."""
    topology, x, _ = periodic_system()
    result = nve_energy_drift(system_of(topology, NeuralForce(model, topology)), x, 300.0, 0.5, n_steps)
    return result["drift"], result["std"]


def test_openmm_nve_conserves_energy(model):
    # 12 atoms, periodic 0.8 nm box, untrained model (energy_scale 0.1 kJ/mol), 400 steps = 0.2 ps:
    # measured drift 7.2 kJ/mol/ns/atom and total-energy std 0.028 kJ/mol (integration noise of a rough model).
    drift, std = nve_drift(model, 400)
    print(f"NVE 0.5 fs, 0.2 ps, 12 atoms: drift {drift:.3g} kJ/mol/ns/atom, total-energy std {std:.3g} kJ/mol")
    assert abs(drift) < 50.0
    assert std < 0.1


@pytest.mark.slow
def test_openmm_nve_conserves_energy_long(model):
    # 2000 steps = 1 ps: measured drift 22 kJ/mol/ns/atom, std 0.12 kJ/mol.
    drift, std = nve_drift(model, 2000)
    print(f"NVE 0.5 fs, 1 ps, 12 atoms: drift {drift:.3g} kJ/mol/ns/atom, total-energy std {std:.3g} kJ/mol")
    assert abs(drift) < 100.0
    assert std < 0.4


def test_evaluator_reuses_list_in_md(model):
    from ase import units as ase_units
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    _, x, box = periodic_system()
    atoms = Atoms(PERIODIC_SYMBOLS, positions=x * units.NM_TO_ANGSTROM, cell=box * units.NM_TO_ANGSTROM, pbc=True)
    atoms.calc = MolfreeCalculator(model, skin=0.5)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    n_steps = 60
    VelocityVerlet(atoms, timestep=0.5 * ase_units.fs).run(n_steps)
    evaluator = atoms.calc._evaluator
    assert 1 <= evaluator.n_builds <= n_steps // 5
    positions, cell = atoms.positions * units.ANGSTROM_TO_NM, atoms.cell.array * units.ANGSTROM_TO_NM
    kept = evaluator.evaluate(positions, cell, stress=True)
    fresh = PotentialEvaluator(model, PERIODIC_SYMBOLS, skin=0.05).evaluate(positions, cell, stress=True)
    assert kept.energy == pytest.approx(fresh.energy, rel=1e-12)
    np.testing.assert_allclose(kept.forces, fresh.forces, atol=1e-10)
    np.testing.assert_allclose(kept.stress, fresh.stress, atol=1e-10)
    e_ref = model.bind(PERIODIC_SYMBOLS)(torch.tensor(positions), torch.tensor(cell)).detach()
    assert kept.energy == pytest.approx(float(e_ref), rel=1e-10)


def test_evaluator_follows_wrapped_atoms(model):
    _, x, box = periodic_system()
    evaluator = PotentialEvaluator(model, PERIODIC_SYMBOLS, skin=0.05)
    first = evaluator.evaluate(x, box)
    jumped = x + np.random.default_rng(1).integers(-1, 2, (len(x), 3)) @ box + 1e-3
    moved = evaluator.evaluate(jumped, box)
    assert evaluator.n_builds == 1
    fresh = PotentialEvaluator(model, PERIODIC_SYMBOLS, skin=0.05).evaluate(jumped, box)
    assert moved.energy == pytest.approx(fresh.energy, rel=1e-12)
    np.testing.assert_allclose(moved.forces, fresh.forces, atol=1e-10)
    assert moved.energy != first.energy


# ------------------------------------------------------------------------------------------------ ASE


def test_ase_bfgs_relaxes_molecule():
    from ase.build import molecule
    from ase.optimize import BFGS

    atoms = molecule("CH3OH")
    atoms.calc = MolfreeCalculator(make_model(energy_scale=1.0))
    e0 = atoms.get_potential_energy()
    optimizer = BFGS(atoms, logfile=None)
    assert optimizer.run(fmax=0.01, steps=200)  # measured: 58 steps
    assert atoms.get_potential_energy() < e0
    assert np.abs(atoms.get_forces()).max() < 0.01


def test_ase_stress_and_cell_relaxation(model):
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    _, x, _ = periodic_system()
    cell = np.array([[8.0, 0.3, -0.2], [0.5, 7.6, 0.4], [-0.6, 0.2, 8.3]])  # general (not reduced) triclinic, Å
    atoms = Atoms(PERIODIC_SYMBOLS, scaled_positions=x / 0.8, cell=cell, pbc=True)
    atoms.calc = MolfreeCalculator(make_model(energy_scale=1.0))
    stress = atoms.get_stress()
    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    np.testing.assert_allclose(stress, numerical, atol=1e-6 * max(1.0, np.abs(stress).max()) + 1e-7)
    assert np.abs(stress).max() > 1e-4  # a stress worth relaxing
    e0 = atoms.get_potential_energy()
    volume0 = atoms.get_volume()
    FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=0.05, steps=10)
    assert atoms.get_potential_energy() < e0
    assert atoms.get_volume() != pytest.approx(volume0, rel=1e-6)
    with pytest.raises(PropertyNotImplementedError, match="stress"):
        Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]], calculator=MolfreeCalculator(model)).get_stress()


def test_ase_charge_is_part_of_the_state(model):
    atoms = Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]], calculator=MolfreeCalculator(model))
    atoms.get_potential_energy()
    assert atoms.calc.check_state(atoms) == []
    atoms.info["charge"] = 1
    assert "charge" in atoms.calc.check_state(atoms)


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_model_file(tmp_path, alanine):
    topology, _ = alanine
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else", "weights": torch.zeros(3)}, other)
    text = tmp_path / "notes.molfree"
    text.write_text("not a model\n")
    for path in (other, text):
        with pytest.raises(ValueError, match="not a molfree model file"):
            NeuralForce(path, topology)
        with pytest.raises(ValueError, match="not a molfree model file"):
            MolfreeCalculator(path)


def test_unknown_element(model):
    topology = topology_of(["C", "S", "H"])
    with pytest.raises(ValueError, match="'S'"):
        NeuralForce(model, topology)
    atoms = Atoms("CSH", positions=[[0, 0, 0], [1.8, 0, 0], [-1.1, 0, 0]], calculator=MolfreeCalculator(model))
    with pytest.raises(ValueError, match="'S'"):
        atoms.get_potential_energy()


def test_nan_positions(model):
    evaluator = PotentialEvaluator(model, ["C", "O"])
    with pytest.raises(ValueError, match="NaN"):
        evaluator.evaluate(np.array([[0.0, 0.0, 0.0], [np.nan, 0.0, 0.0]]))
    atoms = Atoms("CO", positions=[[0, 0, 0], [np.nan, 0, 0]], calculator=MolfreeCalculator(model))
    with pytest.raises(ValueError, match="NaN"):
        atoms.get_forces()


def test_non_periodic_model_on_periodic_system():
    model = make_model(periodic_data=False)
    topology, x, box = periodic_system()
    with pytest.raises(ValueError, match="periodic"):
        NeuralForce(model, topology)
    atoms = Atoms(PERIODIC_SYMBOLS, positions=x * units.NM_TO_ANGSTROM, cell=box * units.NM_TO_ANGSTROM, pbc=True,
                  calculator=MolfreeCalculator(model))
    with pytest.raises(ValueError, match="periodic"):
        atoms.get_potential_energy()
    atoms.pbc = False  # the same atoms as an open system are fine
    assert np.isfinite(atoms.get_potential_energy())
