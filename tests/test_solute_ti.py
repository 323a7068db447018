"""Neural TI for a rigid solute in a frozen periodic environment (molfree.freeenergy.solute_ti).

The torch solute–environment interaction against OpenMM's alchemical System (energies and forces), the
learned path's exact endpoints, rigid-body moves, and the per-frame TI free energy against brute-force
integration over the solute's poses.
"""
import functools
import math

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from molfree import systems, units
from molfree.freeenergy import solute_ti
from molfree.freeenergy.alchemy import alchemical_system
from molfree.freeenergy.hydration_neural_ti import NeuralTIOptions, decoupled_system, neural_ti_hydration
from molfree.freeenergy.solute_environment import SoluteEnvironment, copy_system

REFERENCE = openmm.Platform.getPlatformByName("Reference")
TEMPERATURE = 300.0


@functools.cache
def _methane(cutoff: float):
    """Methane in a 2 nm TIP3P box (unrelaxed) and two environment frames: the box and a perturbed copy."""
    solvated = systems.load("methane-in-water", size=2.0, cutoff=cutoff, relax_iterations=0)
    solute = [a.index for a in solvated.topology.atoms() if a.residue.name == "CH4"]
    positions = np.asarray(solvated.positions)
    environment_atoms = [i for i in range(solvated.n_atoms) if i not in solute]
    rng = np.random.default_rng(0)
    frames = np.stack([positions[environment_atoms],
                       positions[environment_atoms] + rng.normal(0, 0.02, (len(environment_atoms), 3))])
    environment = SoluteEnvironment(solvated.system, solute, torch.as_tensor(frames))
    return solvated, solute, environment_atoms, frames, environment


@pytest.fixture(scope="module")
def methane():
    """The 0.9 nm cutoff: with methane's radius it exceeds half the box, so pairs are wrapped one by one."""
    return _methane(0.9)


