"""``NeuralForce``: a molfree equivariant potential as an OpenMM Force.

The force is an ``openmm.PythonForce`` (every platform) whose computation is a picklable
:class:`NeuralForceComputation`: it carries the model file bytes, so ``XmlSerializer``,
``copy.deepcopy`` of Systems and openmm-ml's interpolation all work. Where openmm-torch's
``PythonTorchForce`` imports and the device is CUDA, that class is used instead so positions
and forces stay on the GPU (not exercised by the test suite: no CUDA build here).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import openmm
import torch
from openmm import unit

from molfree.potentials import EquivariantPotential, load, save
from molfree.potentials.evaluator import PotentialEvaluator, check_periodicity

__all__ = ["NeuralForce", "NeuralForceComputation"]


def _modelBytes(model: EquivariantPotential | str | os.PathLike) -> bytes:
    """The model file bytes of ``model`` (a model or a model-file path), validated by loading."""
    if isinstance(model, EquivariantPotential):
        with tempfile.TemporaryDirectory() as tmp:
            return save(model, Path(tmp) / "model.molfree").read_bytes()
    load(model)  # ValueError for a file of another format, before anything is built on it
    return Path(model).read_bytes()


def _modelFromBytes(data: bytes, device: torch.device, dtype: torch.dtype) -> EquivariantPotential:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.molfree"
        path.write_bytes(data)
        return load(path, device, dtype)


class NeuralForceComputation:
    """The computation of a :func:`NeuralForce`: ``state -> (energy kJ/mol, forces [n, 3] kJ/mol/nm)``.

    Called by ``PythonForce`` with a State (numpy in and out) or by ``PythonTorchForce`` with a
    State and the positions tensor (tensors in and out). Pickles as the model file bytes and
    settings; the model and its neighbor list are rebuilt lazily after unpickling.

    Args:
        modelBytes: a molfree model file's contents.
        atomicNumbers: ``[n]`` atomic numbers of the particles the force acts on.
        periodic: whether to read the box from the State.
        device: torch device.
        dtype: torch dtype of the evaluation.
        skin: neighbor-list skin (nm).
    """

    def __init__(self, modelBytes: bytes, atomicNumbers: Sequence[int], periodic: bool, device: str,
                 dtype: torch.dtype, skin: float):
        self.modelBytes = modelBytes
        self.atomicNumbers = [int(z) for z in atomicNumbers]
        self.periodic = bool(periodic)
        self.device = str(device)
        self.dtype = dtype
        self.skin = float(skin)
        self._evaluator: PotentialEvaluator | None = None

    @property
    def evaluator(self) -> PotentialEvaluator:
        """The :class:`PotentialEvaluator` (built on first use)."""
        if self._evaluator is None:
            model = _modelFromBytes(self.modelBytes, torch.device(self.device), self.dtype)
            check_periodicity(model, self.periodic)
            self._evaluator = PotentialEvaluator(model, self.atomicNumbers, self.device, self.skin)
        return self._evaluator

    def __call__(self, state: openmm.State, positions: torch.Tensor | None = None):
        box = None
        if self.periodic:
            box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        if positions is not None:  # PythonTorchForce (untested here: needs a CUDA openmm-torch)
            cell = None if box is None else torch.as_tensor(np.asarray(box), device=positions.device)
            energy, forces, _ = self.evaluator.evaluate_tensors(positions, cell)
            return energy, forces
        result = self.evaluator.evaluate(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), box)
        return result.energy, result.forces

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_evaluator"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._evaluator = None


def _torchForceClass(device: torch.device):
    """openmm-torch's ``PythonTorchForce`` for CUDA devices where it imports, else None."""
    if device.type != "cuda":
        return None
    try:
        from openmmtorch import PythonTorchForce
    except ImportError:
        return None
    return PythonTorchForce


def NeuralForce(model: EquivariantPotential | str | os.PathLike, topology: openmm.app.Topology,
                atoms: Iterable[int] | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype | None = None, skin: float = 0.05) -> openmm.Force:
    """A molfree potential as an OpenMM Force on all particles of ``topology`` or on ``atoms``.

    Args:
        model: an :class:`~molfree.potentials.EquivariantPotential` or the path of a model file.
        topology: the Topology of the whole System (elements of all particles; periodic iff it has box vectors).
        atoms: particle indices the potential acts on (ML/MM); None for all. The force sees only these
            particles and writes forces only on them.
        device: torch device.
        dtype: evaluation dtype; None keeps a model's own dtype, float32 for a file.
        skin: neighbor-list skin (nm).

    Returns:
        An ``openmm.PythonForce`` (or, on CUDA with openmm-torch, a ``PythonTorchForce``).

    Raises:
        ValueError: unknown model file format, elements the model lacks, a periodic topology
            for a model trained on non-periodic data.
    """
    particles = list(topology.atoms())
    if atoms is not None:
        atoms = [int(a) for a in atoms]
        particles = [particles[a] for a in atoms]
    missing = [p.index for p in particles if p.element is None]
    if missing:
        raise ValueError(f"particles {missing} have no element (virtual sites?); pass atoms= to exclude them")
    numbers = [p.element.atomic_number for p in particles]
    periodic = topology.getPeriodicBoxVectors() is not None
    if dtype is None:
        dtype = next(model.parameters()).dtype if isinstance(model, EquivariantPotential) else torch.float32
    device = torch.device(device)
    computation = NeuralForceComputation(_modelBytes(model), numbers, periodic, str(device), dtype, skin)
    _ = computation.evaluator  # built now so that bad elements or periodicity fail here, not inside a Context
    forceClass = _torchForceClass(device) or openmm.PythonForce
    force = forceClass(computation)
    force.setUsesPeriodicBoundaryConditions(periodic)
    if atoms is not None:
        force.setParticles(atoms)
    force.setName("NeuralForce")
    return force
