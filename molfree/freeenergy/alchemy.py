"""Alchemical decoupling of a solute from its environment in an OpenMM System.

:func:`alchemical_system` returns a copy of a System in which every solute–environment
interaction is switched by two Context global parameters (1: fully coupled, 0: decoupled):

* ``lambda_electrostatics``: solute charges enter the NonbondedForce as ``λ_elec · q_i``
  (particle parameter offsets), so solute–environment Coulomb (direct and reciprocal space)
  scales linearly with λ_elec.
* ``lambda_sterics``: solute–environment Lennard-Jones moves to a CustomNonbondedForce over the
  interaction group (solute × environment) with the Beutler soft core
  ``λ · 4ε[1/x² − 1/x]``, ``x = α(1 − λ) + (r/σ)⁶``, α = 0.5 by default — the form of
  :func:`molfree.neighbors.softcore_lennard_jones`. Lorentz–Berthelot mixing, same cutoff,
  periodicity and switching function as the original NonbondedForce.

Decoupling, not annihilation: intra-solute interactions are kept at full strength for every λ.
Solute pairs beyond the NonbondedForce's exceptions become exceptions carrying the full
``q_i q_j`` and LJ parameters (OpenMM evaluates exceptions as plain Coulomb + LJ, independent of
the particle charges), so the solute's internal energy in vacuum does not depend on λ at all.
Under PME/Ewald the reciprocal sum still sees the scaled charges; because every intra-solute
pair is an exception, OpenMM subtracts its reciprocal-space part, and what remains of the solute
with itself is ``λ_elec²`` × (its interaction with its own periodic images), which vanishes in
the decoupled state, as it should (a decoupled solute sees no images). With a reaction-field
cutoff (Cutoff(Non)Periodic) the new intra-solute exceptions are plain Coulomb, so λ = 1
differs from the original by the reaction-field term of those pairs (there are none for
methane and other solutes whose atoms are all within three bonds).

Long-range dispersion correction: if the original NonbondedForce uses it, the solvent–solvent
correction stays in the NonbondedForce (the solute's ε is zero there) and the soft-core force
gets its own ``setUseLongRangeCorrection(True)``, whose λ-dependent tail OpenMM integrates for
the solute–environment pairs only. Without it, both forces are plain truncations.

Environment–environment interactions are untouched.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

#: Context global parameters of an alchemical System.
LAMBDA_ELECTROSTATICS = "lambda_electrostatics"
LAMBDA_STERICS = "lambda_sterics"

_SOFTCORE = ("lambda_sterics*4*epsilon*(1/x^2 - 1/x);"
             "x = softcore_alpha*(1 - lambda_sterics) + (r/sigma)^6;"
             "sigma = 0.5*(sigma1 + sigma2); epsilon = sqrt(epsilon1*epsilon2)")


def check_lambda(value: float, name: str = "lambda") -> float:
    """``value`` as a float, or ``ValueError`` unless it lies in [0, 1]."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return value


def lambda_schedule(n_electrostatics: int, n_sterics: int) -> list[tuple[float, float]]:
    """Alchemical states ``(λ_elec, λ_sterics)``, fully coupled first and fully decoupled last.

    Electrostatics are switched off first at full sterics (``n_electrostatics`` evenly spaced
    λ_elec from 1 to 0), then sterics at zero charge (``n_sterics`` evenly spaced λ_sterics from
    1 to 0); the state (0, 1) is shared, so there are ``n_electrostatics + n_sterics − 1`` states.
    """
    if n_electrostatics < 2 or n_sterics < 2:
        raise ValueError(f"need n_electrostatics >= 2 and n_sterics >= 2, got {n_electrostatics}, {n_sterics}")
    states = [(float(e), 1.0) for e in np.linspace(1.0, 0.0, n_electrostatics)]
    return states + [(0.0, float(s)) for s in np.linspace(1.0, 0.0, n_sterics)[1:]]


def context_parameters(state: tuple[float, float]) -> dict[str, float]:
    """The Context parameters of one state ``(λ_elec, λ_sterics)``, checked to lie in [0, 1]."""
    electrostatics, sterics = state
    return {LAMBDA_ELECTROSTATICS: check_lambda(electrostatics, LAMBDA_ELECTROSTATICS),
            LAMBDA_STERICS: check_lambda(sterics, LAMBDA_STERICS)}


def _nonbonded_force(system):
    import openmm

    forces = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
    if len(forces) != 1:
        raise ValueError(f"the system must have exactly one NonbondedForce, found {len(forces)}")
    return forces[0]


