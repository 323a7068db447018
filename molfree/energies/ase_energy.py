"""Bridge to ASE: any ASE calculator as a differentiable :class:`molfree.Energy`."""
from __future__ import annotations

import numpy as np
import torch

from .. import units
from ..energy import Energy
from .engine import engine_energy


class ASEEnergy(Energy):
    """Potential energy from an ASE calculator, differentiable via the calculator's forces.

    Args:
        calculator: any ASE calculator providing ``energy`` and ``forces``.
        atoms: template ``ase.Atoms`` giving species, cell, pbc, charges, magnetic moments
            and any other per-atom data; it is copied and never modified.

    ``forward(positions [B, N, 3] nm, box [B, 3, 3] nm or None)`` returns ``[B]`` kJ/mol.
    Each configuration is evaluated on a fresh copy of the template with positions
    converted nm -> Å; a given box replaces the template's cell (nm -> Å), otherwise the
    template's cell and pbc are used. Energies eV -> kJ/mol, forces eV/Å -> kJ/mol/nm.
    """

    def __init__(self, calculator, atoms):
        super().__init__(n_atoms=len(atoms))
        self.calculator = calculator
        self.atoms = atoms.copy()
        self.atoms.calc = None

    def evaluate(self, positions: np.ndarray, box: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Energies ``[B]`` (kJ/mol) and forces ``[B, N, 3]`` (kJ/mol/nm) as float64 NumPy arrays.

        ``positions [B, N, 3]`` and ``box [B, 3, 3]`` (or None) in nm.
        """
        energies = np.empty(positions.shape[0])
        forces = np.empty(positions.shape)
        for i in range(positions.shape[0]):
            atoms = self.atoms.copy()
            atoms.positions = positions[i] * units.NM_TO_ANGSTROM
            if box is not None:
                atoms.cell = box[i] * units.NM_TO_ANGSTROM
            atoms.calc = self.calculator
            energies[i] = atoms.get_potential_energy() * units.EV_TO_KJ_PER_MOL
            forces[i] = atoms.get_forces() * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM
        return energies, forces

    def energy(self, positions: torch.Tensor, box: torch.Tensor | None) -> torch.Tensor:
        return engine_energy(self.evaluate, positions, box)
