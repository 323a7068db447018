"""molfree.openmm: OpenMM forces and moves backed by molfree.

``NeuralForce`` puts an equivariant potential into any System; ``molfree.openmm.mlpotential``
registers it with openmm-ml as ``MLPotential('molfree', modelPath=...)`` (needs ``pip install openmmml``);
``GeneratorMove`` adds exact Metropolis–Hastings independence moves from a generator to a Simulation.
"""
from .generatormove import GeneratorMove
from .neuralforce import NeuralForce, NeuralForceComputation

__all__ = ["GeneratorMove", "NeuralForce", "NeuralForceComputation"]
