"""The interaction of a solute with a frozen periodic environment, in torch, as OpenMM computes it.

For a solvated OpenMM System (one NonbondedForce with PME, a cubic box) and a bank of environment frames
(the solvent's positions, ``[F, M, 3]`` nm), :class:`SoluteEnvironment` evaluates the solute–environment
interaction of batches of solute positions placed in chosen frames, differentiably:

* Lennard-Jones with the Beutler soft core of :mod:`molfree.freeenergy.alchemy` (``λ_sterics`` = s,
  α = 0.5, Lorentz–Berthelot mixing, the NonbondedForce's cutoff and switching function);
* Coulomb by Ewald summation with OpenMM's splitting parameter: real space q_i q_j erfc(α r)/r within the
  cutoff, reciprocal space the solute × environment cross term of the structure factors, whose environment
  half is computed once per frame. (An uncharged System, such as the LJ fluid of
  :mod:`~molfree.freeenergy.lj_insertion`, may use CutoffPeriodic instead of PME: it has no Coulomb term.)

Two terms do not depend on where the solute is or on the frame, and are left to OpenMM
(:meth:`SoluteEnvironment.openmm_constants`): the soft-core force's long-range dispersion correction and
the solute's electrostatic interaction with its own periodic images (a cubic lattice sum, independent of
the solute's orientation to within the PME error). Energies are kJ/mol unless a name says kT.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .. import units
from .alchemy import LAMBDA_ELECTROSTATICS, LAMBDA_STERICS, alchemical_system

#: Relative size of the largest reciprocal-space term left out of the Ewald sum.
RECIPROCAL_TOLERANCE = 1e-5


def squared_distances(d: Tensor, box_length: float) -> Tensor:
    """|d|² (nm²) of displacements ``d`` ``[..., 3]`` (nm) taken to the nearest image in a cubic box, ``[...]``.

    (A matrix product instead of ``sum(-1)``: torch's reduction over a last dimension of 3 is slow on CPU.)
    """
    d = d - box_length * torch.round(d / box_length)
    return (d * d) @ d.new_ones(3)


def softcore_pair(r2: Tensor, sigma2, epsilon, s, alpha: float, cutoff: float) -> Tensor:
    """Beutler soft-core LJ s·4ε[1/q² − 1/q], q = α(1 − s) + (r²/σ²)³, truncated at ``cutoff`` (kJ/mol).

    ``r2`` squared distances (nm²); ``sigma2`` (nm²), ``epsilon`` (kJ/mol) and ``s`` broadcast against it.
    At s = 1 this is the plain truncated LJ; at s = 0 (or ε = 0) it vanishes.
    """
    q = alpha * (1 - s) + (r2 / sigma2) ** 3
    pair = s * 4 * epsilon * (1 / q**2 - 1 / q)
    return torch.where(r2 < cutoff**2, pair, torch.zeros_like(pair))


def _nonbonded(system):
    import openmm

    forces = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
    if len(forces) != 1 or forces[0].getNonbondedMethod() not in (openmm.NonbondedForce.PME,
                                                                  openmm.NonbondedForce.CutoffPeriodic):
        raise ValueError("the system needs exactly one NonbondedForce with PME (or CutoffPeriodic if uncharged)")
    return forces[0]


def _cubic_edge(system) -> float:
    from openmm import unit

    box = np.array([v.value_in_unit(unit.nanometer) for v in system.getDefaultPeriodicBoxVectors()])
    if not np.allclose(box, np.eye(3) * box[0, 0], atol=1e-9):
        raise ValueError(f"the environment's box must be cubic, got box vectors {box.tolist()} nm")
    return float(box[0, 0])


def _ewald_alpha(system) -> float:
    """OpenMM's Ewald splitting parameter α (1/nm) for the NonbondedForce, as the CPU platform chooses it."""
    import openmm

    context = openmm.Context(copy_system(system), openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    alpha = _nonbonded(context.getSystem()).getPMEParametersInContext(context)[0]
    return float(alpha)


def copy_system(system):
    """An independent copy of an ``openmm.System`` (through its XML)."""
    import openmm

    return openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))


