"""Ground-state recovery per energy evaluation: random structure search on LJ, NaCl and Si.

Each trial is an independent random search (its own seed) that stops at the first relaxed candidate
matching the known ground state (``StructureMatcher``, CDVAE tolerances) or when the relaxation
budget is spent. Printed per system: success rate over trials and energy evaluations per success.
The generative-model column stays empty until ``molfree.crystals`` has a trained generator.

Usage: ``python benchmarks/crystals.py [--quick]``
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from ase.build import bulk

from molfree.crystals.calculators import lennard_jones, make_calculator
from molfree.crystals.relax import matcher
from molfree.crystals.search import random_search
from molfree.crystals.structures import to_structure

#: name -> (composition, calculator factory, ground state, fmax eV/Å); LJ in reduced units (ε = 1 eV, σ = 1 Å).
SYSTEMS = {
    "LJ (fcc)": ("Ar", lambda: lennard_jones(["Ar"], {"Ar": (1.0, 1.0)}),
                 bulk("Ar", "fcc", a=1.5418), 1e-3),
    "NaCl (rock salt, Born-Mayer)": ("NaCl", lambda: make_calculator("born-mayer", ["Na", "Cl"]),
                                     bulk("NaCl", "rocksalt", a=5.64), 0.01),
    "Si (diamond, Tersoff)": ("Si", lambda: make_calculator("tersoff", ["Si"]),
                              bulk("Si", "diamond", a=5.432), 0.01),
}


def trial(composition: str, calculator, reference, fmax: float, budget: int, seed: int, max_atoms: int,
          steps: int) -> tuple[bool, int, int]:
    """One search: (success, relaxations, energy evaluations)."""
    sm = matcher()
    target = to_structure(reference)
    result = random_search(composition, calculator, budget, seed=seed, max_atoms=max_atoms, fmax=fmax, steps=steps,
                           stop=lambda c: np.isfinite(c.energy_per_atom) and sm.fit(to_structure(c.atoms), target))
    last = result.candidates[-1]
    success = bool(np.isfinite(last.energy_per_atom) and sm.fit(to_structure(last.atoms), target))
    return success, result.relaxations, result.evaluations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 trials, 4 relaxations each, ≤ 2 atoms per cell")
    args = parser.parse_args()
    torch.set_num_threads(1)
    trials, budget, max_atoms, steps = (2, 4, 2, 200) if args.quick else (10, 20, 8, 300)
    print(f"random structure search: {trials} trials x <= {budget} relaxations, <= {max_atoms} atoms/cell, "
          f"<= {steps} FIRE steps")
    header = f"{'system':32s} {'method':18s} {'success':>9s} {'relax/success':>14s} {'evals/success':>14s} {'time s':>7s}"
    print(header)
    print("-" * len(header))
    for name, (composition, factory, reference, fmax) in SYSTEMS.items():
        start = time.perf_counter()
        calculator = factory()
        runs = [trial(composition, calculator, reference, fmax, budget, seed, max_atoms, steps)
                for seed in range(trials)]
        successes = sum(s for s, _, _ in runs)
        relaxations = sum(r for _, r, _ in runs)
        evaluations = sum(e for _, _, e in runs)
        per_relax = f"{relaxations / successes:.1f}" if successes else "inf"
        per_eval = f"{evaluations / successes:.0f}" if successes else "inf"
        print(f"{name:32s} {'random search':18s} {successes:>4d}/{trials:<4d} {per_relax:>14s} {per_eval:>14s} "
              f"{time.perf_counter() - start:7.1f}")
        print(f"{'':32s} {'generative model':18s} {'n/a (not implemented)':>38s}")


if __name__ == "__main__":
    main()