def _openmm_groups(system, solute, positions, electrostatics, sterics):
    """(energy, forces [N, 3]) of the soft-core force (group 1) and the NonbondedForce (group 2)."""
    alchemical = alchemical_system(system, solute)
    for force in alchemical.getForces():
        force.setForceGroup(1 if isinstance(force, openmm.CustomNonbondedForce) else
                            2 if isinstance(force, openmm.NonbondedForce) else 0)
        if isinstance(force, openmm.CustomNonbondedForce):
            force.setUseLongRangeCorrection(False)
    context = openmm.Context(alchemical, openmm.VerletIntegrator(0.001), REFERENCE)
    context.setPositions(positions * unit.nanometer)
    context.setParameter("lambda_electrostatics", electrostatics)
    context.setParameter("lambda_sterics", sterics)
    result = {}
    for group in (1, 2):
        state = context.getState(getEnergy=True, getForces=True, groups={group})
        result[group] = (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                         state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    return result


@pytest.mark.parametrize("cutoff", [0.9, 0.8])
@pytest.mark.parametrize("frame, shift", [(0, (0.0, 0.0, 0.0)), (1, (0.31, -0.52, 0.97))])
def test_interaction_matches_openmm_energies_and_forces(one_thread, frame, shift, cutoff):
    """Soft-core LJ at λ_sterics = 0.6 and the Ewald Coulomb (full charges) equal OpenMM's, forces included,
    with pairs wrapped one by one (0.9 nm) and around the solute's centroid (0.8 nm, shifted across the box edge)."""
    solvated, solute, environment_atoms, frames, environment = _methane(cutoff)
    positions = np.asarray(solvated.positions).copy()
    positions[environment_atoms] = frames[frame]
    positions[solute] += shift
    charged, discharged = (_openmm_groups(solvated.system, solute, positions, e, 0.6) for e in (1.0, 0.0))
    y = torch.tensor(positions[solute]).unsqueeze(0).requires_grad_(True)
    index = torch.tensor([frame])
    lj = environment.lennard_jones(index, y, 0.6)
    (lj_force,) = torch.autograd.grad(-lj.sum(), y)
    coulomb = environment.coulomb(index, y)
    (coulomb_force,) = torch.autograd.grad(-coulomb.sum(), y)
    assert float(lj.detach()) == pytest.approx(charged[1][0], abs=1e-8)
    np.testing.assert_allclose(lj_force[0].numpy(), charged[1][1][solute], atol=1e-6)
    # OpenMM's PME (tolerance 5e-4) against a converged Ewald sum with OpenMM's splitting
    openmm_coulomb = charged[2][0] - discharged[2][0]
    assert float(coulomb.detach()) == pytest.approx(openmm_coulomb, abs=2e-3)
    np.testing.assert_allclose(coulomb_force[0].numpy(), charged[2][1][solute] - discharged[2][1][solute],
                               atol=0.05)


def test_constants_and_bad_input(one_thread, methane):
    solvated, solute, environment_atoms, frames, environment = methane
    positions = np.asarray(solvated.positions)
    constants = environment.openmm_constants(solvated.system, positions)
    # the soft-core long-range correction is attractive; methane's images barely interact
    assert -2.0 < constants["dispersion_correction"] < 0 and abs(constants["self_images"]) < 1e-3
    with pytest.raises(ValueError, match="frames must be"):
        SoluteEnvironment(solvated.system, solute, torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="NaN"):
        SoluteEnvironment(solvated.system, solute, torch.full((1, len(environment_atoms), 3), float("nan")))
    with pytest.raises(ValueError, match="solute_atoms"):
        SoluteEnvironment(solvated.system, [solvated.n_atoms], torch.as_tensor(frames))
    reaction_field = copy_system(solvated.system)
    next(f for f in reaction_field.getForces() if isinstance(f, openmm.NonbondedForce)).setNonbondedMethod(
        openmm.NonbondedForce.CutoffPeriodic)
    with pytest.raises(ValueError, match="charged systems need PME"):
        SoluteEnvironment(reaction_field, solute, torch.as_tensor(frames))


def test_lambda_potential_endpoints_and_pose_moves(one_thread, methane):
    """u_θ − u₀ is 0 at λ = 0 and the full interaction at λ = 1 for any network; moves keep the solute rigid."""
    solvated, solute, *_, environment = methane
    torch.manual_seed(0)
    potential = solute_ti.lambda_potential(environment, solvated.temperature)
    y = torch.tensor(np.asarray(solvated.positions)[solute]).repeat(4, 1, 1)
    y = y + 0.3 * torch.randn(4, 1, 3, dtype=torch.float64)
    x = solute_ti.pack(torch.tensor([0, 1, 0, 1]), y)
    frame, y_back = solute_ti.unpack(x)
    assert frame.tolist() == [0, 1, 0, 1] and torch.equal(y_back, y)
    kt = units.kT(solvated.temperature)
    full = (environment.lennard_jones(frame, y, 1.0) + environment.coulomb(frame, y)) / kt
    with torch.no_grad():
        assert torch.equal(potential.excess(x, 0.0), torch.zeros(4, dtype=torch.float64))
        torch.testing.assert_close(potential.excess(x, 1.0), full)
        torch.testing.assert_close(potential.coupling(x, 0.5), environment.lennard_jones(frame, y, 1.0) / kt)
    rotations = solute_ti._rotations(100, math.pi, torch.Generator().manual_seed(0), torch.float64)
    torch.testing.assert_close(rotations @ rotations.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(100, 3, 3))
    torch.testing.assert_close(torch.linalg.det(rotations), torch.ones(100, dtype=torch.float64))
    u = potential.excess(x, 0.7).detach()
    moved, u_moved, _ = solute_ti.rigid_body_move(potential, x, u, 0.7, 0.3, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(moved[:, -1], x[:, -1])
    torch.testing.assert_close(torch.cdist(moved[:, :-1], moved[:, :-1]), torch.cdist(y, y))
    torch.testing.assert_close(u_moved, potential.excess(moved, 0.7).detach())


@pytest.mark.parametrize("lam", [0.0, 0.6, 1.0])
def test_learned_path_as_an_openmm_force_on_the_decoupled_system(one_thread, methane, lam):
    """decoupled System + NeuralTIForce(u_θ on the whole System): at λ = 1 the coupled System's energy (less the
    position-independent constants) and forces, at 0 the decoupled one's, and kT·u_θ with −∇u_θ at any λ (also
    through NeuralTICalculator)."""
    from ase import Atoms
    from molfree.ase import NeuralTICalculator
    from molfree.openmm import NeuralTIForce

    solvated, solute, environment_atoms, frames, environment = methane
    torch.manual_seed(0)
    potential = solute_ti.lambda_potential(environment, solvated.temperature)
    with torch.no_grad():
        potential.schedule.raw.copy_(torch.linspace(-1, 1, potential.schedule.raw.numel(), dtype=torch.float64))
    positions = np.asarray(solvated.positions).copy()
    positions[environment_atoms] = frames[1]
    in_system = solute_ti.system_potential(potential)
    system = decoupled_system(solvated.system, solute)
    system.addForce(NeuralTIForce(in_system, solvated.temperature, lam=lam, periodic=True))
    learned = _energy_forces(system, positions)
    x = torch.tensor(positions).unsqueeze(0)
    u, force = in_system.score(x, lam)
    kt = units.kT(solvated.temperature)
    decoupled = _energy_forces(decoupled_system(solvated.system, solute), positions)
    assert learned[0] - decoupled[0] == pytest.approx(kt * float(u[0]), abs=1e-6)
    np.testing.assert_allclose(learned[1] - decoupled[1], kt * force[0].numpy(), atol=1e-6)
    # the frozen-frame potential gives the same energy for this configuration
    with torch.no_grad():
        frozen = potential.excess(solute_ti.pack(torch.tensor([1]), x[:, solute]), lam)
    assert float(frozen[0]) == pytest.approx(float(u[0]), abs=1e-9)
    if lam == 1.0:
        constants = sum(environment.openmm_constants(solvated.system, positions).values())
        coupled = _energy_forces(solvated.system, positions)
        assert learned[0] + constants == pytest.approx(coupled[0], abs=5e-3)
        np.testing.assert_allclose(learned[1], coupled[1], atol=0.1)
    if lam == 0.0:
        assert learned[0] == pytest.approx(decoupled[0], abs=1e-6)
    atoms = Atoms(numbers=[1] * len(positions), positions=positions / units.ANGSTROM_TO_NM)
    atoms.calc = NeuralTICalculator(in_system, solvated.temperature, lam=lam)
    assert atoms.get_potential_energy() == pytest.approx(kt * float(u[0]) * units.KJ_PER_MOL_TO_EV, abs=1e-9)


def _energy_forces(system, positions: np.ndarray) -> tuple[float, np.ndarray]:
    """(energy kJ/mol, forces [N, 3] kJ/mol/nm) of ``system`` at ``positions`` on the Reference platform."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), REFERENCE)
    context.setPositions(positions * unit.nanometer)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def test_walkers_at_full_sterics_stay_in_the_solute_cavity(one_thread, methane):
    """In water, the strongly coupled nodes sample the solute's own cavity: ⟨∂c/∂s⟩ at the last sterics node is
    within a few kT of its value at the coupled pose (walkers trapped in the frozen solvent's cores, as when
    some started at uniform poses, made it hundreds of kT)."""
    solvated, solute, *_, environment = methane
    potential = solute_ti.lambda_potential(environment, solvated.temperature)
    coupled = solute_ti.pack(torch.arange(2), torch.tensor(np.asarray(solvated.positions)[solute]).expand(2, -1, -1))
    _, details = solute_ti.per_frame_ti(potential, coupled, environment.box_length, n_coupling=3, n_correction=2,
                                        poses=4, sweeps=8, burn_in=6, moves_per_sweep=2, seed=0)
    at_pose = solute_ti._coupling_derivative(potential, coupled, details["s_nodes"][2])
    assert abs(details["mean_dc_ds"][2] - float(at_pose.mean())) < 5.0, (details["mean_dc_ds"], at_pose)


def _toy_environment(seed: int = 0, n_environment: int = 40, edge: float = 2.0):
    """A rigid charged dimer (solute) among fixed charged LJ atoms in a cubic PME box: System and two frames."""
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) * edge for row in np.eye(3)))
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.PME)
    force.setCutoffDistance(0.9)
    for charge, sigma, epsilon in [(0.15, 0.25, 0.9), (-0.15, 0.28, 1.2)]:
        system.addParticle(12.0)
        force.addParticle(charge, sigma, epsilon)
    force.addException(0, 1, 0.0, 0.1, 0.0)
    for k in range(n_environment):
        system.addParticle(40.0)
        force.addParticle(0.15 * (-1) ** k, 0.3, 1.2)
    system.addForce(force)
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(2):  # random sequential addition of atoms at least 0.3 nm apart
        points = np.empty((0, 3))
        while len(points) < n_environment:
            trial = rng.uniform(0, edge, 3)
            d = points - trial
            d -= edge * np.round(d / edge)
            if len(points) == 0 or np.linalg.norm(d, axis=-1).min() > 0.3:
                points = np.vstack([points, trial])
        frames.append(points)
    dimer = np.array([[0.0, 0.0, 0.0], [0.15, 0.0, 0.0]])
    return system, np.stack(frames), dimer


def _brute_force(environment, dimer, frame: int, kt: float, n: int = 60_000,
                 draws: int = 1) -> tuple[float, float, torch.Tensor]:
    """−ln ⟨e^{−Δu/kT}⟩ (kT) over uniform translations and Haar-random rotations of the dimer, the Kish
    effective sample size of the weights e^{−Δu/kT}, and poses drawn with those weights (coupled poses, as MD
    of the coupled system would give: ``[2, 3]`` for one draw, else ``[draws, 2, 3]``)."""
    generator = torch.Generator().manual_seed(frame)
    body = solute_ti.pack(torch.full((n,), frame), torch.as_tensor(dimer).expand(n, 2, 3))
    positions = solute_ti.unpack(solute_ti.uniform_poses(body, environment.box_length, generator))[1]
    index = torch.full((n,), frame)
    with torch.no_grad():
        du = torch.cat([(environment.lennard_jones(index[k:k + 20_000], part, 1.0)
                         + environment.coulomb(index[k:k + 20_000], part)) / kt
                        for k, part in zip(range(0, n, 20_000), positions.split(20_000))])
    weights = torch.softmax(-du, 0)
    coupled = positions[torch.multinomial(weights, draws, replacement=True, generator=generator)]
    return float(-(torch.logsumexp(-du, 0) - math.log(n))), float(1 / (weights**2).sum()), coupled[0] if draws == 1 else coupled


def _brute_force_in_sphere(environment, pose: torch.Tensor, frame: int, radius: float, kt: float,
                           n: int = 40_000) -> float:
    """ln(V/V_R) − ln ⟨e^{−Δu/kT}⟩ (kT) over Haar-random rotations of ``pose`` ``[n_atoms, 3]`` with its centroid
    uniform in the ball of ``radius`` (nm) about its own centroid."""
    generator = torch.Generator().manual_seed(100 + frame)
    body = solute_ti.pack(torch.full((n,), frame), pose.expand(n, -1, -1))
    rotated = solute_ti.unpack(solute_ti.uniform_poses(body, 0.0, generator))[1]  # centroid at the origin
    direction = torch.randn(n, 1, 3, generator=generator, dtype=pose.dtype)
    distance = radius * torch.rand(n, 1, 1, generator=generator, dtype=pose.dtype) ** (1 / 3)
    positions = rotated + pose.mean(0) + distance * direction / direction.norm(dim=-1, keepdim=True)
    index = torch.full((n,), frame)
    with torch.no_grad():
        du = (environment.lennard_jones(index, positions, 1.0) + environment.coulomb(index, positions)) / kt
    volume_ratio = environment.box_length**3 / (4 / 3 * math.pi * radius**3)
    return math.log(volume_ratio) - float(torch.logsumexp(-du, 0) - math.log(n))


def test_per_frame_ti_matches_brute_force_integration_over_poses(one_thread):
    """ΔF(X) along the learned path (a random, enlarged network term included) equals −ln z(X) by brute force.

    A charged dimer among 40 charged LJ atoms binds by 1.2–1.4 kT; the brute-force average over 6·10⁴ uniform
    poses (effective sample size > 2000) is good to ~0.03 kT, and TI with these settings scatters by up to
    ~0.1 kT between seeds, hence 0.15 kT. The walkers start from a pose drawn from the coupled state, as the
    workflow's MD frames give. Then with the centroid restrained to a ball about that pose.
    """
    system, frames, dimer = _toy_environment()
    environment = SoluteEnvironment(system, [0, 1], torch.as_tensor(frames))
    kt = units.kT(TEMPERATURE)
    torch.manual_seed(0)
    potential = solute_ti.lambda_potential(environment, TEMPERATURE)
    with torch.no_grad():  # make the network's λ(1 − λ) g term matter (each pair term saturates at ±1 kT)
        potential.correction.phi[-1].weight.mul_(50.0)
    exact, effective, poses = zip(*(_brute_force(environment, dimer, frame, kt) for frame in range(2)))
    assert min(effective) > 2000 and max(exact) < -1.0
    coupled = solute_ti.pack(torch.arange(2), torch.stack(poses))
    per_frame, details = solute_ti.per_frame_ti(potential, coupled, environment.box_length, n_coupling=4,
                                                n_correction=3, poses=128, sweeps=25, burn_in=10, seed=1)
    assert min(details["swap_acceptance"]) > 0.3
    np.testing.assert_allclose(per_frame, exact, atol=0.15)
    # restrained to a 0.3 nm ball about the coupled centroid: the ball's integral plus ln(V/V_R), on the plain
    # staged path (with the steep network above, the restrained estimates scatter by up to 0.2 kT)
    restrained = [_brute_force_in_sphere(environment, pose, frame, 0.3, kt) for frame, pose in enumerate(poses)]
    with torch.no_grad():
        potential.correction.phi[-1].weight.zero_()
        potential.correction.phi[-1].bias.zero_()
    per_frame, details = solute_ti.per_frame_ti(potential, coupled, environment.box_length, n_coupling=4,
                                                n_correction=2, poses=64, sweeps=25, burn_in=10, radius=0.3, seed=2)
    assert details["restraint_kT"] == pytest.approx(math.log(8.0 / (4 / 3 * math.pi * 0.027)))
    np.testing.assert_allclose(per_frame, restrained, atol=0.15)


def test_uniform_poses_are_uniform_in_position_and_orientation():
    """Haar orientations: a body axis points uniformly over the sphere (⟨n⟩ = 0, ⟨n nᵀ⟩ = I/3); centroids are
    uniform in the box (mean edge/2, variance edge²/12 per axis); the body is moved rigidly."""
    generator = torch.Generator().manual_seed(0)
    body = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.2, 0.0]], dtype=torch.float64)
    x = solute_ti.pack(torch.zeros(40_000), (body + 5.0).expand(40_000, 3, 3))
    frame, y = solute_ti.unpack(solute_ti.uniform_poses(x, 2.0, generator))
    assert bool((frame == 0).all())
    axis = (y[:, 1] - y[:, 0]) / 0.1
    torch.testing.assert_close(axis.norm(dim=-1), torch.ones(40_000, dtype=torch.float64))
    assert float(axis.mean(0).abs().max()) < 0.02
    torch.testing.assert_close(axis.T @ axis / 40_000, torch.eye(3, dtype=torch.float64) / 3, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cdist(y, y), torch.cdist(body, body).expand(40_000, 3, 3))
    centre = y.mean(1)
    assert float((centre.mean(0) - 1.0).abs().max()) < 0.02
    assert float((centre.var(0) - 4.0 / 12).abs().max()) < 0.02


def test_test_insertions_match_brute_force_and_split_at_the_ball(one_thread):
    """:func:`insertion_log_means` over the whole box equals the brute-force −ln z(X) of the same frame; outside a
    0.6 nm ball about a pose plus the ball's own brute-force integral makes up the whole box again."""
    system, frames, dimer = _toy_environment()
    environment = SoluteEnvironment(system, [0, 1], torch.as_tensor(frames))
    kt = units.kT(TEMPERATURE)
    potential = solute_ti.lambda_potential(environment, TEMPERATURE)
    exact, _, pose = _brute_force(environment, dimer, 1, kt)
    configuration = solute_ti.pack(torch.tensor([1]), pose.unsqueeze(0))
    whole = solute_ti.insertion_log_means(potential, configuration, 20_000, seed=4)
    assert -whole[0] == pytest.approx(exact, abs=0.05)
    outside = solute_ti.insertion_log_means(potential, configuration, 20_000, radius=0.6, seed=5)
    ball = -_brute_force_in_sphere(environment, pose, 1, 0.6, kt)  # ln[(1/V) ∫_ball e^{−Δu}]
    assert -np.logaddexp(ball, outside[0]) == pytest.approx(exact, abs=0.05)
    assert outside[0] < whole[0] - 0.05  # the ball (11 % of the box) holds a visible share
    with pytest.raises(ValueError, match="at least one insertion"):
        solute_ti.insertion_log_means(potential, configuration, 0)


def test_estimates_over_frames_recover_the_exact_free_energy(one_thread):
    """Decoupled ensemble: the two toy frames, equally likely; coupled: frame k with probability ∝ z(X_k) and the
    dimer's pose drawn from e^{−Δu} in it (brute force), so ΔF = −ln ½(z₀ + z₁) exactly. The TI is restrained to
    a 0.3 nm ball that misses much of this weakly bound dimer's coupled density; test insertions supply the rest
    of the box, and the one-sided and BAR estimates recover ΔF, where the ball alone is off by > 0.5 kT."""
    system, frames, dimer = _toy_environment()
    environment = SoluteEnvironment(system, [0, 1], torch.as_tensor(frames))
    kt = units.kT(TEMPERATURE)
    exact_k, _, poses_k = zip(*(_brute_force(environment, dimer, k, kt, draws=24) for k in range(2)))
    exact = -math.log(np.mean(np.exp(-np.array(exact_k))))
    share = np.exp(-np.array(exact_k)) / np.exp(-np.array(exact_k)).sum()
    frame_of = np.random.default_rng(0).choice(2, size=24, p=share)
    coupled = solute_ti.pack(torch.as_tensor(frame_of), torch.stack([poses_k[k][i] for i, k in enumerate(frame_of)]))
    decoupled = solute_ti.pack(torch.arange(24) % 2, torch.as_tensor(dimer).expand(24, 2, 3))
    torch.manual_seed(0)
    potential = solute_ti.lambda_potential(environment, TEMPERATURE)
    result = solute_ti.estimate(potential, coupled, environment.box_length, 0.0, decoupled=decoupled,
                                insertions=4000, n_coupling=4, n_correction=2, poses=8, sweeps=15, burn_in=10,
                                radius=0.3, seed=3)
    assert result.details["n_decoupled"] == 24 and result.details["works_overlap"] and result.error < 0.1
    assert abs(result.delta_f - exact) < max(0.15, 3 * result.error), (result.delta_f, result.error, exact)
    assert result.details["exp_coupled_kT"] == pytest.approx(exact, abs=0.15)
    ball_only = np.log(np.mean(np.exp(result.details["per_frame_ball"])))
    assert abs(ball_only - exact) > 0.5
    with pytest.raises(ValueError, match="insertions >= 1"):
        solute_ti.estimate(potential, coupled, environment.box_length, 0.0, radius=0.3)


def test_training_reduces_the_loss_and_resumes(one_thread, methane, tmp_path):
    solvated, solute, *_, environment = methane
    torch.manual_seed(0)
    potential = solute_ti.lambda_potential(environment, solvated.temperature)
    y = torch.tensor(np.asarray(solvated.positions)[solute]).repeat(2, 1, 1)
    coupled = solute_ti.pack(torch.arange(2), y)
    checkpoint = tmp_path / "training.pt"
    losses = solute_ti.train(potential, coupled, steps=30, batch_size=16, redraws=4, checkpoint=checkpoint)
    assert len(losses) == 30 and np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert solute_ti.train(potential, coupled, steps=30, batch_size=16, redraws=4, checkpoint=checkpoint) == []
    with pytest.raises(ValueError, match="blur"):
        solute_ti.train(potential, coupled, blur=0.0)


def test_workflow_writes_result_and_resumes(one_thread, methane, tmp_path):
    """A tiny end-to-end run: MD frames, training, TI; the rerun reuses frames and training."""
    solvated, solute, *_, environment = methane
    options = NeuralTIOptions(n_frames=3, n_decoupled_frames=2, frame_ps=0.01, equilibration_ps=0.01,
                              training_steps=4, batch_size=8, redraws=2, n_coupling=2, n_correction=2, poses=2,
                              sweeps=2, burn_in=1, insertions=300)
    first = neural_ti_hydration(solvated, solute, out=tmp_path, options=options)
    assert math.isfinite(first["dG_kcal_mol"]) and first["error_kcal_mol"] >= 0
    assert first["md_steps"] == 2 * 5 + 5 * 5 and len(first["per_frame"]) == 3 and first["n_decoupled"] == 2
    for name in ("result.json", "report.md", "neural-ti.png", "frames.npz", "frames-decoupled.npz", "training.pt"):
        assert (tmp_path / "neural-ti" / name).is_file(), name
    again = neural_ti_hydration(solvated, solute, out=tmp_path, options=options)
    assert again["md_steps"] == first["md_steps"] and again["dG_kcal_mol"] == pytest.approx(first["dG_kcal_mol"])
    with pytest.raises(ValueError, match="n_frames"):
        NeuralTIOptions(n_frames=1)
    with pytest.raises(ValueError, match="restraint_radius"):
        NeuralTIOptions(restraint_radius=0.0)
    with pytest.raises(ValueError, match="insertions"):
        NeuralTIOptions(insertions=0)
    with pytest.raises(ValueError, match="radius must lie"):
        solute_ti.per_frame_ti(solute_ti.lambda_potential(environment, solvated.temperature),
                               solute_ti.pack(torch.arange(1), torch.zeros(1, 5, 3, dtype=torch.float64)),
                               environment.box_length, radius=5.0)
