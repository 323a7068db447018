"""``molfree crystal generate``: candidates, relaxation, symmetry, deduplication, ranking (eV, Å).

Candidates come from AIRSS-style random structure search (:mod:`molfree.crystals.search`); there is
no trained generative model in this version, and the report says so. Each relaxed candidate is
written atomically to ``candidates/NNNN.extxyz``, so a rerun skips finished candidates.

Writes into the run directory: ``candidates/``, ``cifs/`` (unique structures, ranked),
``energy_volume.png``, ``results.json`` and ``report.md``.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.io import read, write

from ..crystals.calculators import make_calculator
from ..crystals.relax import Relaxed, deduplicate, relax
from ..crystals.search import random_candidate
from ..crystals.structures import parse_composition, to_structure
from ..io import atomic_write_text, write_json

__all__ = ["GenerateSetup", "run_generate", "summary"]

SOURCE = "random structure search (pyxtal random symmetric + random-lattice P1 starts); no generative model"


@dataclass
class GenerateSetup:
    """Settings of a ``crystal generate`` run (forces in eV/Å)."""

    composition: str
    calculator: str = "emt"
    n: int = 200
    seed: int = 0
    max_atoms: int = 8
    fmax: float = 0.01
    steps: int = 300


def _save(path: Path, cand: Relaxed) -> None:
    atoms = cand.atoms.copy()
    atoms.info.update(energy_per_atom=cand.energy_per_atom, evaluations=cand.evaluations,
                      converged=cand.converged, space_group=cand.space_group, symbol=cand.symbol)
    buffer = io.StringIO()
    write(buffer, atoms, format="extxyz")
    atomic_write_text(path, buffer.getvalue())


def _load(path: Path) -> Relaxed:
    atoms = read(path, format="extxyz")
    info = atoms.info
    return Relaxed(atoms, float(info["energy_per_atom"]), int(info["evaluations"]), bool(info["converged"]),
                   int(info["space_group"]), str(info["symbol"]))


def _plot(candidates: list[Relaxed], unique: list[Relaxed], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [c for c in candidates if np.isfinite(c.energy_per_atom)]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([c.volume_per_atom for c in ok], [c.energy_per_atom for c in ok], s=12, alpha=0.5,
               label="relaxed candidates")
    ax.scatter([c.volume_per_atom for c in unique], [c.energy_per_atom for c in unique], s=30,
               facecolors="none", edgecolors="C3", label="unique")
    for c in unique[:5]:
        ax.annotate(c.symbol, (c.volume_per_atom, c.energy_per_atom), fontsize=7)
    ax.set_xlabel("volume (Å³/atom)")
    ax.set_ylabel("energy (eV/atom)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_generate(setup: GenerateSetup, out: str | Path) -> dict:
    """Run (or resume) a generate job in ``out``; returns the results written to ``results.json``."""
    from pymatgen.io.cif import CifWriter

    counts = parse_composition(setup.composition)
    if setup.n < 1:
        raise ValueError(f"-n must be at least 1, got {setup.n}")
    symbols = list(counts)
    calculator = make_calculator(setup.calculator, symbols)
    out = Path(out)
    candidates, resumed = [], 0
    for index in range(setup.n):
        path = out / "candidates" / f"{index:04d}.extxyz"
        if path.exists():
            candidates.append(_load(path))
            resumed += 1
            continue
        start = random_candidate(counts, index, setup.seed, setup.max_atoms)
        cand = relax(start, calculator, fmax=setup.fmax, steps=setup.steps)
        _save(path, cand)
        candidates.append(cand)
    unique = deduplicate(candidates)
    formula = setup.composition
    rows = []
    for rank, (cand, count) in enumerate(unique, 1):
        name = f"{rank:03d}_{cand.atoms.get_chemical_formula()}_sg{cand.space_group}.cif"
        atomic_write_text(out / "cifs" / name, str(CifWriter(to_structure(cand.atoms), symprec=0.01)))
        rows.append({"rank": rank, "cif": f"cifs/{name}", "energy_per_atom_eV": cand.energy_per_atom,
                     "volume_per_atom_A3": cand.volume_per_atom, "space_group": cand.space_group,
                     "symbol": cand.symbol, "n_atoms": len(cand.atoms), "multiplicity": count,
                     "converged": cand.converged})
    _plot(candidates, [c for c, _ in unique], out / "energy_volume.png", f"{formula} ({setup.calculator})")
    results = {"composition": formula, "calculator": setup.calculator, "source": SOURCE, "n_candidates": setup.n,
               "resumed": resumed, "relaxations": len(candidates),
               "energy_evaluations": sum(c.evaluations for c in candidates),
               "converged": sum(c.converged for c in candidates), "unique": rows}
    write_json(out / "results.json", results)
    lines = [f"# Crystal generation: {formula} with {setup.calculator}", "",
             f"Candidates: {setup.n} from {SOURCE}; {resumed} reused from an earlier run.",
             (f"Relaxations: {len(candidates)} ({results['converged']} converged to fmax {setup.fmax} eV/Å), "
              f"{results['energy_evaluations']} energy evaluations."), "",
             "| rank | E (eV/atom) | V (Å³/atom) | space group | atoms | found | CIF |",
             "|---:|---:|---:|---|---:|---:|---|"]
    lines += [f"| {r['rank']} | {r['energy_per_atom_eV']:.4f} | {r['volume_per_atom_A3']:.3f} | "
              f"{r['symbol']} ({r['space_group']}) | {r['n_atoms']} | {r['multiplicity']} | {r['cif']} |"
              for r in rows[:20]]
    lines += ["", "Energy vs volume: energy_volume.png", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    return results


def summary(results: dict) -> str:
    """A one-line summary (with the three lowest structures) for the terminal."""
    best = results["unique"][:3]
    text = ", ".join(f"{r['symbol']} ({r['space_group']}) {r['energy_per_atom_eV']:.4f} eV/atom" for r in best)
    return (f"[molfree crystal generate] {results['composition']}: {results['relaxations']} relaxations, "
            f"{len(results['unique'])} unique; lowest: {text}")
