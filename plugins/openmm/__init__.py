"""molfree.openmm: OpenMM forces backed by molfree.

``NeuralForce`` puts an equivariant potential into any System; ``molfree.openmm.mlpotential``
registers it with openmm-ml as ``MLPotential('molfree', modelPath=...)`` (needs ``pip install openmmml``).
"""
from .neuralforce import NeuralForce, NeuralForceComputation

__all__ = ["NeuralForce", "NeuralForceComputation"]
