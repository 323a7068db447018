"""Alchemical decoupling and the hydration free-energy machinery.

End states of the alchemical System against independently built Systems, the OpenMM soft core
against molfree's pair kernel, LJ-particle insertion (MBAR over λ_sterics) against Widom
insertion, poor-overlap failures and checkpoint/resume.
"""
import json

import numpy as np
import openmm
import pytest
from openmm import app, unit

from molfree import systems, units
from molfree.freeenergy import PoorOverlapError, exp
from molfree.freeenergy.alchemy import alchemical_system, context_parameters, lambda_schedule
from molfree.freeenergy.hydration import SamplingOptions, analyse_u_kln, hydration_free_energy, replica_exchange
from molfree.neighbors import softcore_lennard_jones

REFERENCE = openmm.Platform.getPlatformByName("Reference")


def energy(system, positions, **parameters) -> float:
    """Potential energy (kJ/mol) on the Reference platform, double precision."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), REFERENCE)
    context.setPositions(np.asarray(positions) * unit.nanometer)
    for name, value in parameters.items():
        context.setParameter(name, value)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


@pytest.fixture(scope="module")
def methane():
    solvated = systems.load("methane-in-water", relax_iterations=20)
    solute = [a.index for a in solvated.topology.atoms() if a.residue.name == "CH4"]
    return solvated, solute


def test_lambda_schedule_and_bounds():
    states = lambda_schedule(3, 4)
    np.testing.assert_allclose(states, [(1, 1), (0.5, 1), (0, 1), (0, 2 / 3), (0, 1 / 3), (0, 0)], atol=1e-15)
    with pytest.raises(ValueError):
        lambda_schedule(1, 4)
    for bad in [(1.2, 1.0), (0.0, -0.1)]:
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            context_parameters(bad)
    fluid = systems.load("lj-fluid", n_particles=27, density=0.3, cutoff=2.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        replica_exchange(fluid.system, fluid.topology, fluid.positions, [0], [(1.0, 1.0), (0.0, 1.5)],
                         fluid.temperature, "unused", SamplingOptions(iterations=1))


def test_end_states_match_independent_systems(methane):
    """λ = (1, 1) is the original System; λ = (0, 0) is water alone + methane alone."""
    solvated, solute = methane
    alchemical = alchemical_system(solvated.system, solute)
    original = energy(solvated.system, solvated.positions)
    coupled = energy(alchemical, solvated.positions)
    assert abs(coupled - original) <= 1e-4 * abs(original), (coupled, original)
    assert abs(coupled - original) < 0.01  # kJ/mol: only the dispersion-correction bookkeeping differs

    forcefield = systems._forcefield("amber14/tip3p.xml", "methane.xml")
    parts = {}
    water = sorted(set(range(solvated.n_atoms)) - set(solute))
    for name, drop, method in (("water", solute, app.PME), ("methane", water, app.NoCutoff)):
        modeller = app.Modeller(solvated.topology, solvated.positions * unit.nanometer)
        modeller.delete([a for a in solvated.topology.atoms() if a.index in set(drop)])
        if method is app.NoCutoff:
            modeller.topology.setPeriodicBoxVectors(None)
        part = forcefield.createSystem(modeller.topology, nonbondedMethod=method, nonbondedCutoff=0.9 * unit.nanometer,
                                       constraints=None, rigidWater=True)
        parts[name] = energy(part, modeller.getPositions().value_in_unit(unit.nanometer))
    decoupled = energy(alchemical, solvated.positions, lambda_electrostatics=0.0, lambda_sterics=0.0)
    separate = parts["water"] + parts["methane"]
    assert abs(decoupled - separate) <= 1e-4 * abs(separate), (decoupled, separate)
    assert abs(decoupled - separate) < 0.01
    # and the interaction itself is resolved: switching it off changes the energy by more than the tolerance
    assert abs(coupled - decoupled) > 10 * abs(decoupled - separate)


def test_shipped_water_solute_is_one_rigid_tip3p_decoupled_from_the_rest():
    """``--solute water``: the box's first water; λ = (0, 0) is the other waters alone (a rigid TIP3P molecule has
    no intramolecular energy), and its gas-phase system is three constrained particles with zero energy."""
    from molfree.freeenergy.hydration import shipped_solute, vacuum_system

    solvated, solute = shipped_solute("water", size=2.0, relax_iterations=0)
    assert solute == [0, 1, 2]
    assert [a.element.symbol for a in solvated.topology.atoms()][:3] == ["O", "H", "H"]
    alchemical = alchemical_system(solvated.system, solute)
    original = energy(solvated.system, solvated.positions)
    assert abs(energy(alchemical, solvated.positions) - original) <= 1e-4 * abs(original)
    modeller = app.Modeller(solvated.topology, solvated.positions * unit.nanometer)
    modeller.delete(list(next(solvated.topology.residues()).atoms()))
    rest = systems._forcefield("amber14/tip3p.xml").createSystem(
        modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, rigidWater=True)
    others = energy(rest, modeller.getPositions().value_in_unit(unit.nanometer))
    decoupled = energy(alchemical, solvated.positions, lambda_electrostatics=0.0, lambda_sterics=0.0)
    assert abs(decoupled - others) <= 1e-4 * abs(others), (decoupled, others)
    assert abs(original - decoupled) > 20  # kJ/mol: a water's interaction with its neighbours is resolved
    vacuum = vacuum_system(solvated.system, solute)
    assert vacuum.getNumParticles() == 3 and vacuum.getNumConstraints() == 3
    assert energy(vacuum, solvated.positions[solute]) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="shipped solutes: methane, water"):
        shipped_solute("ethanol")


def test_softcore_matches_pair_kernel(methane):
    """OpenMM's CustomNonbondedForce soft core = molfree's softcore_lennard_jones on the same pairs."""
    solvated, solute = methane
    system = alchemical_system(solvated.system, solute)
    nonbonded = next(f for f in solvated.system.getForces() if isinstance(f, openmm.NonbondedForce))
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            force.setUseDispersionCorrection(False)
        if isinstance(force, openmm.CustomNonbondedForce):
            force.setUseLongRangeCorrection(False)
    sigma, epsilon = np.array([[p[1].value_in_unit(unit.nanometer), p[2].value_in_unit(unit.kilojoule_per_mole)]
                               for p in map(nonbonded.getParticleParameters, range(solvated.n_atoms))]).T
    cutoff = nonbonded.getCutoffDistance().value_in_unit(unit.nanometer)
    box = solvated.box
    environment = np.setdiff1d(np.arange(solvated.n_atoms), solute)
    i = np.repeat(solute, environment.size)
    j = np.tile(environment, len(solute))
    shifts = -np.round((solvated.positions[j] - solvated.positions[i]) @ np.linalg.inv(box)).astype(np.int64)
    alchemical = np.zeros(solvated.n_atoms, dtype=bool)
    alchemical[solute] = True
    zero = energy(system, solvated.positions, lambda_electrostatics=0.0, lambda_sterics=0.0)
    for lam in (0.2, 0.6, 1.0):
        openmm_value = energy(system, solvated.positions, lambda_electrostatics=0.0, lambda_sterics=lam) - zero
        kernel = float(softcore_lennard_jones(solvated.positions, (i, j, shifts), sigma, epsilon, cutoff, lam,
                                              alchemical, box=box))
        assert openmm_value == pytest.approx(kernel, rel=1e-6, abs=1e-6), (lam, openmm_value, kernel)


def widom(fluid, n_frames: int, steps: int, insertions: int = 100, seed: int = 0) -> np.ndarray:
    """Reduced insertion energies βΔU of an LJ test particle into configurations of the pure fluid.

    The pure fluid is the alchemical System at λ_sterics = 0 (particle 0 is an ideal particle
    there); insertion energies are computed here with numpy (truncated LJ, minimum image).
    """
    system = alchemical_system(fluid.system, [0])
    integrator = openmm.LangevinMiddleIntegrator(fluid.temperature, 1.0, 0.005)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    context.setParameter("lambda_sterics", 0.0)
    context.setPositions(fluid.positions)
    context.setVelocitiesToTemperature(fluid.temperature, seed + 1)
    integrator.step(2000)
    length, rng, works = fluid.box[0, 0], np.random.default_rng(seed), []
    for _ in range(n_frames):
        integrator.step(steps)
        x = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)[1:]
        d = x[None] - rng.uniform(0.0, length, (insertions, 1, 3))
        d -= length * np.round(d / length)
        inv6 = np.where((r2 := np.sum(d**2, -1)) < 2.5**2, r2**-3, 0.0)
        works.append(np.sum(4 * (inv6**2 - inv6), axis=1) / units.kT(fluid.temperature))
    return np.concatenate(works)


def insertion(tmp_path, density, reduced_temperature, n_states, iterations, widom_frames):
    """(μ_ex from MBAR over λ_sterics, its error, μ_ex from Widom, its error), kT."""
    fluid = systems.load("lj-fluid", n_particles=64, density=density, reduced_temperature=reduced_temperature)
    states = [(0.0, float(s)) for s in np.linspace(1.0, 0.0, n_states)]  # no charges: λ_elec is irrelevant
    options = SamplingOptions(iterations=iterations, steps_per_iteration=10, equilibration_steps=2000,
                              timestep=0.005, checkpoint_interval=iterations, threads=1, seed=7)
    sampling = replica_exchange(fluid.system, fluid.topology, fluid.positions, [0], states, fluid.temperature,
                                tmp_path / "lj", options)
    leg = analyse_u_kln(sampling.u_kln)
    reference = exp(widom(fluid, widom_frames, 20))
    return -leg.delta_f, leg.error, reference.delta_f, reference.error


def test_lj_insertion_matches_widom_fast(tmp_path):
    """ρ* = 0.5, T* = 1.5, 63 + 1 particles: agreement within 3 combined σ (σ ≈ 0.1 kT at this length)."""
    mbar_mu, mbar_error, widom_mu, widom_error = insertion(tmp_path, 0.5, 1.5, 6, 600, 300)
    print(f"μ_ex MBAR {mbar_mu:.3f} ± {mbar_error:.3f} kT, Widom {widom_mu:.3f} ± {widom_error:.3f} kT")
    assert widom_mu < -0.3  # attractive regime: a sign error cannot pass
    assert abs(mbar_mu - widom_mu) <= 3 * np.hypot(mbar_error, widom_error)


@pytest.mark.slow
def test_lj_insertion_matches_widom_to_a_tenth_kt(tmp_path):
    """ρ* = 0.3, T* = 2, 63 + 1 particles, 8000 iterations: |MBAR − Widom| <= 0.1 kT."""
    mbar_mu, mbar_error, widom_mu, widom_error = insertion(tmp_path, 0.3, 2.0, 6, 8000, 1500)
    print(f"μ_ex MBAR {mbar_mu:.3f} ± {mbar_error:.3f} kT, Widom {widom_mu:.3f} ± {widom_error:.3f} kT")
    assert mbar_error < 0.04
    assert abs(mbar_mu - widom_mu) <= 0.1


def test_poor_overlap_is_a_reported_failure(tmp_path):
    """Dense LJ liquid, sterics switched off in one step: PoorOverlapError and status 'poor_overlap'."""
    liquid = systems.load("lj-fluid", n_particles=125, density=0.9, reduced_temperature=0.9)
    options = SamplingOptions(iterations=20, steps_per_iteration=10, equilibration_steps=200, timestep=0.005,
                              threads=1, seed=3)
    with pytest.raises(PoorOverlapError, match="poor overlap"):
        hydration_free_energy(liquid, [0], out=tmp_path, n_electrostatics=2, n_sterics=2, options=options)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "poor_overlap" and result["dG_kcal_mol"] is None
    assert (tmp_path / "overlap.png").is_file() and "FAILED" in (tmp_path / "report.md").read_text()


def test_resume_continues_from_checkpoint(tmp_path, monkeypatch):
    """Interrupted during iteration 3 with checkpoints every 2: the rerun simulates only iterations 3 and 4."""
    fluid = systems.load("lj-fluid", n_particles=27, density=0.3, cutoff=2.0)
    states = [(0.0, 1.0), (0.0, 0.5), (0.0, 0.0)]
    options = SamplingOptions(iterations=4, steps_per_iteration=5, equilibration_steps=20, timestep=0.005,
                              checkpoint_interval=2, threads=1, seed=1)
    calls = {"simulate": 0, "exchange": 0}
    original_simulate = app.ReplicaExchangeSampler.simulateReplica
    original_exchange = app.ReplicaExchangeSampler.exchangeReplicas

    def simulate(self, *args, **kwargs):
        calls["simulate"] += 1
        return original_simulate(self, *args, **kwargs)

    def interrupted_exchange(self):
        calls["exchange"] += 1
        if calls["exchange"] == 3:
            raise KeyboardInterrupt
        return original_exchange(self)

    monkeypatch.setattr(app.ReplicaExchangeSampler, "simulateReplica", simulate)
    monkeypatch.setattr(app.ReplicaExchangeSampler, "exchangeReplicas", interrupted_exchange)
    def run():
        return replica_exchange(fluid.system, fluid.topology, fluid.positions, [0], states, fluid.temperature,
                                tmp_path, options)

    with pytest.raises(KeyboardInterrupt):
        run()
    assert calls["simulate"] == 3 + 3 * 3  # equilibration + iterations 1-3
    saved = np.load(tmp_path / "checkpoint.npz")
    assert int(saved["iteration"]) == 2
    calls["simulate"] = 0
    sampling = run()
    assert calls["simulate"] == 2 * 3 and sampling.iterations_run == 2
    assert sampling.u_kln.shape == (3, 3, 4)
    first = saved["u"][0][np.argsort(saved["replica_states"][0])]  # iteration 1 as [state k, state l]
    np.testing.assert_array_equal(sampling.u_kln[:, :, 0], first)
    assert sampling.md_steps == 3 * 20 + 4 * 3 * 5
    assert sampling.wall_seconds > float(saved["wall_seconds"]) > 0  # the run's time, not only the rerun's


def test_solute_from_sdf_and_gas_leg_is_lambda_independent(tmp_path):
    """A V2000 SDF methane + methane.xml solvates; its vacuum alchemical energy does not depend on λ."""
    from importlib import resources

    from molfree.freeenergy.hydration import solute_from_file, vacuum_system

    d = 1.092 / np.sqrt(3.0)
    rows = [("C", 0, 0, 0)] + [("H", d * a, d * b, d * c) for a, b, c in ((1, 1, 1), (1, -1, -1), (-1, 1, -1),
                                                                          (-1, -1, 1))]
    sdf = ["methane", "  molfree", "", "  5  4  0  0  0  0  0  0  0  0999 V2000"]
    sdf += [f"{x:10.4f}{y:10.4f}{z:10.4f} {s:<3} 0  0  0  0  0  0  0  0  0  0  0  0" for s, x, y, z in rows]
    sdf += [f"  1{k:3d}  1  0" for k in range(2, 6)] + ["M  END", "$$$$"]
    (tmp_path / "methane.sdf").write_text("\n".join(sdf) + "\n")
    with resources.as_file(resources.files("molfree.data") / "methane.xml") as xml:
        solvated, solute = solute_from_file(tmp_path / "methane.sdf", [str(xml)], size=2.0, relax_iterations=0)
    assert solute == [0, 1, 2, 3, 4] and solvated.n_atoms > 5
    vacuum = alchemical_system(vacuum_system(solvated.system, solute), range(5))
    values = [energy(vacuum, solvated.positions[solute], lambda_electrostatics=e, lambda_sterics=s)
              for e, s in lambda_schedule(3, 3)]
    np.testing.assert_allclose(values, values[0], rtol=0, atol=1e-9)
