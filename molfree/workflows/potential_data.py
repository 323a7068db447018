"""Training-data jobs behind ``molfree data sample`` and ``molfree data label``.

``sample``: configurations of a named system or a PDB file (OpenMM MD) or a SMILES (perturbed
RDKit conformers; see :mod:`molfree.potentials.sampling`) into an unlabelled extended-XYZ file.
``label``: energies and forces from GFN2-xTB (tblite) or the OpenMM System of a named system /
PDB file, resumable (see :mod:`molfree.potentials.labelling`).
"""
from __future__ import annotations

from pathlib import Path


def _one_source(**sources) -> None:
    """ValueError unless exactly one of the keyword options (e.g. system=..., pdb=...) is set."""
    given = [f"--{name}" for name, value in sources.items() if value]
    if len(given) != 1:
        raise ValueError(f"give exactly one of {', '.join('--' + name for name in sources)} (got {given or 'none'})")


def md_system(system: str | None, pdb: str | None, forcefield=None, temperature: float = 300.0):
    """A :class:`molfree.systems.System` by registry name or from a PDB file and force-field files
    (default :data:`molfree.potentials.sampling.DEFAULT_FORCEFIELD`)."""
    from .. import systems
    from ..potentials.sampling import DEFAULT_FORCEFIELD, system_from_pdb

    _one_source(system=system, pdb=pdb)
    if system:
        return systems.load(system)
    return system_from_pdb(pdb, tuple(forcefield or DEFAULT_FORCEFIELD), temperature)


def run_sample(out: str | Path, temperatures, frames: int, system: str | None = None, pdb: str | None = None,
               smiles: str | None = None, forcefield=None, interval_ps: float = 0.5,
               seed: int = 0) -> Path:
    """Write ``frames`` configurations per temperature (K) of one source to ``out``; returns ``out``."""
    from ..potentials.data import write_xyz
    from ..potentials.sampling import sample_md, sample_smiles

    _one_source(system=system, pdb=pdb, smiles=smiles)
    if smiles:
        frames_out = sample_smiles(smiles, temperatures, frames, seed=seed)
    else:
        frames_out = sample_md(md_system(system, pdb, forcefield), temperatures, frames, interval_ps, seed)
    write_xyz(out, frames_out)
    print(f"[molfree data sample] {len(frames_out)} structures -> {out}")
    return Path(out)


def make_reference(kind: str, system: str | None = None, pdb: str | None = None, forcefield=None,
                   charge: int = 0, multiplicity: int = 1, method: str = "GFN2-xTB"):
    """A labelling reference: ``"xtb"`` (tblite ``method``, charge, multiplicity) or ``"openmm"`` (system/PDB)."""
    from ..potentials.labelling import OpenMMReference, XTBReference

    if kind == "xtb":
        return XTBReference(method, charge, multiplicity)
    if kind == "openmm":
        return OpenMMReference.from_system(md_system(system, pdb, forcefield))
    raise ValueError(f"unknown reference {kind!r}; use 'xtb' or 'openmm'")


def run_label(source: str | Path, out: str | Path, reference, chunk_size: int = 50) -> Path:
    """Label ``source`` into ``out`` with ``reference`` (resumable); returns ``out``."""
    from ..potentials.labelling import label_file

    label_file(source, out, reference, chunk_size)
    print(f"[molfree data label] {reference.description} -> {out}")
    return Path(out)
