"""AIRSS-style random structure search: random symmetric (pyxtal) or random-lattice (P1) starts,
each relaxed; relaxations and energy evaluations are counted (eV, Å)."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.data import atomic_numbers, covalent_radii

from .relax import Relaxed, relax
from .structures import check_cell, parse_composition

__all__ = [
    "SearchResult",
    "formula_units",
    "random_candidate",
    "random_lattice",
    "random_search",
    "random_symmetric",
    "relax_starts",
]

#: Target volume of a random start, in units of the summed covalent-sphere volumes.
VOLUME_FACTOR = 2.0


@dataclass
class SearchResult:
    """All relaxed candidates of a search, in order, with the relaxations and evaluations spent."""

    candidates: list[Relaxed] = field(default_factory=list)

    @property
    def relaxations(self) -> int:
        return len(self.candidates)

    @property
    def evaluations(self) -> int:
        return sum(c.evaluations for c in self.candidates)


def formula_units(counts: dict[str, int], max_atoms: int) -> list[int]:
    """Numbers of formula units Z with Z × (atoms per formula) ≤ ``max_atoms``; ValueError if none."""
    per_formula = sum(counts.values())
    if per_formula > max_atoms:
        raise ValueError(f"one formula unit has {per_formula} atoms, more than max_atoms={max_atoms}")
    return list(range(1, max_atoms // per_formula + 1))


def _target_volume(symbols: list[str]) -> float:
    radii = covalent_radii[[atomic_numbers[s] for s in symbols]]
    return VOLUME_FACTOR * float(np.sum(4 * np.pi / 3 * radii**3))


def random_symmetric(counts: dict[str, int], z: int, rng: np.random.Generator, tries: int = 20) -> Atoms | None:
    """A pyxtal random crystal in a random space group (2–230) with ``z`` formula units, or None
    when no group tried is compatible with the Wyckoff multiplicities."""
    from pyxtal import pyxtal

    species = list(counts)
    num_ions = [counts[s] * z for s in species]
    for _ in range(tries):
        crystal = pyxtal()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                crystal.from_random(3, int(rng.integers(2, 231)), species, num_ions,
                                    random_state=int(rng.integers(2**31)))
            except Exception:  # noqa: BLE001, S112 - pyxtal signals incompatible groups with assorted exceptions
                continue
        if crystal.valid:
            atoms = crystal.to_ase()
            atoms.pbc = True
            return atoms
    return None


def random_lattice(counts: dict[str, int], z: int, rng: np.random.Generator, tries: int = 200) -> Atoms:
    """AIRSS start in P1: random cell (angles 60–120°, covalent-volume target) and uniform fractional
    positions, rejecting atoms closer than 0.7 × the sum of covalent radii (relaxed after ``tries``)."""
    symbols = [s for s, n in counts.items() for _ in range(n * z)]
    rng.shuffle(symbols)
    lengths = rng.uniform(0.7, 1.3, 3)
    angles = np.radians(rng.uniform(60, 120, 3))
    cos_a, cos_b, cos_g = np.cos(angles)
    while 1 - cos_a**2 - cos_b**2 - cos_g**2 + 2 * cos_a * cos_b * cos_g <= 0.1:
        angles = np.radians(rng.uniform(60, 120, 3))
        cos_a, cos_b, cos_g = np.cos(angles)
    atoms = Atoms(symbols, cell=np.concatenate([lengths, np.degrees(angles)]), pbc=True)
    atoms.set_cell(atoms.cell * (_target_volume(symbols) / atoms.get_volume()) ** (1 / 3))
    check_cell(atoms.cell.array, len(atoms))
    radii = covalent_radii[atoms.numbers]
    frac = np.zeros((len(atoms), 3))
    for k in range(len(atoms)):
        for _ in range(tries):
            frac[k] = rng.random(3)
            atoms.set_scaled_positions(frac)
            if k == 0 or np.all(atoms.get_distances(k, range(k), mic=True) > 0.7 * (radii[k] + radii[:k])):
                break
    return atoms


def random_candidate(composition: str | dict[str, int], index: int, seed: int = 0, max_atoms: int = 8,
                     symmetric_fraction: float = 0.5) -> Atoms:
    """The ``index``-th random start of a search (deterministic in ``seed`` and ``index``): a random
    number of formula units, then pyxtal symmetric with probability ``symmetric_fraction``, else P1."""
    counts = parse_composition(composition) if isinstance(composition, str) else dict(composition)
    rng = np.random.default_rng([seed, index])
    z = int(rng.choice(formula_units(counts, max_atoms)))
    atoms = random_symmetric(counts, z, rng) if rng.random() < symmetric_fraction else None
    return atoms if atoms is not None else random_lattice(counts, z, rng)


def relax_starts(starts: Iterable[Atoms], calculator: Calculator, fmax: float = 0.01, steps: int = 300,
                 stop: Callable[[Relaxed], bool] | None = None) -> SearchResult:
    """Relax ``starts`` in order (from any generator); stop early once ``stop(candidate)`` is true."""
    result = SearchResult()
    for start in starts:
        result.candidates.append(relax(start, calculator, fmax=fmax, steps=steps))
        if stop is not None and stop(result.candidates[-1]):
            break
    return result


def random_search(composition: str, calculator: Calculator, n: int, seed: int = 0, max_atoms: int = 8,
                  fmax: float = 0.01, steps: int = 300,
                  stop: Callable[[Relaxed], bool] | None = None) -> SearchResult:
    """Relax ``n`` random starts of ``composition``; stop early once ``stop(candidate)`` is true."""
    starts = (random_candidate(composition, index, seed, max_atoms) for index in range(n))
    return relax_starts(starts, calculator, fmax=fmax, steps=steps, stop=stop)
