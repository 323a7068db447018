"""Boltzmann generator: a flow from a prior to configurations, with importance weights against an Energy."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .. import units
from ..energy import Energy
from .distributions import Distribution
from .metrics import CountedEnergy
from .transforms import Transform


class BoltzmannGenerator(nn.Module):
    """q(x) = prior pushed through ``flow``, targeting p(x) ∝ exp(−E(x)/kT).

    Args:
        prior: base distribution on ``[D]``.
        flow: transform whose ``forward`` maps prior samples ``[B, D]`` to positions ``[B, N, dim]`` (nm).
        energy: the target :class:`~molfree.Energy` (kJ/mol); wrapped in a
            :class:`~molfree.flows.metrics.CountedEnergy` so ``energy_evaluations`` counts every call.
        temperature: K.
        validity: optional ``x [B, N, dim] -> bool [B]`` (e.g. :class:`~molfree.flows.internal.Chirality`);
            failing samples are rejected (weight zero).

    Counters: ``energy_evaluations`` (configurations evaluated), ``n_nonfinite`` (non-finite
    positions or energies), ``n_rejected`` (failed ``validity``).

    For Monte Carlo moves: :meth:`propose` gives (sample, log q(sample)) and :meth:`log_prob`
    gives log q(x) of any state; both are densities of the configuration modulo the flow's
    invariances (with internal coordinates: rigid-body motions).
    """

    def __init__(self, prior: Distribution, flow: Transform, energy: Energy, temperature: float,
                 validity: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.prior, self.flow = prior, flow
        self.energy = energy if isinstance(energy, CountedEnergy) else CountedEnergy(energy)
        self.temperature = float(temperature)
        self.kt = units.kT(temperature)
        self.validity = validity
        self.n_nonfinite = 0
        self.n_rejected = 0

    @property
    def energy_evaluations(self) -> int:
        """Number of configurations whose energy has been evaluated."""
        return self.energy.count

    def propose(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples ``[n, N, dim]`` with their log density ``log q [n]`` (differentiable)."""
        z = self.prior.sample(n)
        x, log_det = self.flow(z)
        return x, self.prior.log_prob(z) - log_det

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log q(x) ``[B]`` of positions ``x [B, N, dim]``."""
        z, log_det = self.flow.inverse(x)
        return self.prior.log_prob(z) + log_det

    def reduced_energy(self, x: torch.Tensor) -> torch.Tensor:
        """Reduced energies E/kT ``[B]``; +inf (and counted in ``n_nonfinite``) for non-finite
        positions or energies, +inf (counted in ``n_rejected``) where ``validity`` fails."""
        finite = torch.isfinite(x).flatten(1).all(-1)
        u = torch.full(x.shape[:1], torch.inf, dtype=x.dtype, device=x.device)
        if finite.any():
            u = u.masked_scatter(finite, self.energy(x[finite]) / self.kt)
        bad = ~torch.isfinite(u)
        self.n_nonfinite += int(bad.sum())
        u = torch.where(bad, torch.full_like(u, torch.inf), u)
        if self.validity is not None:
            valid = self.validity(x) | bad
            self.n_rejected += int((~valid).sum())
            u = torch.where(valid, u, torch.full_like(u, torch.inf))
        return u

    def log_weights(self, x: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """Unnormalised log importance weights ``−u(x) − log q(x)`` ``[B]``; −inf for rejected samples
        and for a non-finite ``log_q`` (invalid geometry, e.g. an angle outside (0, π), counted in ``n_nonfinite``)."""
        return self._combine(self.reduced_energy(x), log_q)

    def _combine(self, u: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        invalid_q = ~torch.isfinite(log_q)
        self.n_nonfinite += int((invalid_q & torch.isfinite(u)).sum())
        log_w = -u - log_q
        return torch.where(invalid_q | torch.isnan(log_w), torch.full_like(log_w, -torch.inf), log_w)

    @torch.no_grad()
    def sample_with_energies(self, n: int, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` configurations ``[n, N, dim]`` (nm), log importance weights ``[n]``, reduced energies ``[n]`` (kT)."""
        xs, ws, us = [], [], []
        for start in range(0, n, batch_size):
            x, log_q = self.propose(min(batch_size, n - start))
            u = self.reduced_energy(x)
            xs.append(x)
            us.append(u)
            ws.append(self._combine(u, log_q))
        return torch.cat(xs), torch.cat(ws), torch.cat(us)

    def sample(self, n: int, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` configurations ``[n, N, dim]`` (nm) and their log importance weights ``[n]``."""
        return self.sample_with_energies(n, batch_size)[:2]
