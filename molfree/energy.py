"""The one interface: ``Energy`` maps positions (nm) and an optional box to energies (kJ/mol)."""
from __future__ import annotations

import torch

from . import units
from .checks import as_box, as_positions


class Energy(torch.nn.Module):
    """Base class of everything in molfree that has an energy.

    ``forward(positions, box=None)``:
        positions: ``[B, N, dim]`` or ``[N, dim]`` in nm (``dim`` is 3 except for
            planar toy targets such as DW-4), float32 or float64.
        box: None, ``[3, 3]`` or ``[B, 3, 3]`` periodic box vectors (rows) in nm, in
            OpenMM's reduced form.
        returns: energies ``[B]`` (or a 0-d tensor for ``[N, dim]`` input) in kJ/mol,
            differentiable with respect to positions.

    Subclasses implement :meth:`energy` on validated, batched tensors and set
    ``n_atoms`` (None for any size), ``dim`` and ``periodic``.
    """

    dim: int = 3
    periodic: bool = False

    def __init__(self, n_atoms: int | None = None):
        super().__init__()
        self.n_atoms = n_atoms

    def energy(self, positions: torch.Tensor, box: torch.Tensor | None) -> torch.Tensor:
        """Energies ``[B]`` (kJ/mol) of validated positions ``[B, N, dim]`` (nm) and box ``[B, 3, 3]`` or None."""
        raise NotImplementedError

    def forward(self, positions, box=None) -> torch.Tensor:
        positions, single = as_positions(positions, self.dim, self.n_atoms)
        box = as_box(box, positions.shape[0], positions)
        if box is None and self.periodic:
            raise ValueError(f"{type(self).__name__} is periodic and needs a box")
        energies = self.energy(positions, box)
        return energies[0] if single else energies

    def energy_and_forces(self, positions, box=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies (kJ/mol) and forces ``-dE/dx`` (kJ/mol/nm), same batching as the input."""
        positions, single = as_positions(positions, self.dim, self.n_atoms)
        with torch.enable_grad():
            x = positions.detach().requires_grad_(True)
            energies = self.forward(x, box)
            (grad,) = torch.autograd.grad(energies.sum(), x)
        energies, forces = energies.detach(), -grad
        return (energies[0], forces[0]) if single else (energies, forces)

    def forces(self, positions, box=None) -> torch.Tensor:
        """Forces ``-dE/dx`` in kJ/mol/nm with the shape of ``positions``, by autograd."""
        return self.energy_and_forces(positions, box)[1]

    def reduced(self, positions, box=None, *, temperature: float) -> torch.Tensor:
        """Reduced potential ``E / kT`` (dimensionless) at ``temperature`` (K)."""
        return self.forward(positions, box) / units.kT(temperature)
