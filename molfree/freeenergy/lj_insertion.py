"""A Lennard-Jones solute in a periodic Lennard-Jones fluid: insertion free energy three independent ways.

ΔF = F(solute coupled) − F(solute decoupled) in kT (the solute's excess chemical potential βμ_ex) by

* :func:`neural_ti` — a :class:`~molfree.freeenergy.neural_ti.LambdaPotential` with Beutler soft-core
  coupling driven by the learned schedule and a solute–solvent pair network, trained by paired target score
  matching on the solute coordinate of periodic interpolants that share the solvent (nothing simulated at
  intermediate λ), ΔF from per-configuration TI combined exactly (see the function);
* :func:`mbar_ladder` — Monte Carlo at each state of a soft-core λ ladder (:func:`ladder`) and MBAR;
* :func:`widom` — test-particle insertion into decoupled (pure-solvent) samples, ΔF = −ln⟨e^{−βΔU}⟩₀.

Units: reduced LJ units mapped onto molfree's internal units as in :mod:`molfree.energies.analytic`:
ε = 1 kJ/mol, σ = 1 nm, m = 1 Da (so τ = σ√(m/ε) = 1 ps) and T = T*·``units.REDUCED_TEMPERATURE`` K, where
kT = T* kJ/mol. Sampling is batched Metropolis Monte Carlo in torch (:func:`sample`: independent chains, so
samples are uncorrelated). Particle 0 is the solute, particles 1…N the solvent; positions ``[B, N + 1, 3]``
(nm) in a cubic box of edge L = (N/ρ*)^{1/3}. Every pair interaction is truncated at ``cutoff`` without shift or
tail correction, as in the equivalent alchemical OpenMM System (:meth:`LJInsertion.openmm_system`, built with
:func:`~molfree.freeenergy.alchemy.alchemical_system`; the tests check that the energies agree).

The torch soft-core (:class:`SoftcoreLJCoupling`) repeats :func:`molfree.neighbors.softcore_lennard_jones`'s formula
in plain torch because target score matching needs its mixed second derivative ∂²/∂x∂λ, which the kernel does
not provide.
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
from .alchemy import alchemical_system
from .estimators import (
    FreeEnergyResult,
    exp,
    gauss_legendre_lambdas,
    mbar,
    quadrature_weights,
)

#: Solute index in every configuration.
SOLUTE = 0


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

    def pair(self, r2: Tensor, s: Tensor) -> Tensor:
        """Pair energies (kT) for squared distances ``r2`` ``[B, P]`` (nm²) at ``s`` ``[B, 1]``."""
        return softcore_pair(r2, self.sigma**2, self.epsilon, s, self.alpha, self.cutoff) / self.kt

    def forward(self, x: Tensor, s) -> Tensor:
        s = torch.as_tensor(s, dtype=x.dtype, device=x.device).reshape(-1, 1)
        return self.pair(squared_distances(x[:, SOLUTE + 1:] - x[:, SOLUTE:SOLUTE + 1], self.box_length), s).sum(-1)


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

    def openmm_system(self):
        """Alchemical ``openmm.System`` (Context parameter ``lambda_sterics``; no switch, no dispersion correction)."""
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
        return alchemical_system(system, [SOLUTE], alpha=self.alpha)

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


def lambda_potential(system: LJInsertion, hidden: int = 32, degree: int = 8) -> nti.LambdaPotential:
    """u_θ(x, λ) = u₀ + c(x, s_θ(λ)) + λ(1 − λ) g_θ with a solute–solvent :class:`~.neural_ti.PairCorrection`
    and a schedule of polynomial ``degree``."""
    box = torch.full((3,), system.box_length, dtype=torch.float64)
    correction = nti.PairCorrection(system.cutoff, box=box, solute=[SOLUTE], hidden=hidden)
    schedule = nti.Schedule(degree)
    with torch.no_grad():  # start from s(λ) ≈ λ^degree: the Gaussian-blurred solute density is flat until λ → 1
        schedule.raw.fill_(-6.0)
        schedule.raw[degree - 1] = 2.0
    return nti.LambdaPotential(system.solvent_energy, system.coupled_energy, correction, coupling=system.coupling(),
                               schedule=schedule)


def _with_displaced_solute(x: Tensor, edge: float, generator: torch.Generator) -> Tensor:
    """``x`` with the solute displaced by L·z, z ~ N(0, 1)³, not wrapped: wrapped, x[:, 0] + L z is uniform in the
    box to within e^{−2π²} ≈ 3·10⁻⁹ (its Fourier modes), and the linear interpolant to x is a Gaussian blur."""
    x = x.clone()
    x[:, SOLUTE] = x[:, SOLUTE] + edge * torch.randn(x.shape[0], 3, generator=generator, dtype=x.dtype)
    return x


def refine_solute(potential: nti.LambdaPotential, x: Tensor, lam: float, steps: int, edge: float,
                  generator: torch.Generator, step: float = 0.3) -> tuple[Tensor, float]:
    """Metropolis moves of the solute alone on e^{−u_θ(·, λ)} with the solvent frozen; returns (x, acceptance).

    Valid because u₀ (solvent–solvent) does not depend on the solute, so u_θ changes by :meth:`excess` only.
    The uniform displacement's half-width ``step`` (nm) adapts towards 50 % acceptance in the first half.
    """
    x = x.clone()
    with torch.no_grad():
        u = potential.excess(x, lam)
        accepted = 0.0
        for k in range(steps):
            trial = x.clone()
            trial[:, SOLUTE] = (x[:, SOLUTE] + step * (2 * torch.rand(x.shape[0], 3, generator=generator,
                                                                       dtype=x.dtype) - 1)) % edge
            u_trial = potential.excess(trial, lam)
            accept = torch.rand(x.shape[0], generator=generator, dtype=x.dtype).log() < u - u_trial
            x[accept, SOLUTE] = trial[accept, SOLUTE]
            u = torch.where(accept, u_trial, u)
            rate = float(accept.double().mean())
            if k < steps // 2:
                step = min(step * (1.1 if rate > 0.5 else 0.9), edge / 2)
            else:
                accepted += rate / (steps - steps // 2)
    return x, accepted


def neural_ti(system: LJInsertion, coupled: Samples, *, redraws: int = 8, steps: int = 300, batch_size: int = 256,
              n_lambdas: int = 16, solute_samples: int = 32, refine_steps: int = 0, seed: int = 0,
              potential: nti.LambdaPotential | None = None, progress: bool = False) -> tuple[FreeEnergyResult, nti.LambdaPotential]:
    """Neural TI from coupled samples alone (the decoupled solute is ideal: uniform given any solvent).

    Pairs share the solvent: x₀ is a coupled sample x₁ = (X, r₁) with the solute displaced by L·z, z ~ N(0, 1)³
    (``redraws`` times each; wrapped, that is the uniform decoupled solute to ~10⁻⁹), so given X the interpolant
    moves the solute only, r_λ = r₁ + (1 − λ)L z: the coupled conditional density blurred by a Gaussian of width
    (1 − λ)L, and u_θ is fitted by paired target score matching on the solute's score
    (:func:`~molfree.freeenergy.neural_ti.train`). For each solvent X, ΔF(X) = ∫⟨∂u_θ/∂λ⟩_{λ,X} dλ
    (Gauss–Legendre, ``solute_samples`` interpolant positions per node) is the free energy of inserting the solute
    into that frozen configuration, and exactly e^{ΔF} = ⟨e^{ΔF(X)}⟩ over coupled samples (p₁(X) ∝ p₀(X) z₁(X)),
    combined by :func:`~molfree.freeenergy.exp` with its delta-method error over X. ``refine_steps`` > 0: the interpolant
    samples at each node are refined by :func:`refine_solute` (check samples; removes the bias an imperfect fit
    leaves). ``potential``: a u_θ already trained by this function (training is then skipped, ``steps`` = 0).
    Returns (ΔF in kT, the trained u_θ).
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    edge = system.box_length
    losses = [float("nan")]
    if potential is None:
        potential = lambda_potential(system)
        mask = torch.zeros(system.n_particles, 1, dtype=torch.bool)
        mask[SOLUTE] = True
        x1 = coupled.positions.repeat(redraws, 1, 1)
        # the solute's score does not involve u₀ (solvent–solvent): train a twin without it sharing every parameter
        twin = nti.LambdaPotential(nti.zero_potential, lambda x: potential.coupling(x, 1.0), potential.correction,
                                   potential.coupling, potential.schedule)
        losses = nti.train(twin, _with_displaced_solute(x1, edge, generator), x1, steps=steps, batch_size=batch_size,
                           score_mask=mask, paired=True, progress=progress, seed=seed)
    else:
        steps = 0
    lambdas = gauss_legendre_lambdas(n_lambdas)
    weights = quadrature_weights(lambdas, "gauss-legendre")
    frames = coupled.positions.repeat_interleave(solute_samples, 0)
    n_frames = coupled.positions.shape[0]
    means, acceptance = [], []
    for lam in lambdas:
        x = nti.interpolate(_with_displaced_solute(frames, edge, generator), frames,
                            torch.full((frames.shape[0],), float(lam), dtype=frames.dtype))
        if refine_steps:
            x, rate = refine_solute(potential, x, float(lam), refine_steps, edge, generator)
            acceptance.append(rate)
        dudl = torch.cat([potential.dudl(part, float(lam)) for part in x.split(4096)])
        means.append(dudl.reshape(n_frames, solute_samples).mean(1))
    per_frame = (torch.as_tensor(weights) @ torch.stack(means)).detach().numpy()
    combined = exp(-per_frame)
    evaluations = n_lambdas * frames.shape[0] * (refine_steps + 1)
    return FreeEnergyResult(-combined.delta_f, combined.error, "neural-ti", n_frames,
                            {"lambdas": lambdas.tolist(), "means": torch.stack(means).mean(1).tolist(),
                             "mean_per_frame": float(per_frame.mean()), "training_steps": steps,
                             "sampling": f"interpolant + {refine_steps} solute Metropolis steps" if refine_steps
                             else "interpolant", "acceptance": acceptance,
                             "final_loss": float(np.mean(losses[-50:])), "mc_moves": coupled.moves,
                             "energy_evaluations": evaluations + steps * batch_size,
                             "wall_seconds": time.perf_counter() - start + coupled.wall_seconds}), potential
