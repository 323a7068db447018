"""Analytic target energies of the sampling literature, with their conventions stated.

All are :class:`molfree.Energy` subclasses. Reduced-unit targets (DW-4, LJ clusters,
Gaussian mixtures) take ε = 1 kJ/mol and lengths in nm numerically; at
``molfree.units.REDUCED_TEMPERATURE`` (≈120.27 K) kT = 1 kJ/mol, so E/kT is the
reduced energy the papers quote.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import units
from ..energy import Energy


def pair_distances(positions: torch.Tensor) -> torch.Tensor:
    """Distances of all unordered pairs i < j: ``[B, N, dim] -> [B, N(N-1)/2]``."""
    i, j = torch.triu_indices(positions.shape[1], positions.shape[1], offset=1, device=positions.device)
    return (positions[:, j] - positions[:, i]).norm(dim=-1)


def centre_of_mass_free(positions: torch.Tensor) -> torch.Tensor:
    """Positions with their (unweighted) centroid removed, ``[B, N, dim]``."""
    return positions - positions.mean(dim=1, keepdim=True)


class HarmonicEnergy(Energy):
    """Independent harmonic wells: E = ½ Σᵢ kᵢ ‖xᵢ − cᵢ‖².

    Args:
        center: ``[N, dim]`` well centres (nm).
        spring_constant: scalar or ``[N]`` in kJ/mol/nm².
    """

    def __init__(self, center, spring_constant):
        center = torch.as_tensor(np.asarray(center, dtype=np.float64))
        if center.ndim != 2:
            raise ValueError(f"center must have shape [N, dim], got {tuple(center.shape)}")
        k = torch.as_tensor(spring_constant, dtype=torch.float64).expand(center.shape[0]).clone()
        if not (k > 0).all():
            raise ValueError("spring_constant must be positive (kJ/mol/nm^2)")
        super().__init__(n_atoms=center.shape[0])
        self.dim = center.shape[1]
        self.register_buffer("center", center)
        self.register_buffer("spring_constant", k)

    def energy(self, positions, box):
        d2 = (positions - self.center.to(positions)).pow(2).sum(-1)
        return 0.5 * (self.spring_constant.to(positions) * d2).sum(-1)

    def log_partition_function(self, temperature: float) -> float:
        """ln ∫ exp(−E/kT) dx over all N·dim coordinates (x in nm)."""
        kt = units.kT(temperature)
        return float(0.5 * self.dim * torch.log(2 * math.pi * kt / self.spring_constant).sum())

    def free_energy(self, temperature: float) -> float:
        """Configurational free energy −kT ln Z in kJ/mol (lengths in nm)."""
        return -units.kT(temperature) * self.log_partition_function(temperature)


class DoubleWellEnergy(Energy):
    """Pairwise double well: E = Σ_{i<j} a(d−d₀) + b(d−d₀)² + c(d−d₀)⁴, d = ‖xᵢ − xⱼ‖.

    ``DoubleWellEnergy.dw4()`` is the DW-4 target (Köhler et al. 2020, used by the
    diffusion-sampler papers): 4 particles in 2D, a = 0, b = −4, c = 0.9, d₀ = 4, τ = 1,
    summed over unordered pairs; each pair has minima at d = 4 ± 1.49 of depth −4.44.
    """

    def __init__(self, n_particles: int, dim: int = 2, a: float = 0.0, b: float = -4.0,
                 c: float = 0.9, d0: float = 4.0):
        if n_particles < 2:
            raise ValueError("DoubleWellEnergy needs at least 2 particles")
        super().__init__(n_atoms=n_particles)
        self.dim = dim
        self.a, self.b, self.c, self.d0 = a, b, c, d0

    @classmethod
    def dw4(cls) -> "DoubleWellEnergy":
        """The DW-4 target: 4 particles in 2D."""
        return cls(4, dim=2)

    def energy(self, positions, box):
        s = pair_distances(positions) - self.d0
        return (self.a * s + self.b * s**2 + self.c * s**4).sum(-1)


class LennardJonesClusterEnergy(Energy):
    """Lennard-Jones cluster: ``pair_factor`` · Σ_{i<j} ε[(r_m/r)¹² − 2(r_m/r)⁶] + ``oscillator_scale`` · ½ Σᵢ ‖xᵢ − x̄‖².

    With ``rm = 2^(1/6) σ`` the pair term is the familiar 4ε[(σ/r)¹² − (σ/r)⁶].

    Conventions:
        * ``pair_factor=1, oscillator_scale=0``: the physical cluster (LJ-13 global minimum
          −44.3268 ε, LJ-55 −279.2485 ε); this is also bgflow's pair sum.
        * ``lj13()`` / ``lj55()``: the diffusion-sampler papers' convention (DEM, iDEM,
          Adjoint Sampling): ordered pairs, i.e. ``pair_factor=2`` (twice bgflow's value),
          plus the harmonic centre-of-mass term with scale 1; ε = 1, r_m = 1, τ = 1.
    """

    def __init__(self, n_particles: int, epsilon: float = 1.0, rm: float | None = None,
                 sigma: float | None = None, pair_factor: float = 1.0, oscillator_scale: float = 0.0):
        if rm is not None and sigma is not None:
            raise ValueError("give either rm or sigma, not both")
        if n_particles < 2:
            raise ValueError("a Lennard-Jones cluster needs at least 2 particles")
        super().__init__(n_atoms=n_particles)
        self.epsilon = float(epsilon)
        self.rm = float(rm) if rm is not None else (2 ** (1 / 6) * sigma if sigma is not None else 1.0)
        self.pair_factor = float(pair_factor)
        self.oscillator_scale = float(oscillator_scale)

    @classmethod
    def lj13(cls) -> "LennardJonesClusterEnergy":
        """LJ-13 in the sampling papers' convention (ordered pairs + COM oscillator)."""
        return cls(13, pair_factor=2.0, oscillator_scale=1.0)

    @classmethod
    def lj55(cls) -> "LennardJonesClusterEnergy":
        """LJ-55 in the sampling papers' convention (ordered pairs + COM oscillator)."""
        return cls(55, pair_factor=2.0, oscillator_scale=1.0)

    def energy(self, positions, box):
        inv6 = (self.rm / pair_distances(positions)) ** 6
        e = self.pair_factor * self.epsilon * (inv6 * inv6 - 2.0 * inv6).sum(-1)
        if self.oscillator_scale:
            e = e + self.oscillator_scale * 0.5 * centre_of_mass_free(positions).pow(2).sum((-1, -2))
        return e


class GaussianMixtureEnergy(Energy):
    """E(x) = −kT ln p(x) for a normalised mixture of isotropic Gaussians, so ln Z = 0 at ``temperature``.

    Args:
        means: ``[K, D]`` component means, D = n_atoms · dim (nm).
        stds: scalar or ``[K]`` standard deviations (nm).
        weights: ``[K]`` mixture weights (normalised here), default uniform.
        dim: spatial dimension of a particle; positions are ``[B, D/dim, dim]``.
        temperature: K at which exp(−E/kT) is the normalised density (default: reduced, kT = 1 kJ/mol).
    """

    def __init__(self, means, stds=1.0, weights=None, dim: int = 2,
                 temperature: float = units.REDUCED_TEMPERATURE):
        means = torch.as_tensor(np.asarray(means, dtype=np.float64))
        if means.ndim != 2 or means.shape[1] % dim:
            raise ValueError(f"means must be [K, D] with D a multiple of dim={dim}, got {tuple(means.shape)}")
        k = means.shape[0]
        stds = torch.as_tensor(stds, dtype=torch.float64).expand(k).clone()
        weights = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (k,) or not (weights > 0).all() or not (stds > 0).all():
            raise ValueError("weights must be [K] and positive; stds must be positive")
        super().__init__(n_atoms=means.shape[1] // dim)
        self.dim = dim
        self.kt = units.kT(temperature)
        self.register_buffer("means", means)
        self.register_buffer("stds", stds)
        self.register_buffer("log_weights", torch.log(weights / weights.sum()))

    @classmethod
    def grid(cls, n_per_side: int = 5, spacing: float = 5.0, std: float = 1.0, **kwargs) -> "GaussianMixtureEnergy":
        """A 2D mixture of ``n_per_side²`` equal Gaussians on a square grid centred at 0 (25 modes by default)."""
        ticks = (np.arange(n_per_side) - (n_per_side - 1) / 2) * spacing
        means = np.stack(np.meshgrid(ticks, ticks, indexing="ij"), -1).reshape(-1, 2)
        return cls(means, std, dim=2, **kwargs)

    def log_prob(self, positions: torch.Tensor) -> torch.Tensor:
        """Normalised log density ``[B]`` of positions ``[B, N, dim]``."""
        x = positions.reshape(positions.shape[0], 1, -1)
        d = x.shape[-1]
        means, stds = self.means.to(x), self.stds.to(x)
        log_norm = -0.5 * d * torch.log(2 * math.pi * stds**2)
        comp = log_norm - 0.5 * (x - means).pow(2).sum(-1) / stds**2
        return torch.logsumexp(comp + self.log_weights.to(x), dim=-1)

    def energy(self, positions, box):
        return -self.kt * self.log_prob(positions)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact samples ``[n, N, dim]`` (float64)."""
        comp = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        noise = torch.randn(n, self.means.shape[1], dtype=torch.float64, generator=generator)
        x = self.means[comp] + self.stds[comp, None] * noise
        return x.reshape(n, -1, self.dim)
