"""Named ASE calculators for crystals (eV, Å): pair potentials on molfree's neighbor list, EMT,
Tersoff (Si, C, Ge), alkali-halide Born–Mayer, CHGNet and molfree model files.

``make_calculator(name, symbols)`` is the single entry point; ``name`` is one of :data:`NAMES`
or the path of a molfree model file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import atomic_numbers, covalent_radii
from ase.stress import full_3x3_to_voigt_6_stress
from scipy.special import erfc

from .. import units
from ..neighbors import neighbor_list

__all__ = [
    "NAMES",
    "ROCK_SALT_A0",
    "BornMayer",
    "DSFCoulomb",
    "LennardJones",
    "PairCalculator",
    "PairTerm",
    "born_mayer",
    "lennard_jones",
    "make_calculator",
    "tersoff",
]

NAMES = ("lj", "emt", "tersoff", "born-mayer", "chgnet")

#: Coulomb constant e²/(4πε0) in eV Å, from molfree's kJ nm/(mol e²) value.
COULOMB_EV_ANGSTROM = units.ONE_4PI_EPS0 * units.KJ_PER_MOL_TO_EV * units.NM_TO_ANGSTROM


class PairTerm(Protocol):
    """One pair-potential term: pair energies plus a volume-dependent background."""

    def pairs(self, zi: np.ndarray, zj: np.ndarray, r: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
        """Energies (eV) and dE/dr (eV/Å) of pairs of atomic numbers at distances ``r`` < ``cutoff`` (Å)."""

    def background(self, numbers: np.ndarray, volume: float, cutoff: float) -> tuple[float, float]:
        """Energy (eV) not in the pair sum and its volume derivative dE/dV (eV/Å³)."""


@dataclass
class LennardJones:
    """4ε[(σ/r)¹² − (σ/r)⁶] with Lorentz–Berthelot mixing and the analytic tail beyond the cutoff.

    Args:
        params: element symbol -> (ε in eV, σ in Å).
        tail: add the uniform-density tail correction (2π/V) Σ_ij 4ε[σ¹²/(9r_c⁹) − σ⁶/(3r_c³)].
    """

    params: dict[str, tuple[float, float]]
    tail: bool = True

    def _mixed(self, zi: np.ndarray, zj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        table = np.zeros((119, 2))
        for symbol, (eps, sigma) in self.params.items():
            table[atomic_numbers[symbol]] = eps, sigma
        return np.sqrt(table[zi, 0] * table[zj, 0]), 0.5 * (table[zi, 1] + table[zj, 1])

    def pairs(self, zi, zj, r, cutoff):
        eps, sigma = self._mixed(zi, zj)
        s6 = (sigma / r) ** 6
        return 4 * eps * (s6 * s6 - s6), 4 * eps * (-12 * s6 * s6 + 6 * s6) / r

    def background(self, numbers, volume, cutoff):
        if not self.tail:
            return 0.0, 0.0
        zi, zj = np.meshgrid(numbers, numbers)
        eps, sigma = self._mixed(zi.ravel(), zj.ravel())
        energy = 2 * math.pi / volume * np.sum(4 * eps * (sigma**12 / (9 * cutoff**9) - sigma**6 / (3 * cutoff**3)))
        return float(energy), float(-energy / volume)


@dataclass
class BornMayer:
    """Short-range repulsion A exp(−r/ρ) between the element pairs listed (A in eV, ρ in Å)."""

    params: dict[tuple[str, str], tuple[float, float]]

    def pairs(self, zi, zj, r, cutoff):
        a = np.zeros_like(r)
        rho = np.ones_like(r)
        for (s1, s2), (amp, length) in self.params.items():
            z1, z2 = atomic_numbers[s1], atomic_numbers[s2]
            mask = ((zi == z1) & (zj == z2)) | ((zi == z2) & (zj == z1))
            a[mask], rho[mask] = amp, length
        energy = a * np.exp(-r / rho)
        return energy, -energy / rho

    def background(self, numbers, volume, cutoff):
        return 0.0, 0.0


@dataclass
class DSFCoulomb:
    """Damped shifted-force Coulomb (Fennell & Gezelter 2006): energy and force go to zero at the
    cutoff and the self term makes lattice sums converge to the Ewald (Madelung) values.

    Args:
        charges: element symbol -> charge (e).
        alpha: damping parameter (1/Å).
    """

    charges: dict[str, float]
    alpha: float = 0.2

    def _q(self, z: np.ndarray) -> np.ndarray:
        table = np.zeros(119)
        for symbol, q in self.charges.items():
            table[atomic_numbers[symbol]] = q
        return table[z]

    def pairs(self, zi, zj, r, cutoff):
        rc, a = cutoff, self.alpha
        qq = COULOMB_EV_ANGSTROM * self._q(zi) * self._q(zj)
        erfc_rc = erfc(a * rc) / rc
        force_rc = erfc_rc / rc + 2 * a / math.sqrt(math.pi) * math.exp(-a * a * rc * rc) / rc
        energy = qq * (erfc(a * r) / r - erfc_rc + force_rc * (r - rc))
        de_dr = qq * (-erfc(a * r) / r**2 - 2 * a / math.sqrt(math.pi) * np.exp(-a * a * r * r) / r + force_rc)
        return energy, de_dr

    def background(self, numbers, volume, cutoff):
        rc = cutoff
        q2 = float(np.sum(self._q(numbers) ** 2))
        return -COULOMB_EV_ANGSTROM * q2 * (erfc(self.alpha * rc) / (2 * rc) + self.alpha / math.sqrt(math.pi)), 0.0


class PairCalculator(Calculator):
    """ASE calculator summing :class:`PairTerm` s over molfree's periodic neighbor list.

    Args:
        terms: pair terms to add up.
        cutoff: pair cutoff (Å); images beyond the box are included, so it may exceed the cell.
    Results: ``energy``/``free_energy`` (eV), ``forces`` (eV/Å), ``stress`` (Voigt, eV/Å³).
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, terms: list[PairTerm], cutoff: float, **kwargs):
        super().__init__(**kwargs)
        self.terms = list(terms)
        self.cutoff = float(cutoff)

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes) -> None:
        from molfree.ase.calculator import reduced_frame

        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if not atoms.pbc.all():
            raise ValueError("PairCalculator needs a fully periodic crystal")
        q, box = reduced_frame(atoms.cell.array)
        pos = atoms.positions @ q
        nl = neighbor_list(torch.from_numpy(pos * units.ANGSTROM_TO_NM),
                           self.cutoff * units.ANGSTROM_TO_NM, box=torch.from_numpy(box * units.ANGSTROM_TO_NM))
        i, j, shifts = nl.i.numpy(), nl.j.numpy(), nl.shifts.numpy().astype(float)
        vec = (pos[j] - pos[i] + shifts @ box) @ q.T
        r = np.linalg.norm(vec, axis=1)
        volume = atoms.get_volume()
        energy, virial, de_dv = 0.0, np.zeros((3, 3)), 0.0
        forces = np.zeros((len(atoms), 3))
        for term in self.terms:
            e_bg, dv = term.background(atoms.numbers, volume, self.cutoff)
            e, de_dr = term.pairs(atoms.numbers[i], atoms.numbers[j], r, self.cutoff)
            energy += e_bg + float(e.sum())
            de_dv += dv
            fvec = (de_dr / r)[:, None] * vec
            np.add.at(forces, i, fvec)
            np.add.at(forces, j, -fvec)
            virial += fvec.T @ vec
        stress = virial / volume + de_dv * np.eye(3)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces,
                        "stress": full_3x3_to_voigt_6_stress(stress)}


