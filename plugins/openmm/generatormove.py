"""A Monte Carlo move for an OpenMM Context: independence proposals from a generator, exact MH acceptance.

    move = GeneratorMove(generator)
    for _ in range(1000):
        simulation.step(500)
        move.apply(simulation.context)
    print(move.acceptanceRate)

The proposal y ~ q is accepted with probability min(1, exp(−[U(y) − U(x)]/kT) · q(x)/q(y)), where U is
the potential energy of the Context's own System (every force in it), so the move leaves the
Boltzmann distribution of that System exactly invariant; velocities are left unchanged (they are
independent of positions in the target), so the move interleaves with any MD integrator.
"""
from __future__ import annotations

import math

import numpy as np
import torch


class GeneratorMove:
    """Metropolis–Hastings independence move driven by a generator.

    Args:
        generator: any object with ``propose(n) -> (x [n, N, 3] nm, log_q [n])``, ``log_prob(x [B, N, 3]) -> [B]``
            and ``temperature`` (K), e.g. :class:`molfree.flows.BoltzmannGenerator` or an adjoint sampler's
            probability flow (:meth:`molfree.samplers.AdjointSampler.probability_flow`; centre-of-mass-free, so
            with ``randomOrientation=True``).
        temperature: K; defaults to ``generator.temperature``. Must equal the integrator's.
        randomOrientation: place each proposal at the current centroid with a uniformly random
            rotation (for generators in a canonical frame, e.g. internal coordinates, on systems whose
            energy is invariant to rigid-body motion: vacuum or implicit solvent, no external fields).
        seed: seed of the acceptance test and the random rotations.

    Attributes: ``numProposed``, ``numAccepted``, ``acceptanceRate``.
    """

    def __init__(self, generator, temperature: float | None = None, randomOrientation: bool = False,
                 seed: int | None = None):
        from molfree import units

        self.generator = generator
        self.temperature = float(temperature if temperature is not None else generator.temperature)
        self.kT = units.kT(self.temperature)
        self.randomOrientation = randomOrientation
        self.rng = np.random.default_rng(seed)
        self.numProposed = 0
        self.numAccepted = 0

    @property
    def acceptanceRate(self) -> float:
        """Fraction of proposals accepted so far (nan before the first)."""
        return self.numAccepted / self.numProposed if self.numProposed else math.nan

    def apply(self, context) -> bool:
        """Propose once on ``context``; returns True if the proposal was accepted."""
        from openmm import unit

        if context.getSystem().usesPeriodicBoundaryConditions():
            raise ValueError("GeneratorMove proposes whole configurations and does not support periodic systems")
        state = context.getState(getPositions=True, getEnergy=True)
        current = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        current_energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        dtype = next(iter(self.generator.parameters()), torch.zeros((), dtype=torch.float64)).dtype \
            if hasattr(self.generator, "parameters") else torch.float64
        with torch.no_grad():
            proposal, log_q_new = self.generator.propose(1)
            proposal = proposal[0].double().numpy()
            if self.randomOrientation:
                proposal = self._reorient(proposal, current.mean(0))
            log_q_old = self.generator.log_prob(torch.as_tensor(current[None], dtype=dtype))
        self.numProposed += 1
        if proposal.shape != current.shape:
            raise ValueError(f"generator proposes {proposal.shape} positions, the Context has {current.shape}")
        if not (np.isfinite(proposal).all() and math.isfinite(float(log_q_new))):
            return False
        context.setPositions(proposal)
        new_energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        log_accept = -(new_energy - current_energy) / self.kT + float(log_q_old) - float(log_q_new)
        if math.isfinite(log_accept) and math.log(self.rng.uniform()) < log_accept:
            self.numAccepted += 1
            return True
        context.setPositions(current)
        return False

    def _reorient(self, positions: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """Rotate ``positions [N, 3]`` uniformly at random about their centroid and move it to ``centre``."""
        q = self.rng.normal(size=4)
        a, b, c, d = q / np.linalg.norm(q)
        rotation = np.array([[a*a + b*b - c*c - d*d, 2*(b*c - a*d), 2*(b*d + a*c)],
                             [2*(b*c + a*d), a*a - b*b + c*c - d*d, 2*(c*d - a*b)],
                             [2*(b*d - a*c), 2*(c*d + a*b), a*a - b*b - c*c + d*d]])
        return (positions - positions.mean(0)) @ rotation.T + centre
