"""Training data for the equivariant potential: extended-XYZ files, an in-memory dataset, batches.

Files follow ASE's conventions: extended XYZ with positions and cell in Å, energies in eV
(``energy=`` in the comment line) and forces in eV/Å (the ``forces`` column), read and written
with ``ase.io``. A :class:`Dataset` holds molfree's units: positions and boxes in nm, energies
in kJ/mol, forces in kJ/mol/nm; conversion happens only in :func:`to_dataset` and
:func:`labelled_atoms` (through :mod:`molfree.units`).
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import units
from ..io import atomic_write_text


def read_xyz(path: str | os.PathLike) -> list:
    """All frames of an extended-XYZ file as ``ase.Atoms`` (Å, eV); FileNotFoundError if missing."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    frames = ase.io.read(path, index=":", format="extxyz")
    if not frames:
        raise ValueError(f"{path} holds no structures")
    return frames


def xyz_text(frames: list) -> str:
    """Extended-XYZ text of ``frames`` (``ase.Atoms``; calculator results become energy/forces)."""
    import ase.io

    buffer = io.StringIO()
    ase.io.write(buffer, frames, format="extxyz")
    return buffer.getvalue()


def write_xyz(path: str | os.PathLike, frames: list) -> Path:
    """Write ``frames`` to ``path`` as extended XYZ, atomically."""
    return atomic_write_text(path, xyz_text(frames))


def make_atoms(symbols: list[str], positions: np.ndarray, box: np.ndarray | None = None, **info):
    """``ase.Atoms`` from ``positions [N, 3]`` and ``box [3, 3]`` (rows) in nm; ``info`` goes to ``atoms.info``."""
    import ase

    atoms = ase.Atoms(symbols, positions=np.asarray(positions) * units.NM_TO_ANGSTROM,
                      cell=None if box is None else np.asarray(box) * units.NM_TO_ANGSTROM, pbc=box is not None)
    atoms.info.update(info)
    return atoms


def atoms_box(atoms) -> np.ndarray | None:
    """Box ``[3, 3]`` (nm) of fully periodic ``atoms``, None for open ones; ValueError for partial pbc."""
    if not atoms.pbc.any():
        return None
    if not atoms.pbc.all():
        raise ValueError(f"partially periodic structures (pbc={atoms.pbc.tolist()}) are not supported")
    return np.asarray(atoms.cell[:]) * units.ANGSTROM_TO_NM


def labelled_atoms(atoms, energy: float, forces: np.ndarray, **info):
    """A copy of ``atoms`` carrying ``energy`` (kJ/mol) and ``forces [N, 3]`` (kJ/mol/nm) in ASE units, and ``info``."""
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = atoms.copy()
    atoms.info.update(info)
    atoms.calc = SinglePointCalculator(atoms, energy=energy * units.KJ_PER_MOL_TO_EV,
                                       forces=np.asarray(forces) * units.KJ_PER_MOL_NM_TO_EV_PER_ANGSTROM)
    return atoms


@dataclass
class Dataset:
    """Structures of varying size stored flat: ``M`` atoms in ``S`` structures.

    Attributes:
        positions: ``[M, 3]`` nm, structures contiguous.
        numbers: ``[M]`` atomic numbers.
        counts: ``[S]`` atoms per structure.
        energies: ``[S]`` kJ/mol, or None for unlabelled data.
        forces: ``[M, 3]`` kJ/mol/nm, or None.
        boxes: ``[S, 3, 3]`` nm (rows a, b, c) when periodic, else None.
    """

    positions: np.ndarray
    numbers: np.ndarray
    counts: np.ndarray
    energies: np.ndarray | None = None
    forces: np.ndarray | None = None
    boxes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def offsets(self) -> np.ndarray:
        """``[S + 1]`` start of each structure in the flat arrays (last entry ``M``)."""
        return np.concatenate([[0], np.cumsum(self.counts)])

    @property
    def labelled(self) -> bool:
        return self.energies is not None and self.forces is not None

    @property
    def periodic(self) -> bool:
        return self.boxes is not None

    def elements(self) -> list[str]:
        """Chemical symbols present, ordered by atomic number."""
        from ase.data import chemical_symbols

        return [chemical_symbols[z] for z in np.unique(self.numbers)]

    def species(self, elements: list[str]) -> np.ndarray:
        """``[M]`` indices into ``elements``; ValueError naming elements the list lacks."""
        from ase.data import atomic_numbers

        missing = sorted(set(self.elements()) - set(elements))
        if missing:
            raise ValueError(f"the data contain elements {missing} that the model (elements {list(elements)}) lacks")
        lookup = np.full(int(self.numbers.max()) + 1, -1)
        for k, symbol in enumerate(elements):
            if atomic_numbers[symbol] < len(lookup):
                lookup[atomic_numbers[symbol]] = k
        return lookup[self.numbers]

    def composition(self, elements: list[str]) -> np.ndarray:
        """``[S, n_elements]`` atom counts of each element per structure."""
        species = self.species(elements)
        structure = np.repeat(np.arange(len(self)), self.counts)
        table = np.zeros((len(self), len(elements)))
        np.add.at(table, (structure, species), 1)
        return table

    def subset(self, indices) -> "Dataset":
        """The structures ``indices`` (in that order) as a new dataset."""
        indices = np.asarray(indices, dtype=np.int64)
        atoms = self.atom_indices(indices)
        return Dataset(self.positions[atoms], self.numbers[atoms], self.counts[indices],
                       None if self.energies is None else self.energies[indices],
                       None if self.forces is None else self.forces[atoms],
                       None if self.boxes is None else self.boxes[indices])

    def atom_indices(self, indices) -> np.ndarray:
        """Flat atom indices of the structures ``indices``, concatenated."""
        offsets = self.offsets
        return np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in indices])

    def content_hash(self) -> str:
        """sha256 (hex) of all arrays in fixed dtypes: identifies the data a model was trained on."""
        digest = hashlib.sha256()
        for name, array, dtype in (("positions", self.positions, np.float64), ("numbers", self.numbers, np.int64),
                                   ("counts", self.counts, np.int64), ("energies", self.energies, np.float64),
                                   ("forces", self.forces, np.float64), ("boxes", self.boxes, np.float64)):
            digest.update(name.encode())
            if array is not None:
                digest.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
        return digest.hexdigest()