#: LJ (ε eV, σ Å) of the rare gases (Bernardes 1958 / Pollack 1964 fits).
LJ_PARAMS = {"Ne": (0.00312, 2.74), "Ar": (0.0104, 3.40), "Kr": (0.0140, 3.65), "Xe": (0.0200, 3.98)}


def lennard_jones(symbols: list[str], params: dict[str, tuple[float, float]] | None = None,
                  cutoff_sigma: float = 5.0) -> PairCalculator:
    """LJ crystal calculator. ``params`` maps element -> (ε eV, σ Å), defaulting to :data:`LJ_PARAMS`;
    other elements get argon's ε and σ = 2^(5/6) × covalent radius (so r_min is twice the radius).
    The cutoff is ``cutoff_sigma`` × the largest σ, with the tail correction."""
    params = {**LJ_PARAMS, **(params or {})}
    params = {s: params[s] for s in set(symbols) & set(params)}
    for symbol in set(symbols) - set(params):
        params[symbol] = (0.0104, 2 ** (5 / 6) * covalent_radii[atomic_numbers[symbol]])
    sigma_max = max(sigma for _, sigma in params.values())
    return PairCalculator([LennardJones(params)], cutoff=cutoff_sigma * sigma_max)


#: Born–Mayer ρ (Å) of Tosi & Fumi for the alkali halides.
_BORN_MAYER_RHO = 0.317
#: Experimental rock-salt lattice constants (Å) of alkali halides.
ROCK_SALT_A0 = {("Li", "F"): 4.03, ("Li", "Cl"): 5.13, ("Na", "F"): 4.63, ("Na", "Cl"): 5.64, ("Na", "Br"): 5.97,
                ("K", "F"): 5.35, ("K", "Cl"): 6.29, ("K", "Br"): 6.60}


