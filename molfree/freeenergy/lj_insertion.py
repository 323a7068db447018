"""A Lennard-Jones solute in a periodic Lennard-Jones fluid: insertion free energy three independent ways.

ΔF = F(solute coupled) − F(solute decoupled) in kT (the solute's excess chemical potential βμ_ex) by

* :func:`neural_ti` — a learned λ-path (soft-core coupling driven by a learned schedule plus a solute–solvent
  pair network), trained by paired target score matching on coupled samples alone (nothing simulated at
  intermediate λ), and per-sample TI of the solute in each frozen solvent configuration combined exactly: the
  one-atom case of :mod:`molfree.freeenergy.solute_ti`;
* :func:`mbar_ladder` — Monte Carlo at each state of a soft-core λ ladder (:func:`ladder`) and MBAR;
* :func:`widom` — test-particle insertion into decoupled (pure-solvent) samples, ΔF = −ln⟨e^{−βΔU}⟩₀.

Units: reduced LJ units mapped onto molfree's internal units as in :mod:`molfree.energies.analytic`:
ε = 1 kJ/mol, σ = 1 nm, m = 1 Da (so τ = σ√(m/ε) = 1 ps) and T = T*·``units.REDUCED_TEMPERATURE`` K, where
kT = T* kJ/mol. Sampling is batched Metropolis Monte Carlo in torch (:func:`sample`: independent chains, so
samples are uncorrelated). Particle 0 is the solute, particles 1…N the solvent; positions ``[B, N + 1, 3]``
(nm) in a cubic box of edge L = (N/ρ*)^{1/3}. Every pair interaction is truncated at ``cutoff`` without shift or
tail correction, as in the equivalent alchemical OpenMM System (:meth:`LJInsertion.openmm_system`, built with
:func:`~molfree.freeenergy.alchemy.alchemical_system`; the tests check that the energies agree).

The soft-core pair (:func:`~molfree.freeenergy.solute_environment.softcore_pair`) repeats
:func:`molfree.neighbors.softcore_lennard_jones`'s formula in plain torch because target score matching needs its
mixed second derivative ∂²/∂x∂λ, which the kernel does not provide.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .. import units
from . import neural_ti as nti
from . import solute_ti
from .alchemy import alchemical_system
from .estimators import FreeEnergyResult, exp, mbar
from .solute_environment import SoluteEnvironment, softcore_pair, squared_distances

#: Solute index in every configuration.
SOLUTE = 0


class SoftcoreLJCoupling(nn.Module):
    """Beutler soft-core solute–solvent LJ, c(x, s) = Σ_j s·4ε[1/q² − 1/q]/kT, q = α(1 − s) + (r_0j/σ)⁶ (kT).

    c(x, 0) = 0 and c(x, 1) = the plain truncated LJ of the solute with the solvent, exactly.
    ``x``: ``[B, N + 1, 3]`` nm (solute first); ``s``: scalar or ``[B]`` in [0, 1]; returns ``[B]``.
    """

    def __init__(self, sigma: float, epsilon: float, cutoff: float, box_length: float, kt: float,
                 alpha: float = 0.5):
        super().__init__()
        self.sigma, self.epsilon, self.cutoff = float(sigma), float(epsilon), float(cutoff)
        self.box_length, self.kt, self.alpha = float(box_length), float(kt), float(alpha)

    def forward(self, x: Tensor, s) -> Tensor:
        s = torch.as_tensor(s, dtype=x.dtype, device=x.device).reshape(-1, 1)
        r2 = squared_distances(x[:, SOLUTE + 1:] - x[:, SOLUTE:SOLUTE + 1], self.box_length)
        return (softcore_pair(r2, self.sigma**2, self.epsilon, s, self.alpha, self.cutoff) / self.kt).sum(-1)


@dataclass(frozen=True)
class LJInsertion:
    """One LJ solute + ``n_solvent`` LJ solvent particles (reduced units, see the module docstring).

    The defaults are the CI system (32 + 1, L = 4σ; T* = 2 lies above the LJ critical temperature, ≈ 1.3 untruncated).

    Attributes:
        n_solvent: solvent particles N.
        density: reduced solvent density ρ* = N σ³ / V.
        reduced_temperature: T* = k_B T / ε.
        cutoff: truncation distance (σ = nm), at most L/2.
        solute_sigma, solute_epsilon: the solute's σ (nm) and ε (kJ/mol); Lorentz–Berthelot mixing.
        alpha: soft-core α.
    """

    n_solvent: int = 32
    density: float = 0.5
    reduced_temperature: float = 2.0
    cutoff: float = 1.9
    solute_sigma: float = 1.0
    solute_epsilon: float = 1.0
    alpha: float = 0.5

    def __post_init__(self):
        if self.n_solvent < 2 or not self.density > 0 or not self.reduced_temperature > 0:
            raise ValueError("need n_solvent >= 2, density > 0 and reduced_temperature > 0")
        if not 0 < self.cutoff <= self.box_length / 2:
            raise ValueError(f"cutoff {self.cutoff} must lie in (0, L/2 = {self.box_length / 2:.3f}] nm")

    @property
    def box_length(self) -> float:
        """Cubic box edge L (nm)."""
        return (self.n_solvent / self.density) ** (1 / 3)

    @property
    def temperature(self) -> float:
        """K."""
        return self.reduced_temperature * units.REDUCED_TEMPERATURE

    @property
    def n_particles(self) -> int:
        return self.n_solvent + 1

    def coupling(self) -> SoftcoreLJCoupling:
        """The solute–solvent soft-core coupling c(x, s) (kT)."""
        return SoftcoreLJCoupling(0.5 * (self.solute_sigma + 1.0), math.sqrt(self.solute_epsilon), self.cutoff,
                                  self.box_length, units.kT(self.temperature), self.alpha)

    def solvent_pair(self, r2: Tensor) -> Tensor:
        """Solvent–solvent truncated LJ pair energies (kT) for squared distances ``r2`` (nm²)."""
        return softcore_pair(r2, 1.0, 1.0, 1.0, self.alpha, self.cutoff) / units.kT(self.temperature)

    def solvent_energy(self, x: Tensor) -> Tensor:
        """Solvent–solvent truncated LJ (kT) of ``[B, N + 1, 3]`` positions, ``[B]`` (the decoupled endpoint u₀)."""
        i, j = torch.triu_indices(self.n_solvent, self.n_solvent, 1, device=x.device) + SOLUTE + 1
        return self.solvent_pair(squared_distances(x[:, j] - x[:, i], self.box_length)).sum(-1)

    def coupled_energy(self, x: Tensor) -> Tensor:
        """u₁ (kT): solvent–solvent plus full solute–solvent LJ, ``[B]``."""
        return self.solvent_energy(x) + self.coupling()(x, 1.0)

    def particle_energy(self, x: Tensor, k: int, position: Tensor, lambda_sterics: float) -> Tensor:
        """Interaction (kT) of particle ``k`` placed at ``position`` ``[B, 3]`` with all others of ``x``, ``[B]``.

        One soft-core formula for every pair: solvent–solvent pairs at s = 1 (plain LJ), solute pairs at
        s = λ_sterics, the self pair at s = ε = 0.
        """
        coupling = self.coupling()
        sigma2 = torch.ones(self.n_particles, dtype=x.dtype)
        epsilon, s = torch.ones_like(sigma2), torch.ones_like(sigma2)
        partners = slice(SOLUTE + 1, None) if k == SOLUTE else SOLUTE
        sigma2[partners], epsilon[partners], s[partners] = coupling.sigma**2, coupling.epsilon, lambda_sterics
        epsilon[k], s[k] = 0.0, 0.0
        r2 = squared_distances(x - position.contiguous()[:, None], self.box_length)
        return softcore_pair(r2, sigma2, epsilon, s, self.alpha, self.cutoff).sum(-1) / units.kT(self.temperature)

    def openmm_system(self, alchemical: bool = True):
        """The ``openmm.System`` (uncharged, CutoffPeriodic, no switch, no dispersion correction); ``alchemical``:
        with the solute's interactions switched by the Context parameter ``lambda_sterics``."""
        import openmm
        from openmm import unit

        system = openmm.System()
        edge = self.box_length
        system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*(edge if k == axis else 0.0 for k in range(3)))
                                              for axis in range(3)))
        nonbonded = openmm.NonbondedForce()
        nonbonded.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
        nonbonded.setCutoffDistance(self.cutoff * unit.nanometer)
        nonbonded.setUseSwitchingFunction(False)
        nonbonded.setUseDispersionCorrection(False)
        for k in range(self.n_particles):
            system.addParticle(1.0)
            sigma, epsilon = (self.solute_sigma, self.solute_epsilon) if k == SOLUTE else (1.0, 1.0)
            nonbonded.addParticle(0.0, sigma, epsilon)
        system.addForce(nonbonded)
        return alchemical_system(system, [SOLUTE], alpha=self.alpha) if alchemical else system

    def lattice(self) -> np.ndarray:
        """``[N + 1, 3]`` starting positions (nm) on a simple cubic lattice filling the box."""
        side = math.ceil(self.n_particles ** (1 / 3))
        grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:self.n_particles]
        return (grid + 0.5) * self.box_length / side


