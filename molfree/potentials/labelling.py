"""Reference labels (energies and forces) for training data, resumable in chunks.

References map one ``ase.Atoms`` to (energy kJ/mol, forces ``[N, 3]`` kJ/mol/nm):

- :class:`XTBReference`: GFN2-xTB (or GFN1) from tblite through :class:`molfree.energies.ase_energy.ASEEnergy`,
  at a given total charge and spin multiplicity.
- :class:`OpenMMReference`: an ``openmm.System`` through
  :class:`molfree.energies.openmm_energy.OpenMMEnergy`; the structures must match its particles.

:func:`label_file` labels an extended-XYZ file chunk by chunk. Each chunk is written atomically
as its own part file in ``<out>.parts-<key>/`` (the key hashes the input file, the reference and
the chunk size, so parts of a different job are never reused); a rerun after a crash skips
finished chunks. When all chunks are done the parts are concatenated into ``out`` and removed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

from ..io import atomic_write_text
from .data import atoms_box, labelled_atoms, read_xyz, write_xyz


class XTBReference:
    """Semi-empirical tight binding with tblite (``method`` "GFN2-xTB" or "GFN1-xTB").

    ``multiplicity`` is 2S + 1 (1: closed shell); ``accuracy`` is tblite's numerical accuracy.
    """

    def __init__(self, method: str = "GFN2-xTB", charge: int = 0, multiplicity: int = 1, accuracy: float = 1.0):
        if multiplicity < 1:
            raise ValueError(f"multiplicity must be at least 1, got {multiplicity}")
        self.method, self.charge, self.multiplicity, self.accuracy = method, int(charge), int(multiplicity), accuracy
        self.description = f"tblite {method}, charge {self.charge}, multiplicity {self.multiplicity}"

    def __call__(self, atoms) -> tuple[float, np.ndarray]:
        from tblite.ase import TBLite

        from ..energies.ase_energy import ASEEnergy

        calculator = TBLite(method=self.method, charge=self.charge, multiplicity=self.multiplicity,
                            accuracy=self.accuracy, verbosity=0)
        return _evaluate_one(ASEEnergy(calculator, atoms).evaluate, atoms)


class OpenMMReference:
    """Energies and forces of an ``openmm.System`` (``topology`` fixes the expected elements)."""

    def __init__(self, system, topology, description: str, platform: str = "Reference"):
        from ..energies.openmm_energy import OpenMMEnergy

        self.energy = OpenMMEnergy(system, platform=platform)
        self.symbols = [a.element.symbol if a.element is not None else "X" for a in topology.atoms()]
        self.description = f"OpenMM: {description}"

    @classmethod
    def from_system(cls, system, platform: str = "Reference") -> "OpenMMReference":
        """Reference for a :class:`molfree.systems.System`."""
        return cls(system.system, system.topology, system.name, platform)

    def __call__(self, atoms) -> tuple[float, np.ndarray]:
        symbols = atoms.get_chemical_symbols()
        if symbols != self.symbols:
            raise ValueError(f"structure with {len(symbols)} atoms ({atoms.get_chemical_formula()}) does not match "
                             f"the OpenMM system ({len(self.symbols)} particles) atom by atom")
        return _evaluate_one(self.energy.evaluate, atoms)


def _evaluate_one(evaluate, atoms) -> tuple[float, np.ndarray]:
    """Apply a batched evaluator (nm → kJ/mol, kJ/mol/nm) to one ``ase.Atoms``."""
    from .. import units

    box = atoms_box(atoms)
    energies, forces = evaluate(atoms.positions[None] * units.ANGSTROM_TO_NM, None if box is None else box[None])
    if not np.isfinite(energies[0]):
        raise ValueError(f"the reference returned a non-finite energy for a {atoms.get_chemical_formula()} structure")
    return float(energies[0]), forces[0]


def parts_directory(source: Path, out: Path, reference, chunk_size: int) -> Path:
    """Where the part files of one labelling job live (see the module docstring)."""
    digest = hashlib.sha256(source.read_bytes())
    digest.update(f"{reference.description}|{chunk_size}".encode())
    return out.with_name(f"{out.name}.parts-{digest.hexdigest()[:12]}")


def label_file(source: str | os.PathLike, out: str | os.PathLike, reference, chunk_size: int = 50,
               progress: bool = True) -> Path:
    """Label every structure of the extended-XYZ file ``source`` with ``reference`` into ``out``.

    Resumable: finished chunks of ``chunk_size`` structures are kept as part files and skipped
    on a rerun. Each structure's ``info["reference"]`` records ``reference.description``.
    """
    from tqdm import tqdm

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    source, out = Path(source), Path(out)
    frames = read_xyz(source)
    parts = parts_directory(source, out, reference, chunk_size)
    starts = range(0, len(frames), chunk_size)
    paths = [parts / f"part-{k:05d}.xyz" for k in range(len(starts))]
    with tqdm(total=len(frames), desc=f"label ({reference.description})", unit="frame",
              disable=not progress) as bar:
        for start, path in zip(starts, paths):
            chunk = frames[start:start + chunk_size]
            if path.is_file():
                bar.update(len(chunk))
                continue
            labelled = []
            for atoms in chunk:
                labelled.append(labelled_atoms(atoms, *reference(atoms), reference=reference.description))
                bar.update()
            write_xyz(path, labelled)
    atomic_write_text(out, "".join(path.read_text() for path in paths))
    shutil.rmtree(parts)
    return out