class SoluteEnvironment(nn.Module):
    """Solute–environment interaction for solute positions ``[B, n, 3]`` (nm) placed in frames ``[B]`` (long).

    Its tensors are non-persistent buffers: derived from the System and the frames, they stay out of the
    checkpoints of any model that contains this module.

    Args:
        system: the solvated ``openmm.System`` (cubic box; PME, or CutoffPeriodic if no particle is charged).
        solute_atoms: the solute's particle indices; every other particle is environment.
        frames: environment positions ``[F, M, 3]`` (nm), M = particles − len(solute_atoms), in the System's order.
        softcore_alpha: the soft-core α of :func:`~molfree.freeenergy.alchemy.alchemical_system`.
    """

    def __init__(self, system, solute_atoms: Sequence[int], frames: Tensor, softcore_alpha: float = 0.5):
        super().__init__()
        import openmm
        from openmm import unit

        nonbonded = _nonbonded(system)
        n = system.getNumParticles()
        self.solute_atoms = sorted(int(i) for i in solute_atoms)
        if not self.solute_atoms or self.solute_atoms[0] < 0 or self.solute_atoms[-1] >= n:
            raise ValueError(f"solute_atoms must be particle indices in [0, {n})")
        solute = set(self.solute_atoms)
        self.environment_atoms = [i for i in range(n) if i not in solute]
        frames = torch.as_tensor(frames, dtype=torch.float64)
        if frames.ndim != 3 or frames.shape[1:] != (len(self.environment_atoms), 3):
            raise ValueError(f"frames must be [F, {len(self.environment_atoms)}, 3] environment positions, "
                             f"got {tuple(frames.shape)}")
        if not torch.isfinite(frames).all():
            raise ValueError("frames contain NaN or infinite positions")
        parameters = np.array([[p[0].value_in_unit(unit.elementary_charge), p[1].value_in_unit(unit.nanometer),
                                p[2].value_in_unit(unit.kilojoule_per_mole)]
                               for p in map(nonbonded.getParticleParameters, range(n))])
        self.box_length = _cubic_edge(system)
        self.cutoff = float(nonbonded.getCutoffDistance().value_in_unit(unit.nanometer))
        self.switch = (float(nonbonded.getSwitchingDistance().value_in_unit(unit.nanometer))
                       if nonbonded.getUseSwitchingFunction() else None)
        self.softcore_alpha = float(softcore_alpha)
        self.charged = bool(np.any(parameters[:, 0] != 0))
        if self.charged and nonbonded.getNonbondedMethod() != openmm.NonbondedForce.PME:
            raise ValueError("charged systems need PME (CutoffPeriodic's reaction field is not implemented)")
        self.ewald_alpha = _ewald_alpha(system) if self.charged else None
        solute_p = torch.as_tensor(parameters[self.solute_atoms])
        env_p = torch.as_tensor(parameters[self.environment_atoms])
        self.register_buffer("frames", frames, persistent=False)
        self.register_buffer("solute_charge", solute_p[:, 0].clone(), persistent=False)
        self.register_buffer("environment_charge", env_p[:, 0].clone(), persistent=False)
        # Lorentz–Berthelot pair tables [n, M]; σ is irrelevant where ε = 0, so a placeholder keeps (r/σ)⁶ finite
        sigma = 0.5 * (solute_p[:, 1:2] + env_p[:, 1].unsqueeze(0))
        epsilon = torch.sqrt(solute_p[:, 2:3] * env_p[:, 2].unsqueeze(0))
        sigma2 = torch.where(epsilon > 0, sigma, torch.ones_like(sigma)) ** 2
        self.register_buffer("pair_sigma2", sigma2, persistent=False)
        self.register_buffer("pair_epsilon", epsilon, persistent=False)
        _, environment_type = torch.unique(env_p, dim=0, return_inverse=True)
        self.register_buffer("environment_type", environment_type, persistent=False)
        kvectors, prefactor = (self._reciprocal_lattice() if self.charged
                               else (torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)))
        self.register_buffer("kvectors", kvectors, persistent=False)
        self.register_buffer("reciprocal_prefactor", prefactor, persistent=False)
        environment_cos, environment_sin = self.structure_factors(frames)
        self.register_buffer("environment_cos", environment_cos, persistent=False)
        self.register_buffer("environment_sin", environment_sin, persistent=False)

    def structure_factors(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """(Σ_j q_j cos k·r_j, Σ_j q_j sin k·r_j) ``[F, K]`` of environment positions ``frames`` ``[F, M, 3]``."""
        phase = frames @ self.kvectors.T  # [F, M, K]
        charge = self.environment_charge.view(1, -1, 1)
        return (charge * torch.cos(phase)).sum(1), (charge * torch.sin(phase)).sum(1)

    def with_frames(self, frames: Tensor) -> SoluteEnvironment:
        """A shallow copy that evaluates in ``frames`` ``[F, M, 3]`` (nm) instead of the stored ones, differentiably
        in them (for forces on the environment)."""
        view = copy.copy(self)
        view._buffers = dict(self._buffers)
        view.frames = frames
        view.environment_cos, view.environment_sin = self.structure_factors(frames)
        return view

    def _reciprocal_lattice(self) -> tuple[Tensor, Tensor]:
        """Half-space k-vectors ``[K, 3]`` (1/nm) and 2·4π k_e e^{−k²/4α²}/(V k²) for the cross term."""
        alpha, edge = self.ewald_alpha, self.box_length
        k_max = 2 * alpha * math.sqrt(-math.log(RECIPROCAL_TOLERANCE))
        n_max = math.ceil(k_max * edge / (2 * math.pi))
        grid = torch.arange(-n_max, n_max + 1, dtype=torch.float64)
        n = torch.cartesian_prod(grid, grid, grid)
        half = (n[:, 0] > 0) | ((n[:, 0] == 0) & (n[:, 1] > 0)) | ((n[:, 0] == 0) & (n[:, 1] == 0) & (n[:, 2] > 0))
        k = 2 * math.pi * n[half] / edge
        k2 = (k * k).sum(-1)
        keep = k2 <= k_max**2
        k, k2 = k[keep], k2[keep]
        prefactor = 2 * 4 * math.pi * units.ONE_4PI_EPS0 * torch.exp(-k2 / (4 * alpha**2)) / (edge**3 * k2)
        return k, prefactor

    def _switch(self, r2: Tensor) -> Tensor:
        if self.switch is None:
            return torch.ones_like(r2)
        x = ((r2.clamp_min(0).sqrt() - self.switch) / (self.cutoff - self.switch)).clamp(0, 1)
        return 1 - x**3 * (10 - 15 * x + 6 * x**2)

    def squared_distances(self, frame: Tensor, y: Tensor) -> Tensor:
        """Squared distances ``[B, n, M]`` (nm²) from the solute atoms ``y`` to frames ``frame``.

        Exact minimum-image values for every pair within the cutoff (pairs beyond it may get a longer image).
        When the cutoff plus the solute's radius fits in half the box, the environment is wrapped once around
        the solute's centroid and the pairs come from one batched product (half the cost for methane);
        otherwise each pair is wrapped on its own.
        """
        centre = y.mean(1, keepdim=True)
        body = y - centre
        if self.cutoff + float(body.detach().norm(dim=-1).max()) > self.box_length / 2:
            return squared_distances(y.unsqueeze(2) - self.frames[frame].unsqueeze(1), self.box_length)
        environment = self.frames[frame] - centre
        environment = environment - self.box_length * torch.round(environment / self.box_length)
        r2 = ((body * body).sum(-1).unsqueeze(2) + (environment * environment).sum(-1).unsqueeze(1)
              - 2 * body @ environment.transpose(1, 2))
        return r2.clamp_min(0.0)

    def lennard_jones(self, frame: Tensor, y: Tensor, s, r2: Tensor | None = None) -> Tensor:
        """Soft-core solute–environment LJ ``[B]`` (kJ/mol) at λ_sterics = ``s`` (scalar or ``[B]``).

        ``r2``: :meth:`squared_distances` of (frame, y), if already computed."""
        r2 = self.squared_distances(frame, y) if r2 is None else r2
        s = torch.as_tensor(s, dtype=y.dtype).reshape(-1, 1, 1)
        pair = softcore_pair(r2, self.pair_sigma2, self.pair_epsilon, s, self.softcore_alpha, self.cutoff)
        return (pair * self._switch(r2)).flatten(1).sum(-1)

    def coulomb(self, frame: Tensor, y: Tensor, r2: Tensor | None = None) -> Tensor:
        """Solute–environment Ewald electrostatics ``[B]`` (kJ/mol) at full solute charges (``r2`` as above);
        zero for an uncharged system."""
        if not self.charged:
            return torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        r2 = self.squared_distances(frame, y) if r2 is None else r2
        r = r2.clamp_min(1e-12).sqrt()
        qq = self.solute_charge.view(1, -1, 1) * self.environment_charge.view(1, 1, -1)
        real = torch.where(r < self.cutoff, qq * torch.special.erfc(self.ewald_alpha * r) / r, torch.zeros_like(r))
        phase = y @ self.kvectors.T  # [B, n, K]
        charge = self.solute_charge.view(1, -1, 1)
        solute_cos, solute_sin = (charge * torch.cos(phase)).sum(1), (charge * torch.sin(phase)).sum(1)
        cross = solute_cos * self.environment_cos[frame] + solute_sin * self.environment_sin[frame]
        return units.ONE_4PI_EPS0 * real.flatten(1).sum(-1) + cross @ self.reciprocal_prefactor

    def openmm_constants(self, system, positions: np.ndarray) -> dict[str, float]:
        """The position-independent terms (kJ/mol), from OpenMM at one coupled configuration ``[N, 3]`` (nm).

        ``dispersion_correction``: the soft-core force's long-range correction at λ_sterics = 1;
        ``self_images``: the solute's Coulomb interaction with its own periodic images at full charge,
        i.e. OpenMM's change in electrostatic energy from λ_elec = 0 to 1 minus :meth:`coulomb`.
        """
        import openmm
        from openmm import unit

        alchemical = alchemical_system(system, self.solute_atoms, alpha=self.softcore_alpha)
        for force in alchemical.getForces():
            force.setForceGroup(1 if isinstance(force, openmm.CustomNonbondedForce) else
                                2 if isinstance(force, openmm.NonbondedForce) else 0)
        truncated = copy_system(alchemical)
        for force in truncated.getForces():
            if isinstance(force, openmm.CustomNonbondedForce):
                force.setUseLongRangeCorrection(False)
        energies = {}
        for name, candidate in (("full", alchemical), ("truncated", truncated)):
            context = openmm.Context(candidate, openmm.VerletIntegrator(0.001),
                                     openmm.Platform.getPlatformByName("Reference"))
            context.setPositions(positions * unit.nanometer)
            for electrostatics in (0.0, 1.0):
                context.setParameter(LAMBDA_STERICS, 1.0)
                context.setParameter(LAMBDA_ELECTROSTATICS, electrostatics)
                for group in (1, 2):
                    state = context.getState(getEnergy=True, groups={group})
                    energies[name, electrostatics, group] = state.getPotentialEnergy().value_in_unit(
                        unit.kilojoule_per_mole)
        y = torch.as_tensor(positions[self.solute_atoms], dtype=torch.float64).unsqueeze(0)
        frame = self._frame_of(torch.as_tensor(positions[self.environment_atoms], dtype=torch.float64))
        with torch.no_grad():
            coulomb = float(self.coulomb(frame, y))
        return {"dispersion_correction": energies["full", 1.0, 1] - energies["truncated", 1.0, 1],
                "self_images": energies["full", 1.0, 2] - energies["full", 0.0, 2] - coulomb}

    def _frame_of(self, environment: Tensor) -> Tensor:
        """The index ``[1]`` of the stored frame equal to ``environment`` ``[M, 3]``; ValueError if none is."""
        match = torch.nonzero((self.frames - environment).abs().flatten(1).amax(1) < 1e-9).flatten()
        if match.numel() == 0:
            raise ValueError("the configuration's environment is not one of the stored frames")
        return match[:1]
