"""``NeuralTIForce``: a trained neural-TI potential u_θ(x, λ) as an OpenMM force with a ``lambda`` parameter.

The force is an ``openmm.PythonForce`` whose global parameter ``lambda`` (set with
``Context.setParameter("lambda", value)``) is the λ of u_θ; energies are kT·u_θ in kJ/mol. The
computation holds the potential object itself, so such Systems are not XML-serializable.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

import openmm
from molfree import units
from molfree.freeenergy.neural_ti import LambdaPotential
from openmm import unit

__all__ = ["NeuralTIComputation", "NeuralTIForce"]


class NeuralTIComputation:
    """``state -> (energy kJ/mol, forces [n, 3] kJ/mol/nm)`` of u_θ at the State's ``lambda``.

    Args:
        potential: the λ-dependent reduced potential, acting on ``[1, n, 3]`` positions (nm).
        temperature: K; energies are k_B T · u_θ.
    """

    def __init__(self, potential: LambdaPotential, temperature: float):
        self.potential = potential
        self.kt = units.kT(temperature)

    def __call__(self, state: openmm.State) -> tuple[float, np.ndarray]:
        lam = state.getParameters()["lambda"]
        x = torch.as_tensor(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=torch.float64)
        u, force = self.potential.score(x[None], lam)
        return self.kt * float(u[0]), self.kt * force[0].numpy()


def NeuralTIForce(potential: LambdaPotential, temperature: float, lam: float = 1.0,
                  atoms: Iterable[int] | None = None, periodic: bool = False) -> openmm.Force:
    """u_θ as an ``openmm.PythonForce`` with global parameter ``lambda`` (default ``lam``) on ``atoms`` (None: all)."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"λ must lie in [0, 1], got {lam}")
    force = openmm.PythonForce(NeuralTIComputation(potential, temperature), {"lambda": float(lam)})
    force.setUsesPeriodicBoundaryConditions(periodic)
    if atoms is not None:
        force.setParticles([int(a) for a in atoms])
    force.setName("NeuralTIForce")
    return force
