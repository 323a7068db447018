"""Flow matching over crystals (CrystalFlow), in Å at the boundary: structure prediction with the
composition given (CSP) and free generation with cells drawn from the training distribution.

A crystal is (species, fractional coordinates f ∈ [0, 1)^{N×3}, lattice parameters
ℓ = (ln a, ln b, ln c, cos α, cos β, cos γ) of the Niggli-reduced cell), all invariant under
rotations and reflections of the Cartesian frame. The prior draws f uniformly on the torus and
standardised ℓ from N(0, I); the interpolant moves f along the shortest wrapped path and ℓ linearly,
and a permutation-equivariant network on wrapped pair differences (translation invariant) regresses
both velocities. Species enter through element features (covalent radius, period, group, Z), so one
model spans compositions and atom counts. Sampling integrates the learned flow with a few Euler
steps, wrapping f back onto the torus.

Model files share the potentials' layout (``torch.load(weights_only=True)`` + JSON header, see
:mod:`molfree.potentials.serialization`) with ``architecture: "CrystalFlow"``.
"""
from __future__ import annotations

import io
import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import niggli_reduce
from ase.data import covalent_radii
from torch import nn

from ..io import atomic_write_bytes
from .structures import check_cell

__all__ = ["ARCHITECTURE", "CrystalFlow", "canonical", "element_features", "features_to_cell", "lattice_features"]

ARCHITECTURE = "CrystalFlow"
UNITS = {"length": "angstrom", "energy": "eV"}
#: Last atomic number of each period.
_PERIOD_ENDS = (2, 10, 18, 36, 54, 86, 118)


def _period_group(z: int) -> tuple[int, int]:
    """Period and IUPAC group of element ``z`` (lanthanides and actinides in group 3)."""
    period = next(p for p, end in enumerate(_PERIOD_ENDS, 1) if z <= end)
    start = (0, *_PERIOD_ENDS)[period - 1]
    offset, length = z - start, _PERIOD_ENDS[period - 1] - start
    if length == 2:
        return period, 1 if offset == 1 else 18
    if length == 8:
        return period, offset if offset <= 2 else offset + 10
    if length == 18:
        return period, offset
    return period, offset if offset <= 2 else (3 if offset <= 17 else offset - 14)


def element_features() -> torch.Tensor:
    """``[119, 4]`` table per atomic number: covalent radius (Å), period/7, group/18, Z/100 (row 0 zero)."""
    table = torch.zeros(119, 4)
    for z in range(1, 119):
        period, group = _period_group(z)
        table[z] = torch.tensor([covalent_radii[z], period / 7, group / 18, z / 100])
    return table


def lattice_features(atoms: Atoms) -> np.ndarray:
    """(ln a, ln b, ln c, cos α, cos β, cos γ) of the cell (lengths in Å)."""
    par = atoms.cell.cellpar()
    return np.concatenate([np.log(par[:3]), np.cos(np.radians(par[3:]))])


def features_to_cell(features: np.ndarray) -> np.ndarray:
    """Cell parameters (Å, degrees) from :func:`lattice_features`, cosines clipped to ±0.8."""
    return np.concatenate([np.exp(features[:3]), np.degrees(np.arccos(np.clip(features[3:], -0.8, 0.8)))])


def canonical(atoms: Atoms) -> Atoms:
    """Periodic copy of ``atoms`` with a Niggli-reduced cell, atoms sorted by atomic number, wrapped."""
    out = Atoms(atoms.numbers, cell=atoms.cell, positions=atoms.positions, pbc=True)
    niggli_reduce(out)
    out = out[np.argsort(out.numbers, kind="stable")]
    out.wrap()
    return out


def _wrap(d: torch.Tensor) -> torch.Tensor:
    """Shortest periodic difference in [-0.5, 0.5)."""
    return d - torch.floor(d + 0.5)


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, n_out))


def _formula_units(numbers: list[int]) -> int:
    """Formula units Z of a cell: the gcd of its element counts."""
    return int(reduce(math.gcd, Counter(numbers).values()))


@dataclass
class TrainingSet:
    """Crystals grouped by their sorted species list: ``species [N]``, ``frac [M, N, 3]``, ``lattice [M, 6]``
    (standardised with the model's statistics)."""

    groups: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

    @property
    def weights(self) -> torch.Tensor:
        """Probability of drawing each group (its share of the crystals)."""
        sizes = torch.tensor([len(f) for _, f, _ in self.groups], dtype=torch.float32)
        return sizes / sizes.sum()


