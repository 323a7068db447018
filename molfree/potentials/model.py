"""An E(3)-equivariant message-passing potential (NequIP family) on e3nn.

Units: positions and cutoff in nm, energies in kJ/mol. The network maps a batch of
structures to per-structure energies; forces and stress follow by autograd.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from e3nn import nn as enn
from e3nn import o3

from ..neighbors import neighbor_list

if TYPE_CHECKING:
    from .energy import PotentialEnergy


class BesselBasis(torch.nn.Module):
    """Radial basis sin(nπr/r_c)/r · √(2/r_c) (n = 1..n_basis, trainable frequencies) times a smooth envelope.

    The polynomial envelope of degree ``p`` (DimeNet's) goes to zero at r_c with its first
    and second derivatives, so energies are smooth as an atom crosses the cutoff.
    """

    def __init__(self, cutoff: float, n_basis: int = 8, p: int = 6):
        super().__init__()
        self.cutoff = cutoff
        self.p = p
        self.frequencies = torch.nn.Parameter(torch.arange(1, n_basis + 1, dtype=torch.get_default_dtype()) * math.pi)

    def envelope(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p
        env = (1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2))
        return env * (x < 1)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        x = (r / self.cutoff).unsqueeze(-1)
        basis = math.sqrt(2 / self.cutoff) * torch.sin(self.frequencies * x) / (x * self.cutoff)
        return basis * self.envelope(x)


class InteractionBlock(torch.nn.Module):
    """One message-passing layer: h_i ← gate(self(h_i, z_i) + W Σ_j R(r_ij) h_j ⊗ Y(r̂_ij) / √avg_neighbors)."""

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, irreps_sh: o3.Irreps, n_species: int,
                 n_basis: int, radial_hidden: int, avg_num_neighbors: float):
        super().__init__()
        self.avg_num_neighbors = avg_num_neighbors
        self.linear_up = o3.Linear(irreps_in, irreps_in)
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(irreps_in):
            for j, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in irreps_out or ir_out == o3.Irrep("0e"):
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        irreps_mid = o3.Irreps(mid)
        irreps_mid, permutation, _ = irreps_mid.sort()
        instructions = [(i1, i2, permutation[o], mode, train) for i1, i2, o, mode, train in instructions]
        self.conv = o3.TensorProduct(irreps_in, irreps_sh, irreps_mid, instructions,
                                     shared_weights=False, internal_weights=False)
        self.radial = enn.FullyConnectedNet([n_basis, radial_hidden, radial_hidden, self.conv.weight_numel],
                                            torch.nn.functional.silu)
        scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l > 0])
        gates = o3.Irreps(f"{gated.num_irreps}x0e")
        self.gate = enn.Gate(scalars, [torch.nn.functional.silu], gates, [torch.sigmoid], gated)
        self.linear_down = o3.Linear(irreps_mid.simplify(), self.gate.irreps_in)
        self.self_connection = o3.FullyConnectedTensorProduct(irreps_in, o3.Irreps(f"{n_species}x0e"),
                                                              self.gate.irreps_in)
        self.irreps_out = self.gate.irreps_out

    def forward(self, h, species_onehot, edge_sh, edge_basis, sender, receiver):
        messages = self.conv(self.linear_up(h)[sender], edge_sh, self.radial(edge_basis))
        aggregated = torch.zeros(h.shape[0], messages.shape[1], dtype=h.dtype, device=h.device)
        aggregated.index_add_(0, receiver, messages)
        update = self.linear_down(aggregated / math.sqrt(self.avg_num_neighbors))
        return self.gate(update + self.self_connection(h, species_onehot))


class EquivariantPotential(torch.nn.Module):
    """E(3)-equivariant interatomic potential.

    Args:
        elements: chemical symbols the model knows, e.g. ``["H", "C", "N", "O"]``.
        cutoff: radial cutoff in nm.
        channels: multiplicity of every irrep in the hidden features.
        l_max: highest spherical-harmonic degree of features and edge attributes.
        n_layers: number of interaction blocks.
        n_basis: radial Bessel functions.
        radial_hidden: width of the radial MLP.
        avg_num_neighbors: message normaliser (set from data by training).

    ``forward(positions [M,3] nm, species [M] (indices into elements), batch [M], n_structures,
    box [B,3,3] | None) -> energies [B] kJ/mol``. Use :meth:`bind` to get a :class:`molfree.Energy`.
    """

    def __init__(self, elements: list[str], cutoff: float = 0.5, channels: int = 32, l_max: int = 2,
                 n_layers: int = 3, n_basis: int = 8, radial_hidden: int = 64, avg_num_neighbors: float = 10.0):
        super().__init__()
        from ase.data import atomic_numbers

        unknown = [e for e in elements if e not in atomic_numbers]
        if unknown or not elements:
            raise ValueError(f"unknown or missing elements: {unknown or elements}")
        if not cutoff > 0:
            raise ValueError(f"cutoff must be positive (nm), got {cutoff}")
        self.config = dict(elements=list(elements), cutoff=float(cutoff), channels=channels, l_max=l_max,
                           n_layers=n_layers, n_basis=n_basis, radial_hidden=radial_hidden,
                           avg_num_neighbors=float(avg_num_neighbors))
        self.elements = list(elements)
        self.cutoff = float(cutoff)
        n_species = len(elements)
        self.n_species = n_species
        self.irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        self.spherical_harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.radial_basis = BesselBasis(self.cutoff, n_basis)
        self.embedding = torch.nn.Linear(n_species, channels, bias=False)
        hidden = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(l_max + 1)])
        irreps = o3.Irreps(f"{channels}x0e")
        blocks = []
        for _ in range(n_layers):
            block = InteractionBlock(irreps, hidden, self.irreps_sh, n_species, n_basis, radial_hidden,
                                     avg_num_neighbors)
            blocks.append(block)
            irreps = block.irreps_out
        self.blocks = torch.nn.ModuleList(blocks)
        self.readout = o3.Linear(irreps, o3.Irreps("1x0e"))
        self.register_buffer("energy_shift", torch.zeros(n_species))  # kJ/mol per atom of each element
        self.register_buffer("energy_scale", torch.ones(()))  # kJ/mol
        self.periodic_data: bool | None = None  # whether training data were periodic (None: untrained)
        self.metadata: dict = {}

    def bind(self, atomic_numbers) -> "PotentialEnergy":
        """This model on fixed species (atomic numbers or symbols ``[N]``) as a :class:`molfree.Energy`."""
        from .energy import PotentialEnergy

        return PotentialEnergy(self, atomic_numbers)

    def save(self, path, metadata: dict | None = None):
        """Write a model file (see :mod:`molfree.potentials.serialization`)."""
        from .serialization import save

        return save(self, path, metadata)

    def atomic_energies(self, positions, species, batch, box=None, pairs=None):
        """Per-atom energies ``[M]`` (kJ/mol); ``pairs`` = (i, j, shifts) full list, built here if None."""
        if pairs is None:
            pairs = self.neighbor_pairs(positions, batch, box)
        receiver, sender, shifts = pairs
        vectors = positions[sender] - positions[receiver]
        if box is not None:
            vectors = vectors + torch.einsum("pk,pkl->pl", shifts.to(positions.dtype), box[batch[receiver]])
        lengths = vectors.norm(dim=-1)
        edge_sh = self.spherical_harmonics(vectors)
        edge_basis = self.radial_basis(lengths)
        onehot = torch.nn.functional.one_hot(species, self.n_species).to(positions.dtype)
        h = self.embedding(onehot)
        for block in self.blocks:
            h = block(h, onehot, edge_sh, edge_basis, sender, receiver)
        out = self.readout(h).squeeze(-1)
        return out * self.energy_scale + self.energy_shift[species]

    def forward(self, positions, species, batch, n_structures: int, box=None, pairs=None):
        atomic = self.atomic_energies(positions, species, batch, box, pairs)
        energies = torch.zeros(n_structures, dtype=atomic.dtype, device=atomic.device)
        return energies.index_add(0, batch, atomic)

    def neighbor_pairs(self, positions, batch, box):
        """Full neighbor list (receiver, sender, shifts) within the cutoff for flattened, batched atoms.

        ``positions [M, 3]`` hold the structures contiguously in the order of ``batch [M]``.
        """
        counts = torch.bincount(batch)
        if bool((counts == counts[0]).all()):
            nl = neighbor_list(positions.detach().reshape(len(counts), int(counts[0]), 3), self.cutoff, box,
                               half=False)
            return nl.i, nl.j, nl.shifts
        receivers, senders, shifts, offset = [], [], [], 0
        for b, n in enumerate(counts.tolist()):
            nl = neighbor_list(positions.detach()[offset:offset + n], self.cutoff,
                               None if box is None else box[b], half=False)
            receivers.append(nl.i + offset)
            senders.append(nl.j + offset)
            shifts.append(nl.shifts)
            offset += n
        return torch.cat(receivers), torch.cat(senders), torch.cat(shifts)