def to_dataset(frames: list, require_labels: bool = True) -> Dataset:
    """A :class:`Dataset` (nm, kJ/mol) from ``ase.Atoms`` frames (Å, eV).

    With ``require_labels`` every frame must carry energy and forces (ValueError otherwise).
    All frames must be open, or all fully periodic.
    """
    boxes = [atoms_box(atoms) for atoms in frames]
    if len({box is None for box in boxes}) > 1:
        raise ValueError("the data mix periodic and non-periodic structures")
    labels = [_labels(atoms, k) for k, atoms in enumerate(frames)] if require_labels else None
    return Dataset(
        positions=np.concatenate([atoms.positions for atoms in frames]) * units.ANGSTROM_TO_NM,
        numbers=np.concatenate([atoms.numbers for atoms in frames]).astype(np.int64),
        counts=np.array([len(atoms) for atoms in frames], dtype=np.int64),
        energies=None if labels is None else np.array([e for e, _ in labels]) * units.EV_TO_KJ_PER_MOL,
        forces=None if labels is None else np.concatenate([f for _, f in labels])
        * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM,
        boxes=None if boxes[0] is None else np.stack(boxes),
    )


def _labels(atoms, index: int) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (eV/Å) stored with frame ``index``."""
    calc = atoms.calc
    results = {} if calc is None else calc.results
    if "energy" not in results or "forces" not in results:
        raise ValueError(f"structure {index} has no energy and forces (label the data first: molfree data label)")
    return float(results["energy"]), np.asarray(results["forces"], dtype=np.float64)


def load_dataset(path: str | os.PathLike, require_labels: bool = True) -> Dataset:
    """Read an extended-XYZ file into a :class:`Dataset` (see :func:`to_dataset`)."""
    return to_dataset(read_xyz(path), require_labels)


Pairs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def structure_pairs(dataset: Dataset, cutoff: float) -> list[Pairs]:
    """Full neighbor list (receiver, sender, shifts) of each structure within ``cutoff`` (nm), local indices.

    Training data do not move, so these are built once and reused by :func:`collate`. Pairs are
    sorted (receiver, sender, shifts) so that message sums do not depend on the search's order.
    """
    from ..neighbors import neighbor_list

    offsets = dataset.offsets
    pairs = []
    for s in range(len(dataset)):
        positions = torch.from_numpy(dataset.positions[offsets[s]:offsets[s + 1]])
        box = None if dataset.boxes is None else torch.from_numpy(dataset.boxes[s])
        nl = neighbor_list(positions, cutoff, box, half=False)
        order = np.lexsort([*nl.shifts.T.flip(0).numpy(), nl.j.numpy(), nl.i.numpy()])  # reproducible sums
        pairs.append((nl.i[order], nl.j[order], nl.shifts[order]))
    return pairs


@dataclass
class Batch:
    """Structures flattened for :meth:`EquivariantPotential.forward`.

    Attributes:
        positions: ``[M, 3]`` nm.  species: ``[M]`` indices into the model's elements.
        batch: ``[M]`` structure of each atom.  n_structures: ``B``.  counts: ``[B]`` atoms per structure.
        box: ``[B, 3, 3]`` nm or None.  pairs: full neighbor list with batch-global indices.
        energies: ``[B]`` kJ/mol.  forces: ``[M, 3]`` kJ/mol/nm (None when unlabelled).
    """

    positions: torch.Tensor
    species: torch.Tensor
    batch: torch.Tensor
    n_structures: int
    counts: torch.Tensor
    box: torch.Tensor | None
    pairs: Pairs
    energies: torch.Tensor | None
    forces: torch.Tensor | None


def collate(dataset: Dataset, species: np.ndarray, pairs: list[Pairs], indices, dtype=torch.float32) -> Batch:
    """A :class:`Batch` of the structures ``indices``; ``species`` and ``pairs`` cover the whole dataset."""
    indices = np.asarray(indices, dtype=np.int64)
    atoms = dataset.atom_indices(indices)
    counts = torch.from_numpy(dataset.counts[indices])
    starts = torch.cumsum(counts, 0) - counts
    receivers, senders, shifts = [], [], []
    for start, s in zip(starts.tolist(), indices.tolist()):
        i, j, shift = pairs[s]
        receivers.append(i + start)
        senders.append(j + start)
        shifts.append(shift)
    def as_tensor(array):
        return None if array is None else torch.as_tensor(array, dtype=dtype)

    return Batch(
        positions=as_tensor(dataset.positions[atoms]),
        species=torch.from_numpy(species[atoms]),
        batch=torch.arange(len(indices)).repeat_interleave(counts),
        n_structures=len(indices),
        counts=counts,
        box=None if dataset.boxes is None else as_tensor(dataset.boxes[indices]),
        pairs=(torch.cat(receivers), torch.cat(senders), torch.cat(shifts)),
        energies=None if dataset.energies is None else as_tensor(dataset.energies[indices]),
        forces=None if dataset.forces is None else as_tensor(dataset.forces[atoms]),
    )
