"""molfree.ase: ASE calculators backed by molfree, and generated configurations as ``Atoms``."""
from .calculator import MolfreeCalculator
from .generated import generated_atoms

__all__ = ["MolfreeCalculator", "generated_atoms"]
