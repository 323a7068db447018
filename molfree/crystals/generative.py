"""Flow matching over crystals for structure prediction (composition given), in Å at the boundary.

A crystal is (species, fractional coordinates f ∈ [0, 1)^{N×3}, lattice parameters
ℓ = (ln a, ln b, ln c, cos α, cos β, cos γ)), all invariant under rotations and reflections of the
Cartesian frame. The prior draws f uniformly on the torus and standardised ℓ from N(0, I); the
interpolant moves f along the shortest wrapped path and ℓ linearly, and a permutation-equivariant
network on wrapped pair differences (translation invariant) regresses both velocities. Sampling
integrates the learned flow with a few Euler steps, wrapping f back onto the torus.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from ase import Atoms
from torch import nn

from .structures import check_cell

__all__ = ["CrystalFlow", "features_to_cell", "lattice_features"]


def lattice_features(atoms: Atoms) -> np.ndarray:
    """(ln a, ln b, ln c, cos α, cos β, cos γ) of the cell (lengths in Å)."""
    par = atoms.cell.cellpar()
    return np.concatenate([np.log(par[:3]), np.cos(np.radians(par[3:]))])


def features_to_cell(features: np.ndarray) -> np.ndarray:
    """Cell parameters (Å, degrees) from :func:`lattice_features`, cosines clipped to ±0.8."""
    return np.concatenate([np.exp(features[:3]), np.degrees(np.arccos(np.clip(features[3:], -0.8, 0.8)))])


def _wrap(d: torch.Tensor) -> torch.Tensor:
    """Shortest periodic difference in [-0.5, 0.5)."""
    return d - torch.floor(d + 0.5)


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, n_out))


class CrystalFlow(nn.Module):
    """Velocity network and flow-matching training/sampling for fixed-composition crystals.

    Args:
        hidden: feature width.
        layers: message-passing layers over all atom pairs of the cell.
        frequencies: Fourier frequencies of the wrapped pair differences.
    """

    def __init__(self, hidden: int = 64, layers: int = 2, frequencies: int = 4):
        super().__init__()
        self.register_buffer("freq", 2 * math.pi * torch.arange(1, frequencies + 1, dtype=torch.float32))
        self.register_buffer("lat_mean", torch.zeros(6))
        self.register_buffer("lat_std", torch.ones(6))
        self.species = nn.Embedding(119, hidden)
        self.context = _mlp(7, hidden, hidden)  # time + lattice
        edge = 6 * frequencies
        self.messages = nn.ModuleList(_mlp(2 * hidden + edge, hidden, hidden) for _ in range(layers))
        self.updates = nn.ModuleList(_mlp(2 * hidden, hidden, hidden) for _ in range(layers))
        self.frac_head = _mlp(hidden + edge, hidden, 1)
        self.lat_head = _mlp(hidden, hidden, 6)

    def _edges(self, frac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = _wrap(frac[:, None, :, :] - frac[:, :, None, :])  # [B, N, N, 3]: f_j - f_i
        phase = d[..., None] * self.freq  # [B, N, N, 3, K]
        return d, torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1).flatten(-2)

    def forward(self, species: torch.Tensor, frac: torch.Tensor, lattice: torch.Tensor,
                t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocities of ``frac [B, N, 3]`` and standardised ``lattice [B, 6]`` at times ``t [B]``."""
        n = frac.shape[1]
        d, edges = self._edges(frac)
        h = self.species(species) + self.context(torch.cat([t[:, None], lattice], dim=-1))[:, None]
        for message, update in zip(self.messages, self.updates):
            pair = torch.cat([h[:, :, None].expand(-1, -1, n, -1), h[:, None].expand(-1, n, -1, -1), edges], -1)
            h = h + update(torch.cat([h, message(pair).mean(2)], dim=-1))
        # Per-pair weights on the wrapped displacements keep the coordinate velocity permutation
        # equivariant and translation invariant.
        weight = self.frac_head(torch.cat([h[:, :, None].expand(-1, -1, n, -1), edges], dim=-1))
        v_frac = (weight * d).mean(2)
        return v_frac, self.lat_head(h.mean(1))

    def _tensors(self, structures: list[Atoms]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        species = torch.tensor(np.array([a.numbers for a in structures]), dtype=torch.long)
        frac = torch.tensor(np.array([a.get_scaled_positions() for a in structures]), dtype=torch.float32)
        lattice = torch.tensor(np.array([lattice_features(a) for a in structures]), dtype=torch.float32)
        return species, frac, lattice

    def fit(self, structures: list[Atoms], steps: int = 500, batch_size: int = 32, lr: float = 2e-3,
            seed: int = 0) -> list[float]:
        """Train on crystals with one atom count and species order (a CSP training set); returns losses."""
        if not structures or len({tuple(a.numbers) for a in structures}) != 1:
            raise ValueError("fit needs a non-empty set of crystals with identical species lists")
        species, frac1, lat = self._tensors(structures)
        self.lat_mean.copy_(lat.mean(0))
        self.lat_std.copy_(lat.std(0).clamp_min(1e-2) if len(lat) > 1 else torch.ones(6))
        lat1 = (lat - self.lat_mean) / self.lat_std
        gen = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        losses = []
        for _ in range(steps):
            idx = torch.randint(len(structures), (batch_size,), generator=gen)
            s, f1, l1 = species[idx], frac1[idx], lat1[idx]
            f1 = (f1 + torch.rand(batch_size, 1, 3, generator=gen)) % 1.0  # translation augmentation
            f0 = torch.rand(f1.shape, generator=gen)
            l0 = torch.randn(l1.shape, generator=gen)
            t = torch.rand(batch_size, generator=gen)
            u_frac = _wrap(f1 - f0)
            ft = (f0 + t[:, None, None] * u_frac) % 1.0
            lt = (1 - t[:, None]) * l0 + t[:, None] * l1
            v_frac, v_lat = self(s, ft, lt, t)
            # A global translation is not identifiable: compare mean-free coordinate velocities.
            err = (v_frac - v_frac.mean(1, keepdim=True)) - (u_frac - u_frac.mean(1, keepdim=True))
            loss = err.pow(2).mean() + (v_lat - (l1 - l0)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    @torch.no_grad()
    def sample(self, symbols: list[str], n: int, steps: int = 10, seed: int = 0) -> list[Atoms]:
        """``n`` crystals of ``symbols`` (one cell) by ``steps`` Euler steps; invalid cells are dropped."""
        gen = torch.Generator().manual_seed(seed)
        numbers = torch.tensor(Atoms(symbols).numbers, dtype=torch.long).expand(n, -1)
        frac = torch.rand(n, len(symbols), 3, generator=gen)
        lat = torch.randn(n, 6, generator=gen)
        for k in range(steps):
            t = torch.full((n,), k / steps)
            v_frac, v_lat = self(numbers, frac, lat, t)
            frac = (frac + v_frac / steps) % 1.0
            lat = lat + v_lat / steps
        lat = lat * self.lat_std + self.lat_mean
        out = []
        for f, ell in zip(frac.numpy(), lat.numpy()):
            atoms = Atoms(symbols, cell=features_to_cell(ell.astype(float)), scaled_positions=f, pbc=True)
            try:
                check_cell(atoms.cell.array, len(atoms))
            except ValueError:
                continue
            out.append(atoms)
        return out
