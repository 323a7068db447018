"""Build ``alanine-dipeptide.pdb`` (ACE-ALA-NME, L-alanine) from scratch.

Run once from anywhere: ``python systems/build_alanine_dipeptide.py``. Needs RDKit.

Steps: embed the SMILES with explicit hydrogens (RDKit ETKDG, fixed seed), set the
backbone to the C7eq basin (phi = -80 deg, psi = 75 deg), name the atoms as OpenMM's
Amber residue templates do, minimise in vacuum with Amber14 (no constraints), check
that the alpha carbon is still L (CIP label S) and write the PDB next to this script.
Atom order follows tleap's (and openmmtools' AlanineDipeptideImplicit): ACE, ALA, NME.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from molfree import units

SMILES = "CC(=O)N[C@@H](C)C(=O)NC"
SEED = 20240601
PHI_PSI = (-80.0, 75.0)  # degrees
#: (residue, atom name) of the heavy atoms in SMILES order; the element is the name's first letter.
HEAVY = [("ACE", "CH3"), ("ACE", "C"), ("ACE", "O"), ("ALA", "N"), ("ALA", "CA"), ("ALA", "CB"), ("ALA", "C"),
         ("ALA", "O"), ("NME", "N"), ("NME", "C")]
#: Hydrogen names per heavy-atom index (SMILES order).
HYDROGENS = {0: ["HH31", "HH32", "HH33"], 3: ["H"], 4: ["HA"], 5: ["HB1", "HB2", "HB3"], 8: ["H"],
             9: ["H1", "H2", "H3"]}
ORDER = {"ACE": ["HH31", "CH3", "HH32", "HH33", "C", "O"],
         "ALA": ["N", "H", "CA", "HA", "CB", "HB1", "HB2", "HB3", "C", "O"],
         "NME": ["N", "H", "C", "H1", "H2", "H3"]}


def named_molecule():
    """RDKit molecule with a conformer, and ``{(residue, atom name): RDKit atom index}``."""
    from rdkit import Chem
    from rdkit.Chem import AllChem, rdMolTransforms

    mol = Chem.AddHs(Chem.MolFromSmiles(SMILES))
    if AllChem.EmbedMolecule(mol, randomSeed=SEED) != 0:
        raise RuntimeError("RDKit embedding failed")
    conf = mol.GetConformer()
    rdMolTransforms.SetDihedralDeg(conf, 1, 3, 4, 6, PHI_PSI[0])
    rdMolTransforms.SetDihedralDeg(conf, 3, 4, 6, 8, PHI_PSI[1])
    index = {}
    for heavy, (residue, name) in enumerate(HEAVY):
        index[residue, name] = heavy
        hydrogens = [n.GetIdx() for n in mol.GetAtomWithIdx(heavy).GetNeighbors() if n.GetAtomicNum() == 1]
        index.update({(residue, h): i for h, i in zip(HYDROGENS.get(heavy, []), hydrogens, strict=True)})
    return mol, index


def topology_and_positions(mol, index: dict[tuple[str, str], int]):
    """OpenMM Topology (atoms in :data:`ORDER`, bonds from RDKit) and positions ``[22, 3]`` nm."""
    from openmm.app import Element, Topology

    xyz = mol.GetConformer().GetPositions() * units.ANGSTROM_TO_NM
    topology = Topology()
    chain = topology.addChain("A")
    atoms, positions = {}, []
    for residue_name, names in ORDER.items():
        residue = topology.addResidue(residue_name, chain)
        for name in names:
            rd = index[residue_name, name]
            atoms[rd] = topology.addAtom(name, Element.getBySymbol(name[0]), residue)
            positions.append(xyz[rd])
    for bond in mol.GetBonds():
        topology.addBond(atoms[bond.GetBeginAtomIdx()], atoms[bond.GetEndAtomIdx()])
    return topology, np.array(positions)


def minimise(topology, positions: np.ndarray) -> np.ndarray:
    """Minimise with Amber14 in vacuum (no cutoff, no constraints); returns nm."""
    import openmm
    from openmm import app, unit

    system = app.ForceField("amber14-all.xml").createSystem(topology, nonbondedMethod=app.NoCutoff,
                                                             constraints=None)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1e-3)
    state = context.getState(getEnergy=True, getPositions=True)
    print(f"minimised energy: {state.getPotentialEnergy()}")
    return state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def check_l_alanine(mol, index: dict[tuple[str, str], int], positions: np.ndarray) -> None:
    """Raise unless the alpha carbon at ``positions`` (nm, :data:`ORDER`) has CIP label S (L-alanine)."""
    from rdkit import Chem

    conf = mol.GetConformer()
    keys = [(residue, name) for residue, names in ORDER.items() for name in names]
    for key, xyz in zip(keys, positions * units.NM_TO_ANGSTROM, strict=True):
        conf.SetAtomPosition(index[key], xyz.tolist())
    Chem.AssignStereochemistryFrom3D(mol)
    label = mol.GetAtomWithIdx(index["ALA", "CA"]).GetProp("_CIPCode")
    if label != "S":
        raise RuntimeError(f"alpha carbon is {label}, expected S (L-alanine)")


def main() -> None:
    from openmm import unit
    from openmm.app import PDBFile

    mol, index = named_molecule()
    topology, positions = topology_and_positions(mol, index)
    positions = minimise(topology, positions)
    check_l_alanine(mol, index, positions)
    path = Path(__file__).with_name("alanine-dipeptide.pdb")
    with open(path, "w") as handle:
        PDBFile.writeFile(topology, positions * unit.nanometer, handle)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
