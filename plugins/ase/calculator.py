"""``MolfreeCalculator``: a molfree equivariant potential as an ASE calculator (eV, Å)."""
from __future__ import annotations

import os
from typing import ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from molfree import units
from molfree.checks import reduce_box
from molfree.potentials import EquivariantPotential, load
from molfree.potentials.evaluator import PotentialEvaluator

__all__ = ["MolfreeCalculator"]


def reduced_frame(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A rotation ``Q [3, 3]`` and OpenMM's reduced box ``[3, 3]`` for a right-handed ``cell`` (rows).

    ``cell @ Q`` is lower triangular with a positive diagonal, so positions map as ``x @ Q``,
    forces back as ``f @ Q.T`` and stress as ``Q @ s @ Q.T``; the reduced box spans the same lattice.
    """
    q, r = np.linalg.qr(cell.T)
    q = q * np.sign(np.diag(r))
    return q, reduce_box(cell @ q)


class MolfreeCalculator(Calculator):
    """ASE calculator for a molfree :class:`~molfree.potentials.EquivariantPotential`.

    Args:
        model: a model (used in place: moved to ``device`` and, if given, ``dtype``) or a model file path.
        device: torch device.
        dtype: evaluation dtype; None keeps a model's own dtype, float32 for a file.
        skin: neighbor-list skin in Å (the list is reused until an atom moves skin/2).
        **kwargs: passed to ``ase.calculators.calculator.Calculator``.

    Results: ``energy`` and ``free_energy`` (eV), ``forces`` (eV/Å) and, for fully periodic atoms,
    ``stress`` (Voigt, eV/Å³). ``atoms.info["charge"]`` is part of the state (a change invalidates
    results), although the current architecture has no charge input.
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: EquivariantPotential | str | os.PathLike, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, skin: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        if isinstance(model, EquivariantPotential):
            self.model = model if dtype is None else model.to(dtype=dtype)
        else:
            self.model = load(model, device, dtype or torch.float32)
        self.device = torch.device(device)
        self.skin = float(skin)
        self._evaluator: PotentialEvaluator | None = None
        self._numbers: np.ndarray | None = None

    def evaluator(self, numbers: np.ndarray) -> PotentialEvaluator:
        """The :class:`PotentialEvaluator` for these atomic numbers (rebuilt when they change)."""
        if self._evaluator is None or not np.array_equal(self._numbers, numbers):
            self._evaluator = PotentialEvaluator(self.model, numbers, self.device, self.skin * units.ANGSTROM_TO_NM)
            self._numbers = np.array(numbers)
        return self._evaluator

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and self.atoms.info.get("charge", 0) != atoms.info.get("charge", 0):
            changes.append("charge")
        return changes

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        pbc = atoms.pbc
        if pbc.any() and not pbc.all():
            raise ValueError(f"pbc={pbc.tolist()}: MolfreeCalculator supports fully periodic or open systems only")
        evaluator = self.evaluator(atoms.numbers)
        positions = atoms.positions * units.ANGSTROM_TO_NM
        if pbc.all():
            rotation, box = reduced_frame(np.asarray(atoms.cell) * units.ANGSTROM_TO_NM)
            result = evaluator.evaluate(positions @ rotation, box, stress=True)
            forces = result.forces @ rotation.T
            stress = rotation @ result.stress @ rotation.T * units.KJ_PER_MOL_NM3_TO_EV_PER_ANGSTROM3
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
        else:
            result = evaluator.evaluate(positions)
            forces = result.forces
        energy = result.energy * units.KJ_PER_MOL_TO_EV
        self.results["energy"] = self.results["free_energy"] = energy
        self.results["forces"] = forces * units.KJ_PER_MOL_NM_TO_EV_PER_ANGSTROM
