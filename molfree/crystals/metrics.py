"""CDVAE-style metrics for generated crystals (Å, eV, g/cm³).

Coverage here counts ``StructureMatcher`` matches (CDVAE's tolerances) rather than CDVAE's
fingerprint-distance thresholds, since the fingerprint featurisers are not part of this stack.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms
from scipy.stats import wasserstein_distance

from .relax import matcher
from .structures import composition_valid, density, structure_valid, to_structure

__all__ = ["coverage", "csp_match", "property_wasserstein", "validity"]


def validity(structures: list[Atoms]) -> dict[str, float]:
    """Fractions structurally valid, compositionally valid (SMACT) and both."""
    if not structures:
        raise ValueError("validity of an empty set of structures is undefined")
    struct = np.array([structure_valid(a) for a in structures])
    comp = np.array([composition_valid(a.get_chemical_symbols()) for a in structures])
    return {"structural": float(struct.mean()), "compositional": float(comp.mean()),
            "overall": float((struct & comp).mean())}


def coverage(generated: list[Atoms], references: list[Atoms]) -> dict[str, float]:
    """COV-R: fraction of references matched by some generated structure; COV-P: fraction of
    generated structures that match some reference."""
    sm = matcher()
    gen = [to_structure(a) for a in generated]
    ref = [to_structure(a) for a in references]
    hits = np.array([[sm.fit(g, r) for r in ref] for g in gen], dtype=bool).reshape(len(gen), len(ref))
    return {"cov_r": float(hits.any(axis=0).mean()) if ref else 0.0,
            "cov_p": float(hits.any(axis=1).mean()) if gen else 0.0}


def property_wasserstein(generated: list[Atoms], references: list[Atoms],
                         gen_energies: list[float] | None = None,
                         ref_energies: list[float] | None = None) -> dict[str, float]:
    """1-D Wasserstein distances of density (g/cm³) and, if given, energy per atom (eV)."""
    out = {"density": float(wasserstein_distance([density(a) for a in generated],
                                                 [density(a) for a in references]))}
    if gen_energies is not None and ref_energies is not None:
        out["energy_per_atom"] = float(wasserstein_distance(gen_energies, ref_energies))
    return out


def csp_match(predicted: list[Atoms], targets: list[Atoms]) -> dict[str, float]:
    """CSP match rate and mean normalised RMS displacement over matched pairs (``StructureMatcher``
    with stol=0.5, angle_tol=10°, ltol=0.3); RMSE is NaN when nothing matches."""
    if len(predicted) != len(targets) or not targets:
        raise ValueError("csp_match needs one prediction per target and at least one target")
    sm = matcher()
    rms = [sm.get_rms_dist(to_structure(p), to_structure(t)) for p, t in zip(predicted, targets)]
    matched = [r[0] for r in rms if r is not None]
    return {"match_rate": len(matched) / len(targets), "rmse": float(np.mean(matched)) if matched else float("nan")}
