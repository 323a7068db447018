"""GeneratorMove keeps the Boltzmann distribution of the Context's System; generated Atoms carry weights."""
import numpy as np
import openmm
import pytest
import torch
from ase import Atoms

from molfree import units
from molfree.ase import generated_atoms
from molfree.energies.analytic import HarmonicEnergy
from molfree.flows import BoltzmannGenerator, NormalDistribution, Reshape, SequentialFlow, Standardize
from molfree.openmm import GeneratorMove

TEMPERATURE = 300.0


def double_well_context(barrier: float):
    """One particle in x: U = barrier·((x/0.2)² − 1)², harmonic (k = 2000) in y and z; Reference platform."""
    system = openmm.System()
    system.addParticle(12.0)
    force = openmm.CustomExternalForce(f"{barrier}*((x/0.2)^2-1)^2 + 1000*(y^2+z^2)")
    force.addParticle(0, [])
    system.addForce(force)
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE, 5.0, 0.002)
    integrator.setRandomNumberSeed(3)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.array([[-0.2, 0.0, 0.0]]))
    context.setVelocitiesToTemperature(TEMPERATURE, 4)
    return context, integrator


def gaussian_generator(std: float, std_yz: float | None = None):
    """A real BoltzmannGenerator whose flow is a fixed scaling: q = N(0, diag(std², std_yz², std_yz²))."""
    torch.manual_seed(0)
    energy = HarmonicEnergy(np.zeros((1, 3)), 1.0)
    scale = Standardize(torch.zeros(3), torch.tensor([std, std_yz or std, std_yz or std]))
    return BoltzmannGenerator(NormalDistribution(3), SequentialFlow([scale, Reshape(1, 3)]), energy, TEMPERATURE)


def exact_moments(barrier: float):
    x = np.linspace(-0.6, 0.6, 40001)
    p = np.exp(-barrier * ((x / 0.2) ** 2 - 1) ** 2 / units.kT(TEMPERATURE))
    p /= np.trapezoid(p, x)
    return np.trapezoid(x**2 * p, x), np.trapezoid((x > 0) * p, x)


def test_move_alone_samples_the_target():
    barrier = 10.0
    context, _ = double_well_context(barrier)
    move = GeneratorMove(gaussian_generator(0.25, 0.05), seed=1)
    xs = []
    for _ in range(6000):
        move.apply(context)
        xs.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value[0, 0])
    xs = np.array(xs[500:])
    second, right = exact_moments(barrier)
    assert 0.05 < move.acceptanceRate < 0.9
    assert np.mean(xs**2) == pytest.approx(second, rel=0.05)
    assert np.mean(xs > 0) == pytest.approx(right, abs=0.06)


def test_move_interleaved_with_md_crosses_the_barrier():
    barrier = 25.0  # ~10 kT: plain MD of this length stays in its well
    context, integrator = double_well_context(barrier)
    move = GeneratorMove(gaussian_generator(0.25, 0.05), seed=2)
    xs = []
    for _ in range(1500):
        integrator.step(10)
        move.apply(context)
        xs.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value[0, 0])
    xs = np.array(xs[200:])
    second, right = exact_moments(barrier)
    assert right == pytest.approx(0.5, abs=1e-6)
    assert np.mean(xs > 0) == pytest.approx(0.5, abs=0.12)
    assert np.mean(xs**2) == pytest.approx(second, rel=0.05)
    assert move.numProposed == 1500 and move.numAccepted > 0


def test_bad_shapes_and_periodic_systems_are_refused():
    context, _ = double_well_context(5.0)
    generator = gaussian_generator(0.2)
    generator.propose = lambda n: (torch.zeros(n, 2, 3), torch.zeros(n))
    with pytest.raises(ValueError, match="positions"):
        GeneratorMove(generator).apply(context)
    system = openmm.System()
    system.addParticle(1.0)
    system.addForce(openmm.NonbondedForce())
    system.getForce(0).addParticle(0, 0.3, 0)
    system.getForce(0).setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    periodic = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    periodic.setPositions(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="periodic"):
        GeneratorMove(gaussian_generator(0.2)).apply(periodic)


def test_generated_atoms_carry_normalised_weights():
    frames = generated_atoms(gaussian_generator(0.05), 50, Atoms("Ar", positions=[[0, 0, 0]]))
    weights = np.array([a.info["weight"] for a in frames])
    assert len(frames) == 50 and weights.sum() == pytest.approx(1.0)
    # the target is N(0, kT/k) with k = 1 kJ/mol/nm²: far broader than q, so weights grow with |x|
    r = np.array([np.linalg.norm(a.positions[0]) for a in frames]) * units.ANGSTROM_TO_NM
    assert np.corrcoef(r, np.log(weights))[0, 1] > 0.9
