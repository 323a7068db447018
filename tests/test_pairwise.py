"""Pairwise kernels against OpenMM's Reference platform, finite differences and torch.library checks."""
from __future__ import annotations

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from molfree.neighbors import coulomb_reaction_field, lennard_jones, neighbor_list, softcore_lennard_jones
from molfree.neighbors import _warp_pairwise
from molfree.units import ONE_4PI_EPS0

RTOL = 1e-5
CUTOFF = 0.9  # nm, below half of every box width used here
SKIN = 0.15  # the pair lists reach beyond the cutoff: those pairs must contribute nothing

CUBIC = np.diag([2.0, 2.0, 2.0])
TRICLINIC = np.array([[2.2, 0.0, 0.0], [0.6, 2.1, 0.0], [-0.5, 0.7, 2.0]])


# ---------------------------------------------------------------------------------------------
# Systems and references
# ---------------------------------------------------------------------------------------------


def lattice_positions(box: np.ndarray, n_per_side: int, seed: int) -> np.ndarray:
    """Jittered lattice in the (fractional) box: random but never overlapping, nm."""
    rng = np.random.default_rng(seed)
    grid = (np.stack(np.meshgrid(*[np.arange(n_per_side)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5)
    frac = (grid + rng.uniform(-0.15, 0.15, grid.shape)) / n_per_side
    return frac @ box


def lj_parameters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.26, 0.34, n), rng.uniform(0.4, 1.2, n)


def ion_charges(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice([-1.0, 1.0], n)


def pairs_for(x: np.ndarray, box: np.ndarray | None, cutoff: float = CUTOFF + SKIN):
    box = None if box is None else torch.tensor(np.asarray(box))
    return neighbor_list(torch.tensor(np.asarray(x)), cutoff, box=box)


def openmm_reference(forces: list, x: np.ndarray, box: np.ndarray | None,
                     parameters: dict[str, float] | None = None) -> tuple[float, np.ndarray, dict]:
    """Energy (kJ/mol), forces [N, 3] (kJ/mol/nm) and energy parameter derivatives from OpenMM."""
    system = openmm.System()
    for _ in range(len(x)):
        system.addParticle(1.0)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in box))
    for force in forces:
        system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(x)
    for name, value in (parameters or {}).items():
        context.setParameter(name, value)
    state = context.getState(getEnergy=True, getForces=True, getParameterDerivatives=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    f = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energy, np.asarray(f), dict(state.getEnergyParameterDerivatives())


def nonbonded_force(charges, sigma, epsilon, periodic: bool, switch: float | None = None,
                    epsilon_solvent: float = 78.3) -> openmm.NonbondedForce:
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic if periodic
                             else openmm.NonbondedForce.CutoffNonPeriodic)
    force.setCutoffDistance(CUTOFF)
    force.setUseDispersionCorrection(False)
    force.setReactionFieldDielectric(epsilon_solvent)
    if switch is not None:
        force.setUseSwitchingFunction(True)
        force.setSwitchingDistance(switch)
    for q, s, e in zip(charges, sigma, epsilon):
        force.addParticle(q, s, e)
    return force


def custom_nonbonded(expression: str, per_particle: dict[str, np.ndarray], groups: list, periodic: bool,
                     global_parameters: dict[str, float] | None = None) -> openmm.CustomNonbondedForce:
    force = openmm.CustomNonbondedForce(expression)
    force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic if periodic
                             else openmm.CustomNonbondedForce.CutoffNonPeriodic)
    force.setCutoffDistance(CUTOFF)
    force.setUseLongRangeCorrection(False)
    for name in per_particle:
        force.addPerParticleParameter(name)
    for name, value in (global_parameters or {}).items():
        force.addGlobalParameter(name, value)
    for values in zip(*per_particle.values()):
        force.addParticle(list(values))
    for group_a, group_b in groups:
        force.addInteractionGroup([int(k) for k in group_a], [int(k) for k in group_b])
    return force


