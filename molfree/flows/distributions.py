"""Base (prior) distributions of flows: ``sample(n) -> [n, D]`` and ``log_prob(z [B, D]) -> [B]``."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class Distribution(nn.Module):
    """A normalised density on ``R^D`` (or the torus for angles) with exact sampling."""

    dim: int

    def sample(self, n: int) -> torch.Tensor:
        """``n`` independent samples ``[n, D]``."""
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised log density ``[B]`` of ``z [B, D]``."""
        raise NotImplementedError


class _Located(Distribution):
    """Carries a dtype/device anchor buffer so samples follow ``.to(...)`` of the module."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)
        self.register_buffer("_anchor", torch.zeros(()))


class NormalDistribution(_Located):
    """Isotropic Gaussian N(0, std² I) on ``R^D``."""

    def __init__(self, dim: int, std: float = 1.0):
        super().__init__(dim)
        if not std > 0:
            raise ValueError("std must be positive")
        self.std = float(std)

    def sample(self, n):
        return self.std * torch.randn(n, self.dim, dtype=self._anchor.dtype, device=self._anchor.device)

    def log_prob(self, z):
        return (-0.5 * (z / self.std) ** 2 - math.log(self.std) - 0.5 * math.log(2 * math.pi)).sum(-1)


class UniformTorus(_Located):
    """Uniform distribution of D angles on ``[-π, π)^D``."""

    def sample(self, n):
        u = torch.rand(n, self.dim, dtype=self._anchor.dtype, device=self._anchor.device)
        return (2 * u - 1) * math.pi

    def log_prob(self, z):
        inside = ((z >= -math.pi) & (z <= math.pi)).all(-1)
        value = torch.full_like(z[:, 0], -self.dim * math.log(2 * math.pi))
        return torch.where(inside, value, torch.full_like(value, -math.inf))


class VonMisesTorus(_Located):
    """Product of von Mises densities on ``[-π, π)^D`` with locations ``loc [D]`` (rad) and concentrations ``[D]``."""

    def __init__(self, loc, concentration):
        loc = torch.as_tensor(loc, dtype=torch.get_default_dtype())
        concentration = torch.as_tensor(concentration, dtype=torch.get_default_dtype()).expand_as(loc).clone()
        if loc.ndim != 1 or not (concentration > 0).all():
            raise ValueError("loc must be [D] and concentrations positive")
        super().__init__(loc.shape[0])
        self.register_buffer("loc", loc)
        self.register_buffer("concentration", concentration)

    def _distribution(self) -> torch.distributions.VonMises:
        return torch.distributions.VonMises(self.loc, self.concentration)

    def sample(self, n):
        z = self._distribution().sample((n,))
        return torch.remainder(z + math.pi, 2 * math.pi) - math.pi

    def log_prob(self, z):
        return self._distribution().log_prob(z.to(self.loc)).sum(-1).to(z)


class ProductDistribution(Distribution):
    """Independent blocks concatenated along the last axis, e.g. Gaussian bonds/angles then torus torsions."""

    def __init__(self, parts: Sequence[Distribution]):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.sizes = [p.dim for p in parts]
        self.dim = sum(self.sizes)

    def sample(self, n):
        return torch.cat([p.sample(n) for p in self.parts], dim=-1)

    def log_prob(self, z):
        blocks = torch.split(z, self.sizes, dim=-1)
        return sum(p.log_prob(b) for p, b in zip(self.parts, blocks))