def _softcore_force(nonbonded, solute: set[int], alpha: float):
    """CustomNonbondedForce for solute–environment soft-core LJ matching ``nonbonded``'s cutoff scheme."""
    import openmm
    from openmm import unit

    force = openmm.CustomNonbondedForce(_SOFTCORE)
    force.setName("AlchemicalSoftcoreLennardJones")
    force.addGlobalParameter(LAMBDA_STERICS, 1.0)
    force.addGlobalParameter("softcore_alpha", alpha)
    force.addPerParticleParameter("sigma")
    force.addPerParticleParameter("epsilon")
    method = nonbonded.getNonbondedMethod()
    if method == openmm.NonbondedForce.NoCutoff:
        force.setNonbondedMethod(openmm.CustomNonbondedForce.NoCutoff)
    elif method == openmm.NonbondedForce.CutoffNonPeriodic:
        force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffNonPeriodic)
    else:  # CutoffPeriodic, Ewald, PME
        force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(nonbonded.getCutoffDistance())
    force.setUseSwitchingFunction(nonbonded.getUseSwitchingFunction())
    force.setSwitchingDistance(nonbonded.getSwitchingDistance())
    force.setUseLongRangeCorrection(nonbonded.getUseDispersionCorrection() and method != openmm.NonbondedForce.NoCutoff)
    for index in range(nonbonded.getNumParticles()):
        _, sigma, epsilon = nonbonded.getParticleParameters(index)
        sigma, epsilon = sigma.value_in_unit(unit.nanometer), epsilon.value_in_unit(unit.kilojoule_per_mole)
        # σ only matters where ε > 0; a placeholder keeps (r/σ)⁶ finite for σ = 0 (e.g. TIP3P hydrogens)
        force.addParticle([sigma if epsilon > 0 else 1.0, epsilon])
    environment = set(range(nonbonded.getNumParticles())) - solute
    force.addInteractionGroup(sorted(solute), sorted(environment))
    return force


def alchemical_system(system, solute_atoms: Sequence[int], alpha: float = 0.5):
    """A copy of ``system`` whose solute–environment interactions are switched by λ_elec and λ_sterics.

    Args:
        system: ``openmm.System`` with exactly one NonbondedForce (any nonbonded method but LJPME).
        solute_atoms: indices of the solute particles (a molecule with no exceptions to the rest).
        alpha: soft-core parameter α (dimensionless, ≥ 0).

    Returns:
        A new ``openmm.System`` with the global parameters ``lambda_electrostatics`` and
        ``lambda_sterics`` (defaults 1); see the module docstring for what each term does.

    Raises:
        ValueError for an empty or out-of-range solute, solute–environment exceptions, LJPME or
        a system without a single NonbondedForce.
    """
    import openmm
    from openmm import unit

    if not (np.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a non-negative number, got {alpha!r}")
    solute = {int(i) for i in solute_atoms}
    n_particles = system.getNumParticles()
    if not solute or min(solute) < 0 or max(solute) >= n_particles:
        raise ValueError(f"solute_atoms must be a non-empty set of indices in [0, {n_particles})")
    system = copy.deepcopy(system)
    nonbonded = _nonbonded_force(system)
    if nonbonded.getNonbondedMethod() == openmm.NonbondedForce.LJPME:
        raise ValueError("LJPME is not supported: its reciprocal-space dispersion cannot be soft-cored")

    excepted = set()
    for index in range(nonbonded.getNumExceptions()):
        i, j, *_ = nonbonded.getExceptionParameters(index)
        if (i in solute) != (j in solute):
            raise ValueError(f"exception between solute atom and environment atom ({i}, {j}): "
                             "the solute must be a separate molecule")
        excepted.add((min(i, j), max(i, j)))

    softcore = _softcore_force(nonbonded, solute, alpha)
    parameters = {i: nonbonded.getParticleParameters(i) for i in solute}
    for i in sorted(solute):  # keep intra-solute pairs at full strength as exceptions
        for j in sorted(solute):
            if i < j and (i, j) not in excepted:
                (qi, si, ei), (qj, sj, ej) = parameters[i], parameters[j]
                nonbonded.addException(i, j, qi * qj, 0.5 * (si + sj), (ei * ej).sqrt())
    nonbonded.addGlobalParameter(LAMBDA_ELECTROSTATICS, 1.0)
    for i in sorted(solute):
        charge, sigma, _ = parameters[i]
        nonbonded.setParticleParameters(i, 0.0 * charge, sigma, 0.0)
        if charge.value_in_unit(unit.elementary_charge) != 0:
            nonbonded.addParticleParameterOffset(LAMBDA_ELECTROSTATICS, i, charge, 0.0, 0.0)
    for index in range(nonbonded.getNumExceptions()):  # platforms require identical exclusions;
        softcore.addExclusion(*nonbonded.getExceptionParameters(index)[:2])  # none is solute–environment
    system.addForce(softcore)
    return system