def molfree_energy_forces(fn, x: np.ndarray, box: np.ndarray | None, **kwargs) -> tuple[float, np.ndarray]:
    positions = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    energy = fn(positions, pairs_for(x, box), box=None if box is None else torch.as_tensor(box), **kwargs)
    assert energy.shape == ()
    (grad,) = torch.autograd.grad(energy, positions)
    return energy.item(), -grad.numpy()


def relative_deviation(value, reference) -> float:
    """``max |value - reference| / max |reference|``."""
    value, reference = np.asarray(value, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    return float(np.abs(value - reference).max() / np.abs(reference).max())


def assert_matches(molfree_result, openmm_result, rtol: float = RTOL) -> None:
    (energy, forces), (ref_energy, ref_forces) = molfree_result, openmm_result[:2]
    assert relative_deviation(energy, ref_energy) < rtol, (energy, ref_energy)
    assert relative_deviation(forces, ref_forces) < rtol


# ---------------------------------------------------------------------------------------------
# Against OpenMM
# ---------------------------------------------------------------------------------------------

LJ_CASES = {
    "cubic": (CUBIC, lattice_positions(CUBIC, 5, seed=1)),
    "triclinic": (TRICLINIC, lattice_positions(TRICLINIC, 5, seed=2)),
    "cluster": (None, lattice_positions(np.diag([1.6, 1.6, 1.6]), 4, seed=3)),
}


@pytest.mark.parametrize("switch", [None, 0.7])
@pytest.mark.parametrize("case", LJ_CASES)
def test_lennard_jones_matches_openmm(case, switch):
    box, x = LJ_CASES[case]
    sigma, epsilon = lj_parameters(len(x), seed=4)
    reference = openmm_reference([nonbonded_force(np.zeros(len(x)), sigma, epsilon, box is not None, switch)], x, box)
    result = molfree_energy_forces(lennard_jones, x, box, sigma=sigma, epsilon=epsilon, cutoff=CUTOFF,
                                   switch_distance=switch)
    assert_matches(result, reference)


@pytest.mark.parametrize("epsilon_solvent", [78.3, 5.0])
@pytest.mark.parametrize("case", ["cubic", "triclinic", "cluster"])
def test_reaction_field_matches_openmm(case, epsilon_solvent):
    box, x = LJ_CASES[case]
    charges = ion_charges(len(x), seed=5)
    sigma, epsilon = lj_parameters(len(x), seed=6)
    force = nonbonded_force(charges, sigma, epsilon, box is not None, epsilon_solvent=epsilon_solvent)
    reference = openmm_reference([force], x, box)

    def total(positions, pairs, box):
        return (lennard_jones(positions, pairs, sigma, epsilon, CUTOFF, box=box)
                + coulomb_reaction_field(positions, pairs, charges, CUTOFF, box=box, epsilon_solvent=epsilon_solvent))

    assert_matches(molfree_energy_forces(total, x, box), reference)


@pytest.mark.parametrize("case", ["cubic", "cluster"])
def test_shifted_coulomb_matches_custom_nonbonded(case):
    box, x = LJ_CASES[case]
    charges = ion_charges(len(x), seed=7)
    expression = f"{ONE_4PI_EPS0}*q1*q2*(1/r - 1/{CUTOFF})"
    reference = openmm_reference([custom_nonbonded(expression, {"q": charges}, [], box is not None)], x, box)
    result = molfree_energy_forces(coulomb_reaction_field, x, box, charges=charges, cutoff=CUTOFF, epsilon_solvent=1.0)
    assert_matches(result, reference)


SOFTCORE = "lambda*4*eps*(1/x^2 - 1/x); x = alpha*(1 - lambda) + (r/sig)^6; " \
           "sig = 0.5*(sigma1 + sigma2); eps = sqrt(epsilon1*epsilon2)"
PLAIN_LJ = "4*eps*((sig/r)^12 - (sig/r)^6); sig = 0.5*(sigma1 + sigma2); eps = sqrt(epsilon1*epsilon2)"


@pytest.mark.parametrize("lam", [0.0, 0.35, 1.0])
@pytest.mark.parametrize("case", ["cubic", "cluster"])
def test_softcore_matches_custom_nonbonded(case, lam):
    box, x = LJ_CASES[case]
    sigma, epsilon = lj_parameters(len(x), seed=8)
    alchemical = np.zeros(len(x), dtype=bool)
    alchemical[[3, 4, 17, 40]] = True
    alch, env = np.flatnonzero(alchemical), np.flatnonzero(~alchemical)
    periodic = box is not None
    params = {"sigma": sigma, "epsilon": epsilon}
    forces = [
        custom_nonbonded(SOFTCORE, params, [(alch, env)], periodic, {"lambda": lam, "alpha": 0.5}),
        custom_nonbonded(PLAIN_LJ, params, [(alch, alch), (env, env)], periodic),
    ]
    forces[0].addEnergyParameterDerivative("lambda")
    reference = openmm_reference(forces, x, box, {"lambda": lam})

    lam_tensor = torch.tensor(lam, dtype=torch.float64, requires_grad=True)
    positions = torch.tensor(x, requires_grad=True)
    energy = softcore_lennard_jones(positions, pairs_for(x, box), sigma, epsilon, CUTOFF, lam_tensor,
                                    torch.as_tensor(alchemical), box=box)
    grad_x, du_dlam = torch.autograd.grad(energy, [positions, lam_tensor])
    assert_matches((energy.item(), -grad_x.numpy()), reference)
    assert relative_deviation(du_dlam.item(), reference[2]["lambda"]) < RTOL


# ---------------------------------------------------------------------------------------------
# Derivatives
# ---------------------------------------------------------------------------------------------

SMALL_BOX = np.diag([1.9, 2.0, 2.1]) + np.array([[0, 0, 0], [0.3, 0, 0], [-0.2, 0.4, 0]])
SMALL_X = lattice_positions(SMALL_BOX, 3, seed=9)
SMALL_SIGMA, SMALL_EPSILON = lj_parameters(len(SMALL_X), seed=10)
SMALL_ALCHEMICAL = torch.zeros(len(SMALL_X), dtype=torch.bool)
SMALL_ALCHEMICAL[[0, 5, 13]] = True

POTENTIALS = {
    "lj": lambda x, p, box: lennard_jones(x, p, SMALL_SIGMA, SMALL_EPSILON, CUTOFF, box=box),
    "lj_switch": lambda x, p, box: lennard_jones(x, p, SMALL_SIGMA, SMALL_EPSILON, CUTOFF, box=box,
                                                 switch_distance=0.6),
    "softcore": lambda x, p, box: softcore_lennard_jones(x, p, SMALL_SIGMA, SMALL_EPSILON, CUTOFF, 0.4,
                                                         SMALL_ALCHEMICAL, box=box),
    "reaction_field": lambda x, p, box: coulomb_reaction_field(x, p, ion_charges(len(SMALL_X), 11), CUTOFF, box=box),
}


@pytest.mark.parametrize("name", POTENTIALS)
def test_forces_are_minus_gradient_by_finite_differences(name):
    fn, h = POTENTIALS[name], 1e-5
    x = torch.tensor(SMALL_X)
    box = torch.tensor(SMALL_BOX)
    pairs = pairs_for(SMALL_X, SMALL_BOX)
    n = x.numel()
    displaced = x.reshape(1, -1) + h * torch.cat([torch.eye(n), -torch.eye(n)]).double()
    batch = displaced.reshape(2 * n, -1, 3)
    batched_pairs = pairs_for(batch.numpy(), np.broadcast_to(SMALL_BOX, (2 * n, 3, 3)))
    energies = fn(batch, batched_pairs, box)
    numeric = ((energies[:n] - energies[n:]) / (2 * h)).reshape(x.shape)

    positions = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(positions, pairs, box), positions)
    assert relative_deviation(grad, numeric) < 1e-6


