"""Crystal structures at the ASE boundary (Å, eV): validation, conversions and validity checks."""
from __future__ import annotations

import itertools
import re
from collections import Counter

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers, chemical_symbols

__all__ = [
    "MIN_DISTANCE",
    "MIN_VOLUME",
    "check_cell",
    "composition_valid",
    "density",
    "min_distance",
    "parse_composition",
    "structure_valid",
    "to_atoms",
    "to_structure",
    "valid",
]

#: Structural validity thresholds (CDVAE): shortest interatomic distance in Å, cell volume in Å³.
MIN_DISTANCE = 0.5
MIN_VOLUME = 0.1

#: Alkali, alkaline-earth, transition and post-transition metals: their mixtures are alloys.
_METALS = frozenset(chemical_symbols[z] for z in
                    (3, 4, 11, 12, 13, 19, 20, 37, 38, 55, 56, *range(21, 31), *range(39, 49), *range(72, 81)))

_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*)")


def parse_composition(formula: str) -> dict[str, int]:
    """Element counts of a formula like ``"NaCl"`` or ``"Cu3Au"``; ValueError on anything else."""
    if not isinstance(formula, str) or not formula.strip():
        raise ValueError(f"composition must be a non-empty formula such as 'NaCl', got {formula!r}")
    text = formula.replace(" ", "")
    tokens = _TOKEN.findall(text)
    if "".join(f"{s}{n}" for s, n in tokens) != text:
        raise ValueError(f"composition {formula!r}: not a formula of element symbols and integer counts")
    counts: Counter[str] = Counter()
    for symbol, count in tokens:
        if symbol not in atomic_numbers or symbol == "X":
            raise ValueError(f"composition {formula!r}: unknown element {symbol!r}")
        n = int(count) if count else 1
        if n < 1:
            raise ValueError(f"composition {formula!r}: element counts must be positive")
        counts[symbol] += n
    return dict(counts)


def check_cell(cell: np.ndarray, n_atoms: int) -> None:
    """ValueError unless ``cell`` (rows, Å) is a right-handed lattice with 0.1 Å³ < volume/atom < 1000 Å³."""
    cell = np.asarray(cell, dtype=float)
    if cell.shape != (3, 3) or not np.all(np.isfinite(cell)):
        raise ValueError(f"cell must be a finite [3, 3] matrix (Å), got shape {cell.shape}")
    volume = float(np.linalg.det(cell))
    if volume <= MIN_VOLUME:
        raise ValueError(f"impossible cell: volume {volume:.4g} Å³ (must be right-handed and > {MIN_VOLUME} Å³)")
    if n_atoms > 0 and volume / n_atoms > 1000.0:
        raise ValueError(f"impossible cell: {volume / n_atoms:.4g} Å³ per atom (> 1000 Å³)")


def to_structure(atoms: Atoms):
    """pymatgen ``Structure`` of periodic ``atoms`` (Å)."""
    from pymatgen.core import Lattice, Structure

    if not atoms.pbc.all():
        raise ValueError("a crystal must be periodic in all three directions")
    check_cell(atoms.cell.array, len(atoms))
    return Structure(Lattice(atoms.cell.array), atoms.get_chemical_symbols(), atoms.get_scaled_positions(),
                     coords_are_cartesian=False)


def to_atoms(structure) -> Atoms:
    """Periodic ASE ``Atoms`` of a pymatgen ``Structure`` (Å)."""
    symbols = [site.specie.symbol for site in structure]
    return Atoms(symbols, cell=structure.lattice.matrix, scaled_positions=structure.frac_coords, pbc=True)


def min_distance(atoms: Atoms) -> float:
    """Shortest distance (Å) between two atoms or periodic images; inf for one atom in a huge cell."""
    from pymatgen.core import Lattice

    lattice = Lattice(atoms.cell.array)
    frac = atoms.get_scaled_positions()
    d = lattice.get_all_distances(frac, frac)
    np.fill_diagonal(d, np.inf)
    # The shortest lattice vector bounds every self-image distance.
    images = [np.linalg.norm(np.array(v) @ atoms.cell.array)
              for v in itertools.product((-1, 0, 1), repeat=3) if any(v)]
    return float(min(d.min(), min(images)))


def density(atoms: Atoms) -> float:
    """Mass density in g/cm³ (Å³ cell, dalton masses)."""
    mass_g = atomic_masses[atoms.numbers].sum() * 1.66053906660e-24
    return float(mass_g / (atoms.get_volume() * 1e-24))


def structure_valid(atoms: Atoms) -> bool:
    """CDVAE structural validity: every distance > 0.5 Å and volume > 0.1 Å³."""
    return bool(atoms.get_volume() > MIN_VOLUME and min_distance(atoms) > MIN_DISTANCE)


def composition_valid(symbols: list[str] | dict[str, int]) -> bool:
    """SMACT validity: some combination of oxidation states is charge neutral and passes the
    electronegativity test; elemental and all-metal (alloy) compositions count as valid, as in CDVAE."""
    from smact import Element
    from smact.screening import pauling_test

    counts = Counter(symbols)
    elements = sorted(counts)
    if len(elements) == 1:
        return True
    gcd = np.gcd.reduce(list(counts.values()))
    stoich = [counts[e] // gcd for e in elements]
    smact_elements = [Element(e) for e in elements]
    if set(elements) <= _METALS:
        return True
    electronegativities = [el.pauling_eneg for el in smact_elements]
    for states in itertools.product(*(el.oxidation_states for el in smact_elements)):
        if sum(q * n for q, n in zip(states, stoich)) != 0:
            continue
        if None in electronegativities or pauling_test(states, electronegativities):
            return True
    return False


def valid(atoms: Atoms) -> bool:
    """Structurally and compositionally valid (CDVAE's overall validity)."""
    return structure_valid(atoms) and composition_valid(atoms.get_chemical_symbols())