class CrystalFlow(nn.Module):
    """Velocity network and flow-matching training/sampling for crystals of any composition.

    Args:
        hidden: feature width.
        layers: message-passing layers over all atom pairs of the cell.
        frequencies: Fourier frequencies of the wrapped pair differences.

    ``metadata`` (set by :meth:`prepare`, saved in the model file) holds the training elements, the
    training cells (species lists with counts, for free generation) and the formula-unit counts.
    """

    def __init__(self, hidden: int = 64, layers: int = 2, frequencies: int = 4):
        super().__init__()
        self.config = {"hidden": hidden, "layers": layers, "frequencies": frequencies}
        self.metadata: dict = {}
        self.provenance: dict = {}
        self.register_buffer("freq", 2 * math.pi * torch.arange(1, frequencies + 1, dtype=torch.float32))
        self.register_buffer("lat_mean", torch.zeros(6))
        self.register_buffer("lat_std", torch.ones(6))
        self.register_buffer("elements", element_features())
        self.species = _mlp(self.elements.shape[1], hidden, hidden)
        self.context = _mlp(8, hidden, hidden)  # time, lattice, ln N
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
        """Velocities of ``frac [B, N, 3]`` and standardised ``lattice [B, 6]`` at times ``t [B]``
        for atomic numbers ``species [B, N]``."""
        n = frac.shape[1]
        d, edges = self._edges(frac)
        log_n = torch.full_like(t, math.log(n))
        h = self.species(self.elements[species]) + self.context(torch.cat([t[:, None], lattice, log_n[:, None]],
                                                                          dim=-1))[:, None]
        for message, update in zip(self.messages, self.updates):
            pair = torch.cat([h[:, :, None].expand(-1, -1, n, -1), h[:, None].expand(-1, n, -1, -1), edges], -1)
            h = h + update(torch.cat([h, message(pair).mean(2)], dim=-1))
        # Per-pair weights on the wrapped displacements keep the coordinate velocity permutation
        # equivariant and translation invariant.
        weight = self.frac_head(torch.cat([h[:, :, None].expand(-1, -1, n, -1), edges], dim=-1))
        v_frac = (weight * d).mean(2)
        return v_frac, self.lat_head(h.mean(1))

    def prepare(self, structures: list[Atoms]) -> TrainingSet:
        """Set the lattice statistics and ``metadata`` from training crystals; returns them grouped."""
        if not structures:
            raise ValueError("CrystalFlow needs at least one training crystal")
        crystals = [canonical(a) for a in structures]
        lattices = torch.tensor(np.array([lattice_features(a) for a in crystals]), dtype=torch.float32)
        self.lat_mean.copy_(lattices.mean(0))
        self.lat_std.copy_(lattices.std(0).clamp_min(1e-2) if len(crystals) > 1 else torch.ones(6))
        cells = Counter(tuple(a.get_chemical_symbols()) for a in crystals)
        self.metadata = {
            "elements": sorted({s for cell in cells for s in cell}),
            "cells": [[list(cell), count] for cell, count in cells.items()],
            "formula_units": dict(Counter(str(_formula_units(list(a.numbers))) for a in crystals)),
        }
        return self.dataset(crystals)

    def dataset(self, structures: list[Atoms]) -> TrainingSet:
        """Canonical crystals grouped by species list, lattices standardised with the model's statistics."""
        crystals = [canonical(a) for a in structures]
        by_species: dict[tuple[int, ...], list[Atoms]] = {}
        for atoms in crystals:
            by_species.setdefault(tuple(int(z) for z in atoms.numbers), []).append(atoms)
        groups = []
        for numbers, members in by_species.items():
            frac = torch.tensor(np.array([a.get_scaled_positions() for a in members]), dtype=torch.float32)
            lat = torch.tensor(np.array([lattice_features(a) for a in members]), dtype=torch.float32)
            groups.append((torch.tensor(numbers), frac, (lat - self.lat_mean) / self.lat_std))
        return TrainingSet(groups)

    def loss(self, data: TrainingSet, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Flow-matching loss on ``batch_size`` crystals of one species group drawn from ``data``."""
        g = int(torch.multinomial(data.weights, 1, generator=generator))
        species, frac, lat = data.groups[g]
        idx = torch.randint(len(frac), (batch_size,), generator=generator)
        f1, l1 = frac[idx], lat[idx]
        f1 = (f1 + torch.rand(batch_size, 1, 3, generator=generator)) % 1.0  # translation augmentation
        f0 = torch.rand(f1.shape, generator=generator)
        l0 = torch.randn(l1.shape, generator=generator)
        t = torch.rand(batch_size, generator=generator)
        u_frac = _wrap(f1 - f0)
        ft = (f0 + t[:, None, None] * u_frac) % 1.0
        lt = (1 - t[:, None]) * l0 + t[:, None] * l1
        v_frac, v_lat = self(species.expand(batch_size, -1), ft, lt, t)
        # A global translation is not identifiable: compare mean-free coordinate velocities.
        err = (v_frac - v_frac.mean(1, keepdim=True)) - (u_frac - u_frac.mean(1, keepdim=True))
        return err.pow(2).mean() + (v_lat - (l1 - l0)).pow(2).mean()

    def fit(self, structures: list[Atoms], steps: int = 500, batch_size: int = 32, lr: float = 2e-3,
            seed: int = 0) -> list[float]:
        """Train on ``structures`` (any compositions) for ``steps`` Adam steps; returns the losses."""
        data = self.prepare(structures)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        losses = []
        for _ in range(steps):
            loss = self.loss(data, batch_size, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    def check_elements(self, symbols: list[str]) -> None:
        """ValueError if ``symbols`` include elements absent from the training data."""
        known = self.metadata.get("elements")
        if known is None:
            raise ValueError("this CrystalFlow has not been trained (no training elements recorded)")
        unseen = sorted(set(symbols) - set(known))
        if unseen:
            raise ValueError(f"the crystal model was trained on {known}; it has never seen {unseen}")

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
            cos = np.clip(ell[3:].astype(float), -0.8, 0.8)
            if 1 - np.sum(cos**2) + 2 * np.prod(cos) <= 1e-3:  # the three angles span no cell
                continue
            atoms = Atoms(symbols, cell=features_to_cell(ell.astype(float)), scaled_positions=f, pbc=True)
            try:
                check_cell(atoms.cell.array, len(atoms))
            except ValueError:
                continue
            out.append(atoms)
        return out

    def sample_composition(self, counts: dict[str, int], n: int, max_atoms: int, steps: int = 10, seed: int = 0,
                           allow_unseen: bool = False) -> list[Atoms]:
        """CSP: ``n`` crystals of composition ``counts`` with ≤ ``max_atoms`` atoms; the number of formula
        units per cell follows the training data's distribution (uniform over the allowed ones it lacks).
        Elements outside the training data raise ValueError unless ``allow_unseen``."""
        symbols = [s for s, k in counts.items() for _ in range(k)]
        if not allow_unseen:
            self.check_elements(symbols)
        allowed = np.arange(1, max_atoms // len(symbols) + 1)
        if not len(allowed):
            raise ValueError(f"one formula unit has {len(symbols)} atoms, more than max_atoms={max_atoms}")
        seen = self.metadata.get("formula_units", {})
        weights = np.array([seen.get(str(z), 0) for z in allowed], dtype=float)
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(allowed), 1 / len(allowed))
        draws = np.random.default_rng(seed).choice(allowed, size=n, p=weights)
        out = []
        for z in sorted(set(draws.tolist())):
            out += self.sample(symbols * z, int((draws == z).sum()), steps, seed=seed * 1000 + z)
        return out

    def sample_free(self, n: int, steps: int = 10, seed: int = 0) -> list[Atoms]:
        """Free generation: ``n`` crystals whose cells (species lists) are drawn from the training cells."""
        cells = self.metadata.get("cells")
        if not cells:
            raise ValueError("this CrystalFlow has not been trained (no training cells recorded)")
        weights = np.array([count for _, count in cells], dtype=float)
        draws = np.random.default_rng(seed).choice(len(cells), size=n, p=weights / weights.sum())
        out = []
        for c in sorted(set(draws.tolist())):
            out += self.sample(cells[c][0], int((draws == c).sum()), steps, seed=seed * 1000 + c)
        return out

    def save(self, path: str | os.PathLike, provenance: dict | None = None) -> Path:
        """Write the model atomically: ``{"format", "version", "header": JSON, "state_dict"}``."""
        # Imported here: the potentials package pulls in e3nn.
        from ..potentials.serialization import FORMAT, VERSION

        header = {"architecture": ARCHITECTURE, "config": self.config, "units": UNITS,
                  "metadata": self.metadata, "provenance": provenance or {}}
        payload = {"format": FORMAT, "version": VERSION, "header": json.dumps(header),
                   "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> CrystalFlow:
        """Load a model written by :meth:`save` (``weights_only``); ValueError for anything else."""
        from ..potentials.serialization import _read_payload

        payload = _read_payload(path)
        header = json.loads(payload["header"])
        if header.get("architecture") != ARCHITECTURE:
            raise ValueError(f"{path} holds a {header.get('architecture')!r} model, not a {ARCHITECTURE} "
                             "crystal generator")
        model = cls(**header["config"])
        try:
            model.load_state_dict(payload["state_dict"])
        except RuntimeError as exc:
            raise ValueError(f"{path}: weights do not fit the CrystalFlow header ({exc})") from None
        model.metadata = header["metadata"]
        model.provenance = header.get("provenance", {})
        return model.eval()