@pytest.mark.parametrize("name", POTENTIALS)
def test_box_gradient_by_finite_differences(name):
    fn, h = POTENTIALS[name], 1e-6
    x = torch.tensor(SMALL_X)
    pairs = pairs_for(SMALL_X, SMALL_BOX)
    box = torch.tensor(SMALL_BOX, requires_grad=True)
    (grad,) = torch.autograd.grad(fn(x, pairs, box), box)
    for row, col in [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]:
        step = torch.zeros(3, 3, dtype=torch.float64)
        step[row, col] = h
        numeric = (fn(x, pairs, box.detach() + step) - fn(x, pairs, box.detach() - step)) / (2 * h)
        assert abs(grad[row, col].item() - numeric.item()) < 1e-6 * grad.abs().max().item()


def test_lambda_derivative_by_finite_differences():
    x = torch.tensor(SMALL_X)
    pairs = pairs_for(SMALL_X, SMALL_BOX)

    def energy(lam):
        return softcore_lennard_jones(x, pairs, SMALL_SIGMA, SMALL_EPSILON, CUTOFF, lam, SMALL_ALCHEMICAL,
                                      box=SMALL_BOX, alpha=0.5)

    h = 1e-6
    for value in (0.1, 0.5, 0.9):
        lam = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        (analytic,) = torch.autograd.grad(energy(lam), lam)
        numeric = (energy(value + h) - energy(value - h)) / (2 * h)
        assert analytic.item() == pytest.approx(numeric.item(), rel=1e-6, abs=1e-8)


