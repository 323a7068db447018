"""Relaxation, symmetry, deduplication and ranking of crystal candidates (eV, Å)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE
from threadpoolctl import threadpool_limits

from .structures import check_cell, to_structure

__all__ = [
    "SYMPREC_LADDER",
    "CountingCalculator",
    "Relaxed",
    "deduplicate",
    "matcher",
    "rank",
    "relax",
    "space_group",
]

#: spglib tolerances (Å), tight to loose.
SYMPREC_LADDER = (1e-3, 1e-2, 5e-2, 1e-1)


@dataclass
class Relaxed:
    """A relaxed candidate: structure, energy per atom (eV), evaluations spent, convergence and symmetry."""

    atoms: Atoms
    energy_per_atom: float
    evaluations: int
    converged: bool
    space_group: int = 1
    symbol: str = "P1"
    info: dict = field(default_factory=dict)

    @property
    def volume_per_atom(self) -> float:
        """Cell volume per atom (Å³)."""
        return self.atoms.get_volume() / len(self.atoms)


class CountingCalculator(Calculator):
    """Wraps a calculator and counts energy evaluations (one per new configuration)."""

    def __init__(self, inner: Calculator):
        super().__init__()
        self.inner = inner
        self.implemented_properties = list(inner.implemented_properties)
        self.count = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=()) -> None:
        super().calculate(atoms, properties, system_changes)
        self.count += 1
        self.inner.calculate(self.atoms, properties, system_changes)
        self.results = dict(self.inner.results)


def relax(atoms: Atoms, calculator: Calculator, fmax: float = 0.01, steps: int = 300, optimizer: str = "fire",
          max_step: float = 0.2) -> Relaxed:
    """Relax positions and cell together (``FrechetCellFilter``) to forces below ``fmax`` (eV/Å).

    ``optimizer`` is ``"fire"`` or ``"bfgs"``; ``max_step`` (Å) caps each step; at most ``steps`` steps.
    Cells that collapse or blow up (see :func:`~molfree.crystals.structures.check_cell`) end the
    relaxation early as not converged. The space group comes from :func:`space_group`.
    """
    atoms = atoms.copy()
    counter = CountingCalculator(calculator)
    atoms.calc = counter
    dyn = {"fire": FIRE, "bfgs": BFGS}[optimizer](FrechetCellFilter(atoms), maxstep=max_step, logfile=None)
    # The filter's 3x3 matrix functions slow down ~10x when BLAS threads compete for busy cores.
    with threadpool_limits(1):
        converged, energy = _run(dyn, atoms, fmax, steps)
    atoms.calc = None
    atoms.wrap()
    number, symbol, ladder = space_group(atoms)
    return Relaxed(atoms, float(energy), counter.count, bool(converged and np.isfinite(energy)), number, symbol,
                   {"symprec_ladder": ladder})


def _run(dyn, atoms: Atoms, fmax: float, steps: int) -> tuple[bool, float]:
    """Run ``dyn`` to convergence; (converged, energy per atom in eV), (False, inf) if the cell degenerates."""
    try:
        for converged in dyn.irun(fmax=fmax, steps=steps):
            check_cell(atoms.cell.array, len(atoms))
            if converged:
                return True, atoms.get_potential_energy() / len(atoms)
    except ValueError:
        return False, np.inf
    return False, atoms.get_potential_energy() / len(atoms)


def space_group(atoms: Atoms, ladder: tuple[float, ...] = SYMPREC_LADDER) -> tuple[int, str, dict[float, int]]:
    """International number and symbol from spglib, scanning ``ladder`` (Å, tight to loose).

    The answer is the group of the first tolerance whose group the next looser tolerance confirms
    (a plateau), else the loosest result; the full ladder comes back too.
    """
    import spglib

    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    results = {}
    for symprec in ladder:
        data = spglib.get_symmetry_dataset(cell, symprec=symprec)
        results[symprec] = (data.number, data.international) if data is not None else (1, "P1")
    values = list(results.values())
    chosen = next((a for a, b in itertools.pairwise(values) if a == b), values[-1])
    return chosen[0], chosen[1], {s: n for s, (n, _) in results.items()}


def matcher(stol: float = 0.5, angle_tol: float = 10.0, ltol: float = 0.3):
    """pymatgen ``StructureMatcher`` with CDVAE's tolerances."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(stol=stol, angle_tol=angle_tol, ltol=ltol)


def deduplicate(candidates: list[Relaxed]) -> list[tuple[Relaxed, int]]:
    """Unique structures (``StructureMatcher``) with their multiplicities, each represented by its
    lowest-energy member; candidates with non-finite energies are dropped."""
    sm = matcher()
    unique: list[list] = []  # [representative, pymatgen structure, count]
    for cand in sorted((c for c in candidates if np.isfinite(c.energy_per_atom)), key=lambda c: c.energy_per_atom):
        structure = to_structure(cand.atoms)
        for entry in unique:
            if sm.fit(entry[1], structure):
                entry[2] += 1
                break
        else:
            unique.append([cand, structure, 1])
    return [(rep, count) for rep, _, count in unique]


def rank(candidates: list[Relaxed]) -> list[Relaxed]:
    """Candidates sorted by energy per atom (eV), lowest first."""
    return sorted(candidates, key=lambda c: c.energy_per_atom)
