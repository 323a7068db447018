"""Parallel-chain MCMC with annealing and step-size adaptation: random-walk Metropolis (the
equal-budget baseline) and Hamiltonian Monte Carlo (reference samples of stiff targets).

``energy_evaluations`` counts every energy (HMC: energy and gradient) evaluation, so a baseline
can be run at the same budget as a learned sampler.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import units
from ..energy import Energy
from .sde import remove_com


@dataclass
class MCMCResult:
    """Kept samples ``[S, N, dim]`` (nm), their reduced energies E/kT ``[S]``, the mean acceptance
    after burn-in, final per-chain step sizes ``[C]`` (nm) and the energy evaluations used."""

    samples: torch.Tensor
    reduced_energies: torch.Tensor
    acceptance: float
    step_size: torch.Tensor
    energy_evaluations: int


def _check_chains(x0: torch.Tensor, temperature: float, n_steps: int, burn_in: int, step_size: float, thin: int,
                  target_acceptance: float, anneal_from: float | None) -> None:
    if x0.ndim != 3:
        raise ValueError(f"x0 must be [C, N, dim], got {tuple(x0.shape)}")
    if not (temperature > 0 and step_size > 0 and 0 < target_acceptance < 1):
        raise ValueError("temperature and step_size must be positive, target_acceptance in (0, 1)")
    if not 0 <= burn_in < n_steps or thin < 1:
        raise ValueError(f"need 0 <= burn_in < n_steps and thin >= 1, got {burn_in}, {n_steps}, {thin}")
    if anneal_from is not None and not anneal_from >= temperature:
        raise ValueError("anneal_from must be >= temperature")


def _annealed_temperature(step: int, temperature: float, burn_in: int, anneal_from: float | None) -> float:
    """Geometric from ``anneal_from`` to ``temperature`` (K) over the first half of burn-in, then ``temperature``."""
    if anneal_from is None or step >= burn_in // 2:
        return temperature
    return anneal_from * (temperature / anneal_from) ** (step / max(burn_in // 2, 1))


def metropolis(energy: Energy, x0: torch.Tensor, temperature: float, n_steps: int, burn_in: int = 0,
               step_size: float = 0.1, thin: int = 1, target_acceptance: float = 0.4,
               anneal_from: float | None = None, com_free: bool = False,
               generator: torch.Generator | None = None) -> MCMCResult:
    """Run parallel Metropolis chains on exp(−E/kT).

    Args:
        x0: ``[C, N, dim]`` starting positions of C chains (nm).
        temperature: target temperature (K); n_steps: total steps including burn-in.
        burn_in: initial steps that are discarded; during them each chain's step size adapts
            towards ``target_acceptance`` and, with ``anneal_from`` (K), the temperature decreases
            geometrically from ``anneal_from`` to ``temperature`` over the first half of burn-in.
        thin: keep every ``thin``-th state after burn-in (all chains).
        com_free: move only in the centre-of-mass-free subspace (translation-invariant targets).
    Returns:
        :class:`MCMCResult`; samples are kept after burn-in, chains interleaved per step.
    """
    _check_chains(x0, temperature, n_steps, burn_in, step_size, thin, target_acceptance, anneal_from)
    project = remove_com if com_free else (lambda v: v)
    x = project(x0.detach().double())
    n_chains = x.shape[0]
    steps = torch.full((n_chains,), float(step_size), dtype=torch.float64)
    with torch.no_grad():
        e = energy(x)
        kept, kept_e, accepted = [], [], 0.0
        for i in range(n_steps):
            temp = _annealed_temperature(i, temperature, burn_in, anneal_from)
            proposal = x + steps[:, None, None] * project(torch.randn(x.shape, generator=generator, dtype=x.dtype))
            e_new = energy(proposal)
            log_acc = -(e_new - e) / units.kT(temp)
            accept = torch.rand(n_chains, generator=generator, dtype=x.dtype).log() < log_acc
            accept &= torch.isfinite(e_new)
            x = torch.where(accept[:, None, None], proposal, x)
            e = torch.where(accept, e_new, e)
            if i < burn_in:
                steps *= torch.exp(0.05 * (accept.double() - target_acceptance))
            else:
                accepted += float(accept.double().mean())
                if (i - burn_in) % thin == 0:
                    kept.append(x.clone())
                    kept_e.append(e / units.kT(temperature))
    n_kept_steps = n_steps - burn_in
    return MCMCResult(torch.cat(kept), torch.cat(kept_e), accepted / n_kept_steps, steps,
                      n_chains * (n_steps + 1))


def hamiltonian_monte_carlo(energy: Energy, x0: torch.Tensor, temperature: float, n_steps: int, burn_in: int = 0,
                            step_size: float = 0.01, n_leapfrog: int = 20, thin: int = 1,
                            target_acceptance: float = 0.8, anneal_from: float | None = None, com_free: bool = False,
                            generator: torch.Generator | None = None) -> MCMCResult:
    """Run parallel Hamiltonian Monte Carlo chains on exp(−E/kT).

    Each step draws momenta p ~ N(0, I) and integrates H = E(x)/kT + ½‖p‖² (unit masses,
    dimensionless p) with ``n_leapfrog`` velocity-Verlet steps of length h (nm), each chain's h
    jittered uniformly in [0.8, 1.2]·h per step so that no trajectory length resonates with a
    vibration; the end point is accepted with probability min(1, exp(−ΔH)). A trajectory that
    reaches a non-finite energy or force is rejected.

    Args:
        x0: ``[C, N, dim]`` starting positions of C chains (nm).
        temperature: target temperature (K); n_steps: total steps including burn-in.
        burn_in: initial steps that are discarded; during them each chain's h adapts towards
            ``target_acceptance`` and, with ``anneal_from`` (K), the temperature decreases
            geometrically from ``anneal_from`` to ``temperature`` over the first half of burn-in.
        step_size: initial leapfrog step h (nm); n_leapfrog: leapfrog steps per trajectory.
        thin: keep every ``thin``-th state after burn-in (all chains).
        com_free: momenta and forces in the centre-of-mass-free subspace (translation-invariant targets).
    Returns:
        :class:`MCMCResult`; samples kept after burn-in, chains interleaved per step;
        ``energy_evaluations`` = C·(n_steps·n_leapfrog + 1) energy-and-force evaluations.
    """
    _check_chains(x0, temperature, n_steps, burn_in, step_size, thin, target_acceptance, anneal_from)
    if n_leapfrog < 1:
        raise ValueError(f"n_leapfrog must be >= 1, got {n_leapfrog}")
    project = remove_com if com_free else (lambda v: v)
    x = project(x0.detach().double())
    n_chains = x.shape[0]
    steps = torch.full((n_chains,), float(step_size), dtype=torch.float64)
    e, f = energy.energy_and_forces(x)
    f = project(f)
    kept, kept_e, accepted = [], [], 0.0
    for i in range(n_steps):
        kt = units.kT(_annealed_temperature(i, temperature, burn_in, anneal_from))
        h = (steps * (0.8 + 0.4 * torch.rand(n_chains, generator=generator, dtype=x.dtype)))[:, None, None]
        p0 = project(torch.randn(x.shape, generator=generator, dtype=x.dtype))
        p = p0 + 0.5 * h * f / kt
        x_new, e_new, f_new = x, e, f
        alive = torch.ones(n_chains, dtype=torch.bool)
        for k in range(n_leapfrog):
            x_new = x_new + h * p
            alive &= torch.isfinite(x_new).flatten(1).all(1)
            # a chain whose trajectory diverged keeps its start, so the batch stays valid; it is rejected below
            e_new, f_new = energy.energy_and_forces(torch.where(alive[:, None, None], x_new, x))
            f_new = project(f_new)
            alive &= torch.isfinite(e_new) & torch.isfinite(f_new).flatten(1).all(1)
            p = p + (h if k < n_leapfrog - 1 else 0.5 * h) * torch.where(alive[:, None, None], f_new, 0.0) / kt
        delta_h = (e_new - e) / kt + 0.5 * (p.pow(2).flatten(1).sum(1) - p0.pow(2).flatten(1).sum(1))
        log_acc = torch.where(alive, -delta_h, -torch.inf)
        accept = torch.rand(n_chains, generator=generator, dtype=x.dtype).log() < log_acc
        x = torch.where(accept[:, None, None], x_new, x)
        e = torch.where(accept, e_new, e)
        f = torch.where(accept[:, None, None], f_new, f)
        if i < burn_in:
            steps *= torch.exp(0.05 * (log_acc.clamp(max=0.0).exp() - target_acceptance))
        else:
            accepted += float(accept.double().mean())
            if (i - burn_in) % thin == 0:
                kept.append(x.clone())
                kept_e.append(e / units.kT(temperature))
    return MCMCResult(torch.cat(kept), torch.cat(kept_e), accepted / (n_steps - burn_in), steps,
                      n_chains * (n_steps * n_leapfrog + 1))


def lattice_start(n_chains: int, n_particles: int, dim: int, spacing: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Non-overlapping starting positions ``[C, N, dim]`` (nm): each chain's particles on N random
    sites of the smallest simple-cubic lattice with at least N sites, ``spacing`` (nm) apart, plus
    2 % of ``spacing`` Gaussian noise. For gradient-based chains on pair potentials, where a random
    start with two particles nearly on top of each other has forces too large to integrate."""
    if n_chains < 1 or n_particles < 1 or dim < 1 or not spacing > 0:
        raise ValueError("need n_chains, n_particles, dim >= 1 and spacing > 0")
    side = math.ceil(n_particles ** (1 / dim) - 1e-9)
    sites = torch.cartesian_prod(*[torch.arange(side, dtype=torch.float64)] * dim).reshape(-1, dim) * spacing
    picks = torch.stack([torch.randperm(len(sites), generator=generator)[:n_particles] for _ in range(n_chains)])
    x = sites[picks]
    return x + 0.02 * spacing * torch.randn(x.shape, generator=generator, dtype=x.dtype)