def test_second_derivatives_raise():
    positions = torch.tensor(SMALL_X, requires_grad=True)
    energy = POTENTIALS["lj"](positions, pairs_for(SMALL_X, SMALL_BOX), torch.tensor(SMALL_BOX))
    (grad,) = torch.autograd.grad(energy, positions, create_graph=True)
    with pytest.raises(NotImplementedError, match="second derivatives"):
        torch.autograd.grad(grad.square().sum(), positions)


# ---------------------------------------------------------------------------------------------
# Batching and precision
# ---------------------------------------------------------------------------------------------


def batch_of_configurations(n_batch: int = 3) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([lattice_positions(SMALL_BOX, 3, seed=20 + b) for b in range(n_batch)])
    boxes = np.stack([SMALL_BOX * (1 + 0.02 * b) for b in range(n_batch)])
    return x, boxes


@pytest.mark.parametrize("name", POTENTIALS)
def test_batched_equals_per_configuration(name):
    fn = POTENTIALS[name]
    x, boxes = batch_of_configurations()
    positions = torch.tensor(x, requires_grad=True)
    energies = fn(positions, pairs_for(x, boxes), torch.tensor(boxes))
    assert energies.shape == (len(x),)
    (grad,) = torch.autograd.grad(energies.sum(), positions)
    for b in range(len(x)):
        single = torch.tensor(x[b], requires_grad=True)
        energy = fn(single, pairs_for(x[b], boxes[b]), torch.tensor(boxes[b]))
        (single_grad,) = torch.autograd.grad(energy, single)
        torch.testing.assert_close(energies[b], energy, rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(grad[b], single_grad, rtol=1e-12, atol=1e-10)


def test_shared_box_and_padded_pairs():
    x, boxes = batch_of_configurations()
    reference = POTENTIALS["lj"](torch.tensor(x), pairs_for(x, SMALL_BOX), torch.tensor(SMALL_BOX))
    padded = neighbor_list(torch.tensor(x), CUTOFF + SKIN, box=torch.tensor(SMALL_BOX), max_pairs=2000)
    assert (padded.i == -1).any() and not padded.overflow
    energies = POTENTIALS["lj"](torch.tensor(x), padded, torch.tensor(SMALL_BOX))
    torch.testing.assert_close(energies, reference, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("name", POTENTIALS)
def test_float32_close_to_float64(name):
    fn = POTENTIALS[name]
    x, boxes = batch_of_configurations()
    pairs = pairs_for(x, boxes)
    results = {}
    for dtype in (torch.float32, torch.float64):
        positions = torch.tensor(x, dtype=dtype, requires_grad=True)
        energies = fn(positions, pairs, torch.tensor(boxes, dtype=dtype))
        assert energies.dtype == dtype
        (grad,) = torch.autograd.grad(energies.sum(), positions)
        results[dtype] = energies.detach().double(), grad.double()
    assert relative_deviation(results[torch.float32][0], results[torch.float64][0]) < 1e-4
    assert relative_deviation(results[torch.float32][1], results[torch.float64][1]) < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU (the same Warp kernels on CUDA tensors); this machine has none")
@pytest.mark.parametrize("name", POTENTIALS)
def test_cuda_matches_cpu(name):
    fn = POTENTIALS[name]
    x, boxes = batch_of_configurations()
    pairs = pairs_for(x, boxes)
    results = []
    for device in ("cpu", "cuda"):
        positions = torch.tensor(x, device=device, requires_grad=True)
        energies = fn(positions, pairs, torch.tensor(boxes, device=device))
        (grad,) = torch.autograd.grad(energies.sum(), positions)
        results.append((energies.detach().cpu(), grad.cpu()))
    for cpu, cuda in zip(*results):
        torch.testing.assert_close(cuda, cpu, rtol=1e-10, atol=1e-10)


def test_empty_pair_list_gives_zero():
    empty = (torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0, 3, dtype=torch.int64))
    energy = lennard_jones(torch.tensor(SMALL_X), empty, SMALL_SIGMA, SMALL_EPSILON, CUTOFF)
    assert energy.item() == 0.0


# ---------------------------------------------------------------------------------------------
# torch.library
# ---------------------------------------------------------------------------------------------


def op_arguments():
    x = torch.tensor(SMALL_X[None], requires_grad=True)
    box = torch.tensor(SMALL_BOX[None], requires_grad=True)
    pairs = pairs_for(SMALL_X, SMALL_BOX)
    pair_args = (pairs.i, pairs.j, pairs.shifts)
    sigma, epsilon = torch.tensor(SMALL_SIGMA), torch.tensor(SMALL_EPSILON)
    lam = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    return {
        _warp_pairwise.lennard_jones_op: (x, box, *pair_args, sigma, epsilon, CUTOFF, 0.6),
        _warp_pairwise.softcore_lennard_jones_op: (x, box, lam, *pair_args, sigma, epsilon, SMALL_ALCHEMICAL,
                                                   CUTOFF, 0.5),
        _warp_pairwise.coulomb_reaction_field_op: (x, box, *pair_args, torch.tensor(ion_charges(len(SMALL_X), 12)),
                                                   CUTOFF, 0.3, 1.4),
    }


@pytest.mark.parametrize("index", range(3))
def test_opcheck(index):
    op, args = list(op_arguments().items())[index]
    torch.library.opcheck(op, args)


def test_torch_compile_fullgraph():
    """The custom op traces into one graph (fake implementation, autograd formula); inductor: slow test."""
    op = _warp_pairwise.softcore_lennard_jones_op
    x, box, lam, *rest = op_arguments()[op]

    def energy(x, box, lam):
        return op(x, box, lam, *rest)[0].sum()

    compiled = torch.compile(energy, fullgraph=True, backend="aot_eager")
    inputs = [t.detach().clone().requires_grad_(True) for t in (x, box, lam)]
    expected = torch.autograd.grad(energy(*inputs), inputs)
    actual = torch.autograd.grad(compiled(*inputs), inputs)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


@pytest.mark.slow
def test_torch_compile_public_api():
    """Default (inductor) backend, with the graph breaks of input validation; ~2 min on 2 cores."""
    fn = POTENTIALS["softcore"]
    pairs = pairs_for(SMALL_X, SMALL_BOX)
    box = torch.tensor(SMALL_BOX)

    def energy_and_forces(x):
        x = x.requires_grad_(True)
        energy = fn(x, pairs, box)
        return energy, -torch.autograd.grad(energy, x)[0]

    compiled = torch.compile(energy_and_forces)
    for expected, actual in zip(energy_and_forces(torch.tensor(SMALL_X)), compiled(torch.tensor(SMALL_X))):
        torch.testing.assert_close(actual, expected)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _lj(**overrides):
    kwargs = {"positions": torch.tensor(SMALL_X), "pairs": pairs_for(SMALL_X, SMALL_BOX), "sigma": SMALL_SIGMA,
              "epsilon": SMALL_EPSILON, "cutoff": CUTOFF, "box": SMALL_BOX, **overrides}
    return lennard_jones(**kwargs)


def _softcore(**overrides):
    kwargs = {"positions": torch.tensor(SMALL_X), "pairs": pairs_for(SMALL_X, SMALL_BOX), "sigma": SMALL_SIGMA,
              "epsilon": SMALL_EPSILON, "cutoff": CUTOFF, "lambda_sterics": 0.5, "alchemical": SMALL_ALCHEMICAL,
              "box": SMALL_BOX, **overrides}
    return softcore_lennard_jones(**kwargs)


def _nan_positions():
    x = torch.tensor(SMALL_X)
    x[2, 1] = float("nan")
    return x


def _bad_pairs():
    pairs = pairs_for(SMALL_X, SMALL_BOX)
    return pairs.i, pairs.j + len(SMALL_X), pairs.shifts


BAD_INPUTS = {
    "sigma shape": (lambda: _lj(sigma=SMALL_SIGMA[:-1]), "sigma"),
    "epsilon shape": (lambda: _lj(epsilon=np.ones((len(SMALL_X), 2))), "epsilon"),
    "negative epsilon": (lambda: _lj(epsilon=-SMALL_EPSILON), "non-negative"),
    "negative cutoff": (lambda: _lj(cutoff=-1.0), "cutoff"),
    "switch beyond cutoff": (lambda: _lj(switch_distance=CUTOFF), "switch_distance"),
    "nan positions": (lambda: _lj(positions=_nan_positions()), "NaN"),
    "integer positions": (lambda: _lj(positions=torch.ones(len(SMALL_X), 3, dtype=torch.int64)), "floating"),
    "index out of range": (lambda: _lj(pairs=_bad_pairs()), "pair indices"),
    "shifts without box": (lambda: _lj(box=None), "no box"),
    "overflowed list": (lambda: _lj(pairs=neighbor_list(torch.tensor(SMALL_X), CUTOFF, box=torch.tensor(SMALL_BOX),
                                                        max_pairs=5)), "overflow"),
    "pair across configurations": (lambda: lennard_jones(torch.tensor(batch_of_configurations()[0]),
                                                         (torch.tensor([0]), torch.tensor([30]),
                                                          torch.zeros(1, 3, dtype=torch.int64)),
                                                         SMALL_SIGMA, SMALL_EPSILON, CUTOFF), "same configuration"),
    "lambda above 1": (lambda: _softcore(lambda_sterics=1.5), "lambda_sterics"),
    "lambda below 0": (lambda: _softcore(lambda_sterics=torch.tensor(-0.1)), "lambda_sterics"),
    "alchemical not bool": (lambda: _softcore(alchemical=[0, 5, 13]), "bool"),
    "alchemical shape": (lambda: _softcore(alchemical=SMALL_ALCHEMICAL[:4]), "alchemical"),
    "negative alpha": (lambda: _softcore(alpha=-0.5), "alpha"),
    "charges shape": (lambda: coulomb_reaction_field(torch.tensor(SMALL_X), pairs_for(SMALL_X, SMALL_BOX),
                                                     np.ones(3), CUTOFF, box=SMALL_BOX), "charges"),
    "epsilon_solvent below 1": (lambda: coulomb_reaction_field(torch.tensor(SMALL_X), pairs_for(SMALL_X, SMALL_BOX),
                                                               np.ones(len(SMALL_X)), CUTOFF, box=SMALL_BOX,
                                                               epsilon_solvent=0.5), "epsilon_solvent"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_raise(case):
    call, match = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=match):
        call()
