"""openmm-ml registration: ``MLPotential('molfree', modelPath='model.molfree')``.

Registered through the ``openmmml.potentials`` entry point (see setup.cfg), so

    >>> potential = MLPotential('molfree', modelPath='model.molfree')
    >>> system = potential.createSystem(topology, device='cpu', precision='double')
    >>> mixed = potential.createMixedSystem(topology, mmSystem, mlAtoms, interpolate=True)

work as for openmm-ml's own models. ``createSystem``/``createMixedSystem`` accept ``device``
(default: CUDA if available), ``precision`` ('single' or 'double'; default single) and
``skin`` (nm) for the :func:`~molfree.openmm.NeuralForce` they add.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

import openmm
import torch

from .neuralforce import NeuralForce

__all__ = ["MolfreePotentialImpl", "MolfreePotentialImplFactory"]

_PRECISIONS = {"single": torch.float32, "double": torch.float64}


class MolfreePotentialImplFactory:
    """Creates :class:`MolfreePotentialImpl` objects for ``MLPotential('molfree', modelPath=...)``.

    An openmm-ml ``MLPotentialImplFactory`` by duck typing (openmm-ml only calls ``createImpl``):
    it is defined before openmmml is imported because importing openmmml loads its entry points,
    this class among them, so ``import molfree.openmm.mlpotential`` first must not be circular.
    """

    def createImpl(self, name: str, modelPath: str | os.PathLike | None = None, **args) -> MolfreePotentialImpl:
        if modelPath is None:
            raise ValueError("MLPotential('molfree') needs modelPath=<a molfree model file>")
        return MolfreePotentialImpl(name, modelPath)


try:
    from openmmml.mlpotential import MLPotentialImpl
except ImportError as exc:
    raise ImportError("molfree.openmm.mlpotential needs openmm-ml: pip install openmmml") from exc


class MolfreePotentialImpl(MLPotentialImpl):
    """A molfree model file as an openmm-ml potential (a short-ranged, cutoff-based model)."""

    def __init__(self, name: str, modelPath: str | os.PathLike):
        self.name = name
        self.modelPath = os.fspath(modelPath)

    def addForces(self, topology: openmm.app.Topology, system: openmm.System, atoms: Iterable[int] | None,
                  forceGroup: int, precision: str = "single", skin: float = 0.05, **args) -> None:
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
        force = NeuralForce(self.modelPath, topology, atoms, device=self._getTorchDevice(args),
                            dtype=_PRECISIONS[precision], skin=skin)
        force.setForceGroup(forceGroup)
        system.addForce(force)

    def getMLLongRange(self) -> bool:
        """The model is local (radial cutoff, no long-range electrostatics)."""
        return False
