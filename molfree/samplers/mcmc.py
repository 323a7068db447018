"""Random-walk Metropolis baseline with parallel chains, annealing and step-size adaptation.

Every proposal costs one energy evaluation per chain; ``energy_evaluations`` counts them, so
the baseline can be run at the same budget as a learned sampler.
"""
from __future__ import annotations

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
    if x0.ndim != 3:
        raise ValueError(f"x0 must be [C, N, dim], got {tuple(x0.shape)}")
    if not (temperature > 0 and step_size > 0 and 0 < target_acceptance < 1):
        raise ValueError("temperature and step_size must be positive, target_acceptance in (0, 1)")
    if not 0 <= burn_in < n_steps or thin < 1:
        raise ValueError(f"need 0 <= burn_in < n_steps and thin >= 1, got {burn_in}, {n_steps}, {thin}")
    if anneal_from is not None and not anneal_from >= temperature:
        raise ValueError("anneal_from must be >= temperature")
    project = remove_com if com_free else (lambda v: v)
    x = project(x0.detach().double())
    n_chains = x.shape[0]
    steps = torch.full((n_chains,), float(step_size), dtype=torch.float64)
    with torch.no_grad():
        e = energy(x)
        kept, kept_e, accepted = [], [], 0.0
        for i in range(n_steps):
            temp = temperature
            if anneal_from is not None and i < burn_in // 2:
                temp = anneal_from * (temperature / anneal_from) ** (i / max(burn_in // 2, 1))
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


def equal_budget_metropolis(energy: Energy, temperature: float, budget: int, n_chains: int, init_scale: float,
                            com_free: bool = False, step_size: float = 0.1, seed: int = 0) -> MCMCResult:
    """Metropolis from N(0, init_scale² I) starts using at most ``budget`` energy evaluations.

    Half the steps are burn-in with step-size adaptation; samples are the chains' states
    over the second half, thinned to about ``n_chains · 10`` samples.
    """
    n_steps = budget // n_chains - 1
    if n_steps < 2:
        raise ValueError(f"budget {budget} is too small for {n_chains} chains")
    generator = torch.Generator().manual_seed(seed)
    x0 = init_scale * torch.randn((n_chains, energy.n_atoms, energy.dim), generator=generator, dtype=torch.float64)
    burn_in = n_steps // 2
    return metropolis(energy, x0, temperature, n_steps, burn_in=burn_in, step_size=step_size,
                      thin=max(1, (n_steps - burn_in) // 10), com_free=com_free, generator=generator)
