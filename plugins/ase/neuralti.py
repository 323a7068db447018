"""``NeuralTICalculator``: a trained neural-TI potential u_θ(x, λ) as an ASE calculator with a ``lam`` setting."""
from __future__ import annotations

from typing import ClassVar

import torch

from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from molfree import units
from molfree.freeenergy.neural_ti import LambdaPotential, check_lambda

__all__ = ["NeuralTICalculator"]


class NeuralTICalculator(Calculator):
    """ASE calculator for k_B T · u_θ(x, λ): ``energy`` (eV) and ``forces`` (eV/Å).

    Args:
        potential: the λ-dependent reduced potential on ``[1, n, 3]`` positions (nm); any box is the one
            its network was built with.
        temperature: K.
        lam: λ in [0, 1]; change it with ``calc.set(lam=...)`` (results are then recomputed).
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces"]
    default_parameters: ClassVar[dict] = {"lam": 1.0}

    def __init__(self, potential: LambdaPotential, temperature: float, lam: float = 1.0, **kwargs):
        check_lambda(lam, torch.zeros((), dtype=torch.float64))
        super().__init__(lam=lam, **kwargs)
        self.potential = potential
        self.kt_ev = units.kT(temperature) * units.KJ_PER_MOL_TO_EV

    def set(self, **kwargs) -> dict:
        if "lam" in kwargs:
            check_lambda(kwargs["lam"], torch.zeros((), dtype=torch.float64))
        changed = super().set(**kwargs)
        if changed:
            self.reset()
        return changed

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        x = torch.as_tensor(self.atoms.positions * units.ANGSTROM_TO_NM, dtype=torch.float64)
        u, force = self.potential.score(x[None], float(self.parameters.lam))
        energy = self.kt_ev * float(u[0])
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": self.kt_ev * force[0].numpy() * units.ANGSTROM_TO_NM}
