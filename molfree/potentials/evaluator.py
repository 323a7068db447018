"""One configuration at a time through an :class:`EquivariantPotential`, with a reused neighbor list.

This is the piece shared by the OpenMM and ASE plugins: numpy in, numpy out, internal units
(positions and box nm, energy kJ/mol, forces kJ/mol/nm, stress kJ/mol/nm³). The neighbor list
is built at ``cutoff + skin`` and kept until an atom has moved more than ``skin / 2`` or the
box changed; in between, only the pair vectors are recomputed from the current positions. Pairs
beyond the cutoff are harmless: the model's radial envelope is exactly zero for r ≥ cutoff.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..checks import as_box, as_positions, check_cutoff
from ..neighbors import neighbor_list
from .energy import derivatives, species_indices


class Evaluation(NamedTuple):
    """Result of :meth:`PotentialEvaluator.evaluate`.

    Attributes:
        energy: kJ/mol.
        forces: ``[N, 3]`` kJ/mol/nm.
        stress: ``[3, 3]`` kJ/mol/nm³ ((1/V) ∂E/∂ε, ASE's sign), or None if not requested.
    """

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None


def check_periodicity(model, periodic: bool) -> None:
    """Raise ``ValueError`` if ``periodic`` and ``model`` was trained on non-periodic data only."""
    if periodic and model.periodic_data is False:
        raise ValueError("this model was trained without periodic data and cannot evaluate a periodic system")


class PotentialEvaluator:
    """Energy, forces and optionally stress of one configuration of fixed atoms.

    Args:
        model: an :class:`~molfree.potentials.EquivariantPotential`; moved to ``device`` (in place),
            evaluated in the dtype of its parameters.
        atomic_numbers: ``[N]`` atomic numbers or symbols; ValueError for elements the model lacks.
        device: torch device of the evaluation.
        skin: neighbor-list skin (nm).

    Attributes:
        n_builds: how many times the neighbor list has been built.
    """

    def __init__(self, model, atomic_numbers, device: str | torch.device = "cpu", skin: float = 0.05):
        if not skin >= 0:
            raise ValueError(f"skin must be a non-negative distance in nm, got {skin!r}")
        self.model = model.to(device)
        self.device = torch.device(device)
        self.dtype = next(model.parameters()).dtype
        self.species = species_indices(model, atomic_numbers).to(self.device)
        self.n_atoms = len(self.species)
        self.skin = float(skin)
        self.list_cutoff = check_cutoff(model.cutoff + self.skin)
        self.n_builds = 0
        self._reference: torch.Tensor | None = None  # positions [N, 3] at the last build (lattice-adjusted)
        self._box: torch.Tensor | None = None  # box [3, 3] at the last build
        self._pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def evaluate(self, positions: np.ndarray, box: np.ndarray | None = None, stress: bool = False) -> Evaluation:
        """Evaluate positions ``[N, 3]`` nm in the reduced box ``[3, 3]`` nm (rows a, b, c) or None (open)."""
        x = torch.as_tensor(np.asarray(positions, dtype=np.float64))
        cell = None if box is None else torch.as_tensor(np.asarray(box, dtype=np.float64))
        energy, forces, virial = self.evaluate_tensors(x, cell, stress)
        return Evaluation(float(energy), forces.cpu().double().numpy(),
                          None if virial is None else virial.cpu().double().numpy())

    def evaluate_tensors(self, positions: torch.Tensor, box: torch.Tensor | None = None, stress: bool = False):
        """As :meth:`evaluate` on tensors (any device/dtype); returns ``(energy 0-d, forces [N, 3], stress | None)``
        as tensors on ``self.device`` in the model's dtype."""
        x, _ = as_positions(positions.to(self.device, self.dtype), 3, self.n_atoms)
        x = x[0]
        check_periodicity(self.model, box is not None)
        cell = as_box(box, 1, x)
        if stress and cell is None:
            raise ValueError("stress needs a periodic box")
        pairs = self._current_pairs(x, None if cell is None else cell[0])
        batch = torch.zeros(self.n_atoms, dtype=torch.long, device=self.device)
        energy, forces, virial = derivatives(self.model, x, self.species, batch, 1, cell, pairs, stress)
        return energy[0], forces, None if virial is None else virial[0]

    def _current_pairs(self, x: torch.Tensor, box: torch.Tensor | None):
        """The full pair list ``(receiver, sender, shifts)`` valid for ``x``: reused, lattice-adjusted or rebuilt."""
        if self._pairs is not None and self._same_box(box):
            moved = x - self._reference
            jumps = None
            if box is not None:  # atoms wrapped into another image: move the reference and fix the shifts
                jumps = torch.round(moved @ torch.linalg.inv(box))
                moved = moved - jumps @ box
            if float(moved.norm(dim=-1).max()) <= 0.5 * self.skin:
                if jumps is not None and bool(jumps.any()):
                    receiver, sender, shifts = self._pairs
                    self._reference = self._reference + jumps @ box
                    jumps = jumps.long()
                    self._pairs = (receiver, sender, shifts + jumps[receiver] - jumps[sender])
                return self._pairs
        nl = neighbor_list(x.detach(), self.list_cutoff, box, half=False)
        self._pairs = (nl.i, nl.j, nl.shifts)
        self._reference = x.detach().clone()
        self._box = None if box is None else box.clone()
        self.n_builds += 1
        return self._pairs

    def _same_box(self, box: torch.Tensor | None) -> bool:
        if box is None or self._box is None:
            return box is None and self._box is None
        return bool(torch.equal(box, self._box))