def born_mayer(cation: str = "Na", anion: str = "Cl", cutoff: float = 10.0) -> PairCalculator:
    """Rigid-ion alkali halide: formal charges ±1 e (DSF Coulomb) + cation–anion Born–Mayer repulsion
    with ρ = 0.317 Å and A fixed by the nearest-neighbour equilibrium of rock salt at the
    experimental lattice constant (:data:`ROCK_SALT_A0`, Madelung 1.7476)."""
    if (cation, anion) not in ROCK_SALT_A0:
        raise ValueError(f"born-mayer: parameters for {sorted(''.join(p) for p in ROCK_SALT_A0)} only, "
                         f"not {cation}{anion}")
    r0 = ROCK_SALT_A0[cation, anion] / 2
    amplitude = 1.747565 * COULOMB_EV_ANGSTROM * _BORN_MAYER_RHO * math.exp(r0 / _BORN_MAYER_RHO) / (6 * r0**2)
    return PairCalculator([DSFCoulomb({cation: 1.0, anion: -1.0}),
                           BornMayer({(cation, anion): (amplitude, _BORN_MAYER_RHO)})], cutoff=cutoff)


#: Tersoff's parameters in ASE's TersoffParameters order: Si(B), PRB 37, 6991 (1988); C and Ge,
#: PRB 39, 5566 (1989) (R and D are the midpoint and half-width of Tersoff's R..S cutoff).
_TERSOFF = {
    "Si": {"m": 3.0, "gamma": 1.0, "lambda3": 0.0, "c": 100390.0, "d": 16.217, "h": -0.59825, "n": 0.78734,
           "beta": 1.1e-6, "lambda2": 1.73222, "B": 471.18, "R": 2.85, "D": 0.15, "lambda1": 2.4799, "A": 1830.8},
    "C": {"m": 3.0, "gamma": 1.0, "lambda3": 0.0, "c": 38049.0, "d": 4.3484, "h": -0.57058, "n": 0.72751,
          "beta": 1.5724e-7, "lambda2": 2.2119, "B": 346.74, "R": 1.95, "D": 0.15, "lambda1": 3.4879, "A": 1393.6},
    "Ge": {"m": 3.0, "gamma": 1.0, "lambda3": 0.0, "c": 106430.0, "d": 15.652, "h": -0.43884, "n": 0.75627,
           "beta": 9.0166e-7, "lambda2": 1.7047, "B": 419.23, "R": 2.95, "D": 0.15, "lambda1": 2.4451, "A": 1769.0},
}


def tersoff(element: str = "Si") -> Calculator:
    """ASE's native Tersoff calculator (ase >= 3.25) for one of Si, C, Ge (no mixtures)."""
    from ase.calculators.tersoff import Tersoff, TersoffParameters

    if element not in _TERSOFF:
        raise ValueError(f"tersoff: parameters for one of {sorted(_TERSOFF)} only, got {element!r}")
    return Tersoff({(element, element, element): TersoffParameters(**_TERSOFF[element])})


def make_calculator(name: str, symbols: list[str]) -> Calculator:
    """A fresh calculator for a crystal of ``symbols``: ``lj``, ``emt``, ``tersoff`` (Si, C or Ge),
    ``born-mayer`` (alkali halides of :data:`ROCK_SALT_A0`), ``chgnet`` or a molfree model file path."""
    elements = set(symbols)
    if name == "lj":
        return lennard_jones(symbols)
    if name == "emt":
        from ase.calculators.emt import EMT, parameters

        if not elements <= set(parameters):
            raise ValueError(f"emt covers {sorted(parameters)}, not {sorted(elements - set(parameters))}")
        return EMT()
    if name == "tersoff":
        if len(elements) != 1:
            raise ValueError(f"tersoff: one element (Si, C or Ge) only, got {sorted(elements)}")
        return tersoff(elements.pop())
    if name == "born-mayer":
        ions = sorted(elements, key=lambda s: atomic_numbers[s] in (9, 17, 35))
        if len(ions) != 2:
            raise ValueError(f"born-mayer: one alkali and one halide, got {sorted(elements)}")
        return born_mayer(*ions)
    if name == "chgnet":
        from chgnet.model import CHGNetCalculator

        return CHGNetCalculator(use_device="cpu", check_cuda_mem=False)
    if Path(name).is_file():
        from molfree.ase import MolfreeCalculator

        return MolfreeCalculator(name)
    raise ValueError(f"unknown calculator {name!r}: use one of {NAMES} or a molfree model file")