@dataclass
class Samples:
    """Independent samples at one λ_sterics: ``positions [n, N + 1, 3]`` (nm, in the box) and their cost
    (``moves``: single-particle Monte Carlo moves, each two one-particle energy evaluations; ``wall_seconds``)."""

    positions: Tensor
    lambda_sterics: float
    moves: int
    wall_seconds: float


def sample(system: LJInsertion, lambda_sterics: float, n_samples: int, sweeps: int = 100, seed: int = 0,
           start: Tensor | None = None, acceptance: float = 0.4) -> Samples:
    """``n_samples`` independent Metropolis Monte Carlo chains at one λ_sterics, one sample per chain.

    Chains start from ``start`` ``[n_samples, N + 1, 3]`` (e.g. the samples of a neighbouring λ) or, if None, a
    jittered lattice (which needs ~100 sweeps to melt at ρ* = 0.5, T* = 2), and run ``sweeps`` sweeps of
    single-particle displacements (every particle once per sweep, the same particle in all chains at a time); the
    step adapts towards ``acceptance`` during the first half. At λ_sterics = 0 the decoupled solute is an ideal
    particle and is drawn uniformly in the box (exact).
    """
    begin = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    edge = system.box_length
    if start is None:
        x = torch.as_tensor(system.lattice()).expand(n_samples, -1, -1).clone()
        x = (x + 0.05 * torch.randn(x.shape, generator=generator, dtype=x.dtype)) % edge
    elif start.shape != (n_samples, system.n_particles, 3):
        raise ValueError(f"start must be [{n_samples}, {system.n_particles}, 3], got {tuple(start.shape)}")
    else:
        x = start.detach().clone() % edge
    movers = [k for k in range(system.n_particles) if not (k == SOLUTE and lambda_sterics == 0)]
    step = 0.2
    with torch.no_grad():
        for sweep in range(sweeps):
            accepted = 0.0
            for k in movers:
                trial = (x[:, k] + step * (2 * torch.rand(n_samples, 3, generator=generator, dtype=x.dtype) - 1)) % edge
                delta = system.particle_energy(x, k, trial, lambda_sterics) - system.particle_energy(
                    x, k, x[:, k], lambda_sterics)
                accept = torch.rand(n_samples, generator=generator, dtype=x.dtype).log() < -delta
                x[accept, k] = trial[accept]
                accepted += float(accept.double().mean()) / len(movers)
            if sweep < sweeps // 2:
                step = min(step * (1.1 if accepted > acceptance else 0.9), edge / 2)
        if lambda_sterics == 0:
            x[:, SOLUTE] = torch.rand(n_samples, 3, generator=generator, dtype=x.dtype) * edge
    return Samples(x, float(lambda_sterics), sweeps * len(movers) * n_samples, time.perf_counter() - begin)


