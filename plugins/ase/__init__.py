"""molfree.ase: ASE calculators backed by molfree, and generated configurations as ``Atoms``."""
from .calculator import MolfreeCalculator
from .generated import generated_atoms
from .neuralti import NeuralTICalculator

__all__ = ["MolfreeCalculator", "NeuralTICalculator", "generated_atoms"]
