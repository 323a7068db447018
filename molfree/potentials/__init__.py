"""Equivariant neural potentials: model, model files, and the bound :class:`molfree.Energy`."""
from .energy import PotentialEnergy
from .model import EquivariantPotential
from .serialization import load, read_header, save

__all__ = ["EquivariantPotential", "PotentialEnergy", "load", "read_header", "save"]
