"""A potential bound to a system's atoms: a :class:`molfree.Energy`, with stress for periodic systems."""
from __future__ import annotations

import torch

from ..checks import as_box, as_positions
from ..energy import Energy


def species_indices(model, atomic_numbers) -> torch.Tensor:
    """Indices into ``model.elements`` for ``atomic_numbers`` (or symbols); ValueError for unknown elements."""
    from ase.data import chemical_symbols

    symbols = [chemical_symbols[int(z)] if not isinstance(z, str) else z for z in atomic_numbers]
    missing = sorted(set(symbols) - set(model.elements))
    if missing:
        raise ValueError(f"the model was trained on elements {model.elements} and cannot evaluate {missing}")
    lookup = {e: k for k, e in enumerate(model.elements)}
    return torch.tensor([lookup[s] for s in symbols], dtype=torch.long)


class PotentialEnergy(Energy):
    """:class:`EquivariantPotential` evaluated on fixed species: positions ``[B, N, 3]`` nm → energies ``[B]`` kJ/mol."""

    def __init__(self, model, atomic_numbers):
        species = species_indices(model, atomic_numbers)
        super().__init__(n_atoms=len(species))
        self.model = model
        self.register_buffer("species", species)

    def _flatten(self, positions, box):
        if box is not None and self.model.periodic_data is False:
            raise ValueError("this model was trained without periodic data and cannot evaluate a periodic system")
        b, n = positions.shape[:2]
        batch = torch.arange(b, device=positions.device).repeat_interleave(n)
        param = next(self.model.parameters())
        return positions.reshape(-1, 3).to(param.dtype), self.species.repeat(b), batch, b

    def energy(self, positions, box):
        flat, species, batch, b = self._flatten(positions, box)
        box = None if box is None else box.to(flat.dtype)
        return self.model(flat, species, batch, b, box).to(positions.dtype)

    def energy_forces_stress(self, positions, box=None):
        """Energies ``[B]`` kJ/mol, forces ``[B, N, 3]`` kJ/mol/nm and, with a box, stress ``[B, 3, 3]`` kJ/mol/nm³."""
        positions, _ = as_positions(positions, 3, self.n_atoms)
        box = as_box(box, positions.shape[0], positions)
        flat, species, batch, b = self._flatten(positions, box)
        box = None if box is None else box.to(flat.dtype)
        energies, forces, stress = derivatives(self.model, flat, species, batch, b, box, stress=box is not None)
        return energies, forces.reshape(positions.shape), stress


def derivatives(model, positions, species, batch, n_structures: int, box=None, pairs=None, stress: bool = False):
    """Energies ``[B]`` kJ/mol, forces ``[M, 3]`` kJ/mol/nm and optionally stress ``[B, 3, 3]`` kJ/mol/nm³.

    Arguments as :meth:`EquivariantPotential.forward` (flattened ``positions [M, 3]`` nm). Stress is
    (1/V) ∂E/∂ε for a symmetric strain ε applied to positions and box (ASE's sign convention:
    positive means the system wants to contract).
    """
    with torch.enable_grad():
        x = positions.detach().requires_grad_(True)
        if not stress:
            energies = model(x, species, batch, n_structures, box, pairs=pairs)
            (grad,) = torch.autograd.grad(energies.sum(), x)
            return energies.detach(), -grad, None
        if box is None:
            raise ValueError("stress needs a periodic box")
        strain = torch.zeros_like(box, requires_grad=True)
        deform = torch.eye(3, dtype=box.dtype, device=box.device) + 0.5 * (strain + strain.transpose(1, 2))
        strained = torch.einsum("mk,mkl->ml", x, deform[batch])
        energies = model(strained, species, batch, n_structures, box @ deform, pairs=pairs)
        grad, dstrain = torch.autograd.grad(energies.sum(), (x, strain))
    return energies.detach(), -grad, dstrain / torch.linalg.det(box).abs()[:, None, None]
