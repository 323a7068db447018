"""molfree: learned samplers, potentials and free-energy estimators for OpenMM and ASE.

The core is engine independent; ``molfree.openmm`` and ``molfree.ase`` are plugins
that import it (the core never imports them). Heavy submodules load on first use.
"""
from __future__ import annotations

import importlib

from . import units
from .energy import Energy

__version__ = "0.1.0"

_LAZY = {
    "HarmonicEnergy": "molfree.energies.analytic",
    "DoubleWellEnergy": "molfree.energies.analytic",
    "LennardJonesClusterEnergy": "molfree.energies.analytic",
    "GaussianMixtureEnergy": "molfree.energies.analytic",
    "OpenMMEnergy": "molfree.energies.openmm_energy",
    "ASEEnergy": "molfree.energies.ase_energy",
}

__all__ = ["Energy", "units", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in {"neighbors", "systems", "energies", "checks", "cli"}:
        return importlib.import_module(f"molfree.{name}")
    raise AttributeError(f"module 'molfree' has no attribute {name!r}")
