"""Conformer-ensemble metrics: symmetry-aware heavy-atom RMSD, deduplication, coverage and AMR, validity.

RMSDs are in Å (the conformer literature's unit; the RDKit boundary) over heavy atoms, minimised
over rotations and over the molecule's graph automorphisms (RDKit self substructure matches), as
``rdMolAlign.GetBestRMS(..., symmetrizeConjugatedTerminalGroups=False)`` computes them, but batched
over all pairs with NumPy.

Coverage (GeoMol / torsional-diffusion convention), for a threshold δ: recall = fraction of reference
conformers with a generated one within δ; precision = fraction of generated conformers within δ of a
reference one; AMR-recall / AMR-precision = mean minimum RMSD over reference / generated conformers.
"""
from __future__ import annotations

import numpy as np

#: Thresholds (Å) at which coverage is reported.
THRESHOLDS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
#: Cap on the automorphisms tried per pair (molecules with many symmetric groups).
MAX_MATCHES = 256


def heavy_positions(molecule) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Heavy-atom conformer positions ``[C, H, 3]`` (Å) and the heavy-atom graph automorphisms (index tuples)."""
    from rdkit import Chem

    heavy = Chem.RemoveHs(molecule)
    positions = np.array([c.GetPositions() for c in heavy.GetConformers()]).reshape(-1, heavy.GetNumAtoms(), 3)
    matches = heavy.GetSubstructMatches(heavy, uniquify=False, useChirality=False, maxMatches=MAX_MATCHES)
    return positions, list(matches) or [tuple(range(heavy.GetNumAtoms()))]


def rmsd_matrix(probe: np.ndarray, reference: np.ndarray, matches: list[tuple[int, ...]]) -> np.ndarray:
    """Best aligned RMSD ``[P, R]`` (Å) between conformers ``probe [P, H, 3]`` and ``reference [R, H, 3]``.

    Minimum over ``matches`` (automorphisms applied to the probe) of the Kabsch RMSD.
    """
    p = probe - probe.mean(1, keepdims=True)
    r = reference - reference.mean(1, keepdims=True)
    best = np.full((len(p), len(r)), np.inf)
    r_norm = (r**2).sum((1, 2))
    for match in matches:
        pm = p[:, list(match)]
        cov = np.einsum("pni,rnj->prij", pm, r)  # [P, R, 3, 3]
        u, s, vt = np.linalg.svd(cov)
        sign = np.sign(np.linalg.det(u @ vt))
        s[..., -1] *= np.where(sign == 0, 1.0, sign)
        msd = ((pm**2).sum((1, 2))[:, None] + r_norm[None] - 2 * s.sum(-1)) / p.shape[1]
        best = np.minimum(best, np.sqrt(np.clip(msd, 0.0, None)))
    return best


def deduplicate(positions: np.ndarray, matches: list[tuple[int, ...]], threshold: float,
                order: np.ndarray | None = None) -> list[int]:
    """Greedy RMSD deduplication: indices kept, visiting conformers in ``order`` (e.g. by energy) and keeping
    one unless it is within ``threshold`` Å of an already kept conformer."""
    if not threshold >= 0:
        raise ValueError(f"the RMSD threshold must be >= 0 Å, got {threshold}")
    order = np.arange(len(positions)) if order is None else np.asarray(order)
    rmsd = rmsd_matrix(positions, positions, matches)
    kept: list[int] = []
    for i in order:
        if not kept or rmsd[i, kept].min() > threshold:
            kept.append(int(i))
    return kept


def coverage(generated: np.ndarray, reference: np.ndarray, matches: list[tuple[int, ...]],
             thresholds=THRESHOLDS) -> dict:
    """Coverage recall / precision at each threshold and AMR (Å) of ``generated [P, H, 3]`` against ``reference [R, H, 3]``."""
    if len(generated) == 0 or len(reference) == 0:
        raise ValueError("coverage needs at least one generated and one reference conformer")
    rmsd = rmsd_matrix(generated, reference, matches)
    to_reference, to_generated = rmsd.min(1), rmsd.min(0)
    return {"recall": {f"{d:g}": float((to_generated < d).mean()) for d in thresholds},
            "precision": {f"{d:g}": float((to_reference < d).mean()) for d in thresholds},
            "amr_recall": float(to_generated.mean()), "amr_precision": float(to_reference.mean()),
            "n_generated": len(generated), "n_reference": len(reference)}


def stereo_signature(molecule, conf_id: int) -> tuple:
    """CIP labels of stereocentres and E/Z of double bonds perceived from conformer ``conf_id``'s 3D geometry."""
    from rdkit import Chem

    copy = Chem.Mol(molecule)
    Chem.AssignStereochemistryFrom3D(copy, confId=conf_id)
    centres = tuple(sorted((a.GetIdx(), a.GetProp("_CIPCode")) for a in copy.GetAtoms() if a.HasProp("_CIPCode")))
    bonds = tuple(sorted((b.GetIdx(), str(b.GetStereo())) for b in copy.GetBonds()
                         if b.GetStereo() != Chem.BondStereo.STEREONONE))
    return centres, bonds


def connectivity_matches(molecule, conf_id: int) -> bool:
    """True when bonds re-perceived from conformer ``conf_id`` (RDKit ``DetermineConnectivity``) equal the graph."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    copy = Chem.RWMol(molecule)
    copy.RemoveAllConformers()
    copy.AddConformer(Chem.Conformer(molecule.GetConformer(conf_id)), assignId=True)
    for bond in list(copy.GetBonds()):
        copy.RemoveBond(bond.GetBeginAtomIdx(), bond.GetEndAtomIdx())
    rdDetermineBonds.DetermineConnectivity(copy, charge=Chem.GetFormalCharge(molecule))

    def bonds(m) -> set:
        return {tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))) for b in m.GetBonds()}

    return bonds(copy) == bonds(molecule)
