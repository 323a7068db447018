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

__all__ = ["coverage", "csp_match", "generation_metrics", "property_wasserstein", "validity"]


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


def csp_match(predicted: list[Atoms] | list[list[Atoms]], targets: list[Atoms]) -> dict[str, float]:
    """CSP match rate and mean normalised RMS displacement over matched targets (``StructureMatcher``
    with stol=0.5, angle_tol=10°, ltol=0.3); RMSE is NaN when nothing matches.

    ``predicted[k]`` is one structure or a list of candidates for ``targets[k]``; with several
    candidates the best match counts (DiffCSP's match rate at k samples)."""
    if len(predicted) != len(targets) or not targets:
        raise ValueError("csp_match needs one prediction (or list of candidates) per target and at least one target")
    sm = matcher()
    matched = []
    for candidates, target in zip(predicted, targets):
        ref = to_structure(target)
        rms = [sm.get_rms_dist(to_structure(p), ref) for p in ([candidates] if isinstance(candidates, Atoms)
                                                                else candidates)]
        rms = [r[0] for r in rms if r is not None]
        if rms:
            matched.append(min(rms))
    return {"match_rate": len(matched) / len(targets), "rmse": float(np.mean(matched)) if matched else float("nan")}


def generation_metrics(generated: list[Atoms], references: list[Atoms], gen_energies: list[float],
                       ref_energies: list[float]) -> dict[str, float]:
    """CDVAE's generation metrics: validity, COV-R/COV-P, and the Wasserstein distances of density
    (g/cm³) and energy per atom (eV) computed over the structurally valid generated crystals only
    (those with a finite energy)."""
    ok = [k for k, a in enumerate(generated) if structure_valid(a) and np.isfinite(gen_energies[k])]
    out = {f"valid_{k}": v for k, v in validity(generated).items()}
    out.update(coverage(generated, references))
    if ok:
        w = property_wasserstein([generated[k] for k in ok], references, [gen_energies[k] for k in ok], ref_energies)
        out.update({"wdist_density": w["density"], "wdist_energy_per_atom": w["energy_per_atom"]})
    else:
        out.update({"wdist_density": float("nan"), "wdist_energy_per_atom": float("nan")})
    return out
