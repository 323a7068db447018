"""molfree.ase: ASE calculators backed by molfree."""
from .calculator import MolfreeCalculator

__all__ = ["MolfreeCalculator"]
