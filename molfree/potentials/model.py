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


#: Energy readouts: from the last layer only, or summed over all layers.
READOUTS = ("last", "all")


class BesselBasis(torch.nn.Module):
    """Radial basis sin(nπx)/x with x = r/r_c (n = 1..n_basis, trainable frequencies) times a smooth envelope.

    Written in the dimensionless x, the basis is O(1) whatever the length unit (sin(nπr/r_c)/r in nm
    would be 10× larger than in Å, and its scale would leak into the radial network's initialisation).

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
        basis = torch.sin(self.frequencies * x) / x
        return basis * self.envelope(x)


def channelwise_product(irreps_1: o3.Irreps, irreps_2: o3.Irreps, keep, mode: str,
                        internal_weights: bool) -> o3.TensorProduct:
    """Tensor product of every irrep pair (i, j) into every allowed irrep that ``keep(ir)`` accepts.

    ``mode`` "uvu" multiplies each channel of ``irreps_1`` by a single-channel ``irreps_2`` (edge
    convolutions); "uuu" multiplies matching channels of two equally wide inputs (body-order products).
    The output irreps are sorted (same-irrep blocks adjacent; ``.simplify()`` merges them).
    """
    mid, instructions = [], []
    for i, (mul, ir_1) in enumerate(irreps_1):
        for j, (_, ir_2) in enumerate(irreps_2):
            for ir_out in ir_1 * ir_2:
                if keep(ir_out):
                    instructions.append((i, j, len(mid), mode, True))
                    mid.append((mul, ir_out))
    irreps_mid, permutation, _ = o3.Irreps(mid).sort()
    instructions = [(i1, i2, permutation[o], m, train) for i1, i2, o, m, train in instructions]
    return o3.TensorProduct(irreps_1, irreps_2, irreps_mid, instructions, shared_weights=internal_weights,
                            internal_weights=internal_weights)


class InteractionBlock(torch.nn.Module):
    """One message-passing layer.

    A_i = W Σ_j R(r_ij) h_j ⊗ Y(r̂_ij) / √avg_neighbors; with ``correlation`` ν > 1 the update also
    holds the channel-wise tensor powers B_i^⊗2 … B_i^⊗ν of B_i = W_B A_i / √(1 + ⟨(W_B A_i)²⟩) (body order
    ν + 1 per layer, as in MACE; the invariant normaliser keeps the powers O(1) however dense the
    neighbourhood); h_i ← gate(W' [A_i, B_i^⊗2, …] + self(h_i, z_i)).
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, irreps_sh: o3.Irreps, n_species: int,
                 n_basis: int, radial_hidden: int, avg_num_neighbors: float, correlation: int = 1):
        super().__init__()
        self.avg_num_neighbors = avg_num_neighbors
        self.linear_up = o3.Linear(irreps_in, irreps_in)
        self.conv = channelwise_product(irreps_in, irreps_sh, lambda ir: ir in irreps_out or ir == o3.Irrep("0e"),
                                        "uvu", internal_weights=False)
        self.radial = enn.FullyConnectedNet([n_basis, radial_hidden, radial_hidden, self.conv.weight_numel],
                                            torch.nn.functional.silu)
        scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l > 0])
        gates = o3.Irreps(f"{gated.num_irreps}x0e")
        self.gate = enn.Gate(scalars, [torch.nn.functional.silu], gates, [torch.sigmoid], gated)
        irreps_conv = self.conv.irreps_out.simplify()
        self.linear_down = o3.Linear(irreps_conv, self.gate.irreps_in)
        self.products, self.product_linears, self.product_updates = (torch.nn.ModuleList() for _ in range(3))
        if correlation > 1:
            self.density = o3.Linear(irreps_conv, irreps_out)
            for _ in range(correlation - 1):
                product = channelwise_product(irreps_out, irreps_out, lambda ir: ir in irreps_out, "uuu",
                                              internal_weights=True)
                self.products.append(product)
                self.product_linears.append(o3.Linear(product.irreps_out.simplify(), irreps_out))
                self.product_updates.append(o3.Linear(irreps_out, self.gate.irreps_in))
        self.self_connection = o3.FullyConnectedTensorProduct(irreps_in, o3.Irreps(f"{n_species}x0e"),
                                                              self.gate.irreps_in)
        self.irreps_out = self.gate.irreps_out

    def forward(self, h, species_onehot, edge_sh, edge_basis, sender, receiver):
        messages = self.conv(self.linear_up(h)[sender], edge_sh, self.radial(edge_basis))
        aggregated = torch.zeros(h.shape[0], messages.shape[1], dtype=h.dtype, device=h.device)
        aggregated.index_add_(0, receiver, messages)
        aggregated = aggregated / math.sqrt(self.avg_num_neighbors)
        update = self.linear_down(aggregated) + self.self_connection(h, species_onehot)
        if self.products:
            density = self.density(aggregated)
            density = power = density / torch.sqrt(1 + density.pow(2).mean(dim=-1, keepdim=True))
            for product, linear, to_update in zip(self.products, self.product_linears, self.product_updates):
                power = linear(product(power, density))
                update = update + to_update(power)
        return self.gate(update)


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
        correlation: body-order products per layer (1: NequIP's two-body messages; ν: tensor powers
            of the aggregated messages up to ν, body order ν + 1 per layer as in MACE).
        readout: "last" (energy from the last layer's scalars) or "all" (sum of per-layer readouts).

    ``forward(positions [M,3] nm, species [M] (indices into elements), batch [M], n_structures,
    box [B,3,3] | None) -> energies [B] kJ/mol``. Use :meth:`bind` to get a :class:`molfree.Energy`.
    """

    def __init__(self, elements: list[str], cutoff: float = 0.5, channels: int = 32, l_max: int = 2,
                 n_layers: int = 3, n_basis: int = 8, radial_hidden: int = 64, avg_num_neighbors: float = 10.0,
                 correlation: int = 3, readout: str = "all"):
        super().__init__()
        from ase.data import atomic_numbers

        unknown = [e for e in elements if e not in atomic_numbers]
        if unknown or not elements:
            raise ValueError(f"unknown or missing elements: {unknown or elements}")
        if not cutoff > 0:
            raise ValueError(f"cutoff must be positive (nm), got {cutoff}")
        if correlation < 1:
            raise ValueError(f"correlation must be >= 1, got {correlation}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.config = {"elements": list(elements), "cutoff": float(cutoff), "channels": channels, "l_max": l_max,
                       "n_layers": n_layers, "n_basis": n_basis, "radial_hidden": radial_hidden,
                       "avg_num_neighbors": float(avg_num_neighbors), "correlation": correlation, "readout": readout}
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
                                     avg_num_neighbors, correlation)
            blocks.append(block)
            irreps = block.irreps_out
        self.blocks = torch.nn.ModuleList(blocks)
        read_blocks = blocks if readout == "all" else blocks[-1:]
        self.readouts = torch.nn.ModuleList(o3.Linear(b.irreps_out, o3.Irreps("1x0e")) for b in read_blocks)
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
        out = positions.new_zeros(species.shape)
        first_read = len(self.blocks) - len(self.readouts)
        for k, block in enumerate(self.blocks):
            h = block(h, onehot, edge_sh, edge_basis, sender, receiver)
            if k >= first_read:
                out = out + self.readouts[k - first_read](h).squeeze(-1)
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