def _equal_budget_schedule(n_steps: int, budget: int, n_chains: int) -> dict:
    """Half of ``n_steps`` burn-in, about 10 kept states per chain over the rest."""
    if n_steps < 2:
        raise ValueError(f"budget {budget} is too small for {n_chains} chains")
    burn_in = n_steps // 2
    return {"burn_in": burn_in, "thin": max(1, (n_steps - burn_in) // 10)}


def equal_budget_metropolis(energy: Energy, temperature: float, budget: int, n_chains: int, init_scale: float,
                            com_free: bool = False, step_size: float = 0.1, seed: int = 0) -> MCMCResult:
    """Metropolis from N(0, init_scale² I) starts using at most ``budget`` energy evaluations.

    Half the steps are burn-in with step-size adaptation; samples are the chains' states
    over the second half, thinned to about ``n_chains · 10`` samples.
    """
    n_steps = budget // n_chains - 1
    schedule = _equal_budget_schedule(n_steps, budget, n_chains)
    generator = torch.Generator().manual_seed(seed)
    x0 = init_scale * torch.randn((n_chains, energy.n_atoms, energy.dim), generator=generator, dtype=torch.float64)
    return metropolis(energy, x0, temperature, n_steps, step_size=step_size, com_free=com_free, generator=generator,
                      **schedule)


def equal_budget_hmc(energy: Energy, temperature: float, budget: int, n_chains: int, spacing: float,
                     n_leapfrog: int = 10, step_size: float = 0.01, com_free: bool = False,
                     seed: int = 0) -> MCMCResult:
    """Hamiltonian Monte Carlo from :func:`lattice_start` (``spacing`` nm) using at most ``budget``
    energy-and-force evaluations, split and kept as in :func:`equal_budget_metropolis`."""
    n_steps = (budget // n_chains - 1) // n_leapfrog
    schedule = _equal_budget_schedule(n_steps, budget, n_chains)
    generator = torch.Generator().manual_seed(seed)
    x0 = lattice_start(n_chains, energy.n_atoms, energy.dim, spacing, generator)
    return hamiltonian_monte_carlo(energy, x0, temperature, n_steps, step_size=step_size, n_leapfrog=n_leapfrog,
                                   com_free=com_free, generator=generator, **schedule)
