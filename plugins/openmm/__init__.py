"""molfree.openmm: OpenMM forces and moves backed by molfree.

``NeuralForce`` puts an equivariant potential into any System; ``molfree.openmm.mlpotential``
registers it with openmm-ml as ``MLPotential('molfree', modelPath=...)`` (needs ``pip install openmmml``);
``NeuralTIForce`` is a trained neural-TI potential with ``lambda`` as a Context parameter;
``GeneratorMove`` adds exact Metropolis–Hastings independence moves from a generator to a Simulation.
"""
from .generatormove import GeneratorMove
from .neuralforce import NeuralForce, NeuralForceComputation
from .neuralti import NeuralTIComputation, NeuralTIForce

__all__ = ["GeneratorMove", "NeuralForce", "NeuralForceComputation", "NeuralTIComputation", "NeuralTIForce"]