def _batched(function, x: Tensor, *args, chunk: int = 4096) -> Tensor:
    """``function(x, *args)`` ``[B]`` without gradients, ``chunk`` configurations at a time."""
    with torch.no_grad():
        return torch.cat([function(part, *args) for part in x.split(chunk)])


def widom(system: LJInsertion, solvent: Samples, insertions_per_frame: int = 100, seed: int = 0) -> FreeEnergyResult:
    """Test-particle insertion ΔF = −ln⟨e^{−βΔU}⟩ (kT) into independent decoupled samples, with its error.

    Each frame gets ``insertions_per_frame`` uniform solute positions; the per-frame averages
    y_f = −ln⟨e^{−βΔU}⟩_frame are combined by :func:`~molfree.freeenergy.exp` (delta-method error over frames).
    """
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    n_frames = solvent.positions.shape[0]
    trial = solvent.positions.repeat_interleave(insertions_per_frame, 0)
    trial[:, SOLUTE] = torch.rand(trial.shape[0], 3, generator=generator, dtype=trial.dtype) * system.box_length
    coupling = system.coupling()
    delta_u = _batched(coupling, trial, 1.0).reshape(n_frames, insertions_per_frame)
    per_frame = -(torch.logsumexp(-delta_u, 1) - math.log(insertions_per_frame)).numpy()
    result = exp(per_frame)
    return FreeEnergyResult(result.delta_f, result.error, "widom", n_frames * insertions_per_frame,
                            {"frames": n_frames, "insertions_per_frame": insertions_per_frame,
                             "mc_moves": solvent.moves, "energy_evaluations": n_frames * insertions_per_frame,
                             "wall_seconds": solvent.wall_seconds + time.perf_counter() - start})


