"""Unlabelled configurations for training data (positions in nm inside, extended XYZ in Å on disk).

- :func:`sample_md`: OpenMM Langevin MD of a :class:`molfree.systems.System` at several
  temperatures (one independent run per temperature from the minimised start). Use a named
  system (:func:`molfree.systems.load`) or a PDB file with a force field (:func:`system_from_pdb`).
- :func:`sample_smiles`: for molecules without force-field parameters. RDKit embeds conformers
  (ETKDG) and relaxes them with MMFF94; frames are those conformers with isotropic Gaussian
  displacements of every atom, RMS ``SMILES_DISPLACEMENT_NM * sqrt(T / 300 K)`` per axis. This
  is a heuristic spread around minima, *not* a Boltzmann sample: it covers conformers and
  near-equilibrium distortions, but no barrier regions.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from .data import make_atoms

#: Per-axis RMS displacement (nm) of the SMILES perturbations at 300 K.
SMILES_DISPLACEMENT_NM = 0.008
#: Default force field for PDB inputs (OpenMM's Amber14 protein/nucleic set and its TIP3P water).
DEFAULT_FORCEFIELD = ("amber14-all.xml", "amber14/tip3p.xml")


def _symbols(topology) -> list[str]:
    return [a.element.symbol if a.element is not None else "X" for a in topology.atoms()]


def _check(temperatures, frames: int) -> list[float]:
    temperatures = [float(t) for t in temperatures]
    if not temperatures or min(temperatures) <= 0:
        raise ValueError(f"need at least one positive temperature (K), got {temperatures}")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    return temperatures


def system_from_pdb(path: str | os.PathLike, forcefield: tuple[str, ...] = DEFAULT_FORCEFIELD,
                    temperature: float = 300.0):
    """A :class:`molfree.systems.System` from a PDB file and OpenMM force-field files.

    No cutoff for open structures, PME (0.9 nm) when the PDB has a unit cell; flexible
    bonds, rigid water.
    """
    from openmm import app, unit

    from ..energies.openmm_energy import OpenMMEnergy
    from ..systems import System

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PDB file not found: {path}")
    pdb = app.PDBFile(str(path))
    periodic = pdb.topology.getPeriodicBoxVectors() is not None
    options = dict(nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer) if periodic else \
        dict(nonbondedMethod=app.NoCutoff)
    system = app.ForceField(*forcefield).createSystem(pdb.topology, constraints=None, **options)
    box = pdb.topology.getPeriodicBoxVectors()
    description = (f"{path.name} with {', '.join(forcefield)}; {'PME 0.9 nm' if periodic else 'NoCutoff'}; "
                   f"flexible bonds, rigid water; {temperature} K")
    return System(name=path.stem, topology=pdb.topology, system=system,
                  positions=np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)),
                  box=None if box is None else np.array(box.value_in_unit(unit.nanometer)),
                  temperature=float(temperature), description=description, energy=OpenMMEnergy(system))


def sample_md(system, temperatures, frames: int, interval_ps: float = 0.5, seed: int = 0) -> list:
    """``frames`` MD snapshots per temperature (K), ``interval_ps`` apart, as ``ase.Atoms``.

    Langevin (1 fs, 1/ps friction, OpenMM CPU platform); ``info`` records temperature and source.
    """
    from ..md import run_md

    temperatures = _check(temperatures, frames)
    symbols = _symbols(system.topology)
    out = []
    for k, temperature in enumerate(temperatures):
        hot = dataclasses.replace(system, temperature=temperature)
        positions, _ = run_md(hot, frames * interval_ps, seed + k, frame_interval_ps=interval_ps)
        out += [make_atoms(symbols, x, system.box, temperature=temperature, source=f"openmm-md:{system.name}")
                for x in positions]
    return out


def sample_smiles(smiles: str, temperatures, frames: int, n_conformers: int = 10, seed: int = 0) -> list:
    """``frames`` perturbed RDKit conformers per temperature (K) of the molecule ``smiles`` (see module doc)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from .. import units

    temperatures = _check(temperatures, frames)
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None:
        raise ValueError(f"RDKit cannot parse the SMILES {smiles!r}")
    molecule = Chem.AddHs(molecule)
    conformers = list(AllChem.EmbedMultipleConfs(molecule, numConfs=n_conformers, randomSeed=seed))
    if not conformers:
        raise ValueError(f"RDKit could not embed a conformer for {smiles!r}")
    AllChem.MMFFOptimizeMoleculeConfs(molecule)
    symbols = [atom.GetSymbol() for atom in molecule.GetAtoms()]
    minima = [molecule.GetConformer(c).GetPositions() * units.ANGSTROM_TO_NM for c in conformers]
    rng = np.random.default_rng(seed)
    out = []
    for temperature in temperatures:
        sigma = SMILES_DISPLACEMENT_NM * np.sqrt(temperature / 300.0)
        for f in range(frames):
            x = minima[f % len(minima)] + rng.normal(0.0, sigma, minima[0].shape)
            out.append(make_atoms(symbols, x, temperature=temperature, source=f"rdkit-perturbed:{smiles}"))
    return out