def ladder(system: LJInsertion, lambdas, n_samples: int, sweeps: int = 100, sweeps_per_state: int = 30,
           seed: int = 0) -> list[Samples]:
    """Samples at each λ_sterics of ``lambdas`` (0 … 1): ``sweeps`` from the lattice at the first, then each state
    starts from the previous state's samples and runs ``sweeps_per_state`` (only the solute's shell has to relax)."""
    states: list[Samples] = []
    for k, lam in enumerate(lambdas):
        states.append(sample(system, float(lam), n_samples, sweeps_per_state if states else sweeps, seed=seed + k,
                             start=states[-1].positions if states else None))
    return states


def mbar_ladder(system: LJInsertion, states: list[Samples], min_overlap: float = 0.03) -> FreeEnergyResult:
    """MBAR over independent samples at each state of a soft-core λ_sterics ladder (0 … 1, increasing); ΔF in kT.

    The reduced potentials of the states differ only by the solute–solvent soft-core term, so u_kn holds that
    term (the solvent–solvent energy is a per-sample constant, which MBAR ignores).
    """
    start = time.perf_counter()
    lambdas = [state.lambda_sterics for state in states]
    if lambdas[0] != 0.0 or lambdas[-1] != 1.0 or np.any(np.diff(lambdas) <= 0):
        raise ValueError(f"the states' λ_sterics must increase from 0 to 1, got {lambdas}")
    coupling = system.coupling()
    positions = torch.cat([state.positions for state in states])
    u_kn = np.stack([_batched(coupling, positions, lam).numpy() for lam in lambdas])
    result = mbar(u_kn, [state.positions.shape[0] for state in states], min_overlap=min_overlap)
    total = result.total
    return FreeEnergyResult(total.delta_f, total.error, "mbar", total.n_samples,
                            {"lambdas": lambdas, "min_neighbour_overlap": float(result.neighbour_overlap().min()),
                             "mc_moves": sum(state.moves for state in states),
                             "energy_evaluations": len(lambdas) * positions.shape[0],
                             "wall_seconds": sum(state.wall_seconds for state in states) + time.perf_counter() - start})


def neural_ti(system: LJInsertion, coupled: Samples, *, blur: float = 1.0, steps: int = 300, batch_size: int = 256,
              n_coupling: int = 6, n_correction: int = 4, poses: int = 8, sweeps: int = 30, burn_in: int = 10,
              moves_per_sweep: int = 2, seed: int = 0,
              progress: bool = False) -> tuple[FreeEnergyResult, nti.LambdaPotential]:
    """Neural TI from coupled samples alone, by :mod:`~molfree.freeenergy.solute_ti` with the solute as a one-atom
    rigid body in each coupled sample's frozen solvent.

    u_θ is trained by paired target score matching with the solute displaced by a Gaussian ``blur`` (nm; nothing
    is simulated at intermediate λ for training); each sample's insertion free energy ΔF(X) is the TI of the
    solute alone along u_θ (replica exchange over the quadrature nodes), and e^{ΔF} = ⟨e^{ΔF(X)}⟩ over the
    coupled samples. The System has no charges, no dispersion correction and no switch, so no constant is
    added. Returns (ΔF in kT with its error over samples, the trained u_θ).
    """
    start = time.perf_counter()
    positions = coupled.positions
    environment = SoluteEnvironment(system.openmm_system(alchemical=False), [SOLUTE], positions[:, SOLUTE + 1:],
                                    softcore_alpha=system.alpha)
    x1 = solute_ti.pack(torch.arange(positions.shape[0]), positions[:, SOLUTE:SOLUTE + 1])
    potential = solute_ti.lambda_potential(environment, system.temperature, correction_cutoff=system.cutoff)
    losses = solute_ti.train(potential, x1, blur=blur, steps=steps, batch_size=batch_size, seed=seed,
                             progress=progress)
    result = solute_ti.estimate(potential, x1, system.box_length, 0.0, n_coupling=n_coupling,
                                n_correction=n_correction, poses=poses, sweeps=sweeps, burn_in=burn_in,
                                moves_per_sweep=moves_per_sweep, seed=seed, progress=progress)
    result.details.update({"final_loss": float(np.mean(losses[-50:])), "training_steps": steps,
                           "mc_moves": coupled.moves,
                           "energy_evaluations": result.details["solute_energy_evaluations"] + steps * batch_size,
                           "wall_seconds": time.perf_counter() - start + coupled.wall_seconds})
    return result, potential
