"""Hydration free energy of methane (or water) in TIP3P by the classical route (decoupling, HREX, MBAR), one run.

Prints ΔG_hyd with its error, the force/energy evaluations and the wall time beside the
yardsticks: methane, FreeSolv's GAFF/TIP3P calculation (2.45 ± 0.01 kcal/mol) and experiment
(2.00 ± 0.20 kcal/mol); water, TIP3P in TIP3P (−6.10 kcal/mol) and experiment (−6.33 kcal/mol).
Reruns with the same --out resume from the checkpoints.

    python benchmarks/hydration.py [--quick] [--solute methane|water] [--out runs/bench-hydration-SOLUTE] [--threads N]

Full: 2.5 nm box, 3 + 9 − 1 = 11 λ states for methane (6 + 9 − 1 for water), 1000 iterations of 1 ps per
replica (11 ns per leg for methane).
Quick: 2.2 nm box, 2 + 6 − 1 = 7 states (water 5 + 6 − 1), 40 iterations of 0.2 ps: a smoke test of the
pipeline with a large error bar, not a converged number.
"""
from __future__ import annotations

import argparse
import time

from molfree.freeenergy.hydration import (
    ELECTROSTATIC_STATES,
    REFERENCES,
    SOLUTES,
    SamplingOptions,
    hydration_free_energy,
    shipped_solute,
)

#: λ_electrostatics states of the quick run per solute (full runs: the library's ELECTROSTATIC_STATES).
QUICK_ELECTROSTATIC_STATES = {"methane": 2, "water": 5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke-test run")
    parser.add_argument("--out", help="run directory (default: runs/bench-hydration[-quick])")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--solute", choices=SOLUTES, default="methane")
    args = parser.parse_args()

    if args.quick:
        size, n_electrostatics, n_sterics = 2.2, QUICK_ELECTROSTATIC_STATES[args.solute], 6
        options = SamplingOptions(iterations=40, steps_per_iteration=100, equilibration_steps=500,
                                  threads=args.threads, seed=args.seed)
    else:
        size, n_electrostatics, n_sterics = 2.5, ELECTROSTATIC_STATES[args.solute], 9
        options = SamplingOptions(iterations=1000, steps_per_iteration=500, equilibration_steps=5000,
                                  threads=args.threads, seed=args.seed)
    out = args.out or f"runs/bench-hydration-{args.solute}{'-quick' if args.quick else ''}"
    start = time.perf_counter()
    solvated, solute = shipped_solute(args.solute, size=size, temperature=298.15)
    result = hydration_free_energy(solvated, solute, out=out, n_electrostatics=n_electrostatics,
                                   n_sterics=n_sterics, options=options, progress=True)
    wall = time.perf_counter() - start
    sampling = result.details["sampling"]
    md_steps = sampling["solvent_md_steps"] + sampling["gas_md_steps"]
    energies = sampling["solvent_energy_evaluations"] + sampling["gas_energy_evaluations"]

    print(f"{args.solute} hydration free energy, TIP3P, {result.temperature:g} K, {solvated.n_atoms} atoms "
          f"({size} nm box), {len(result.states)} λ states, {options.iterations} iterations x "
          f"{options.steps_per_iteration} steps ({'quick' if args.quick else 'full'})")
    print(f"  molfree MBAR          ΔG_hyd = {result.dG_kcal_mol:6.2f} ± {result.error_kcal_mol:.2f} kcal/mol "
          f"(solvent leg {result.solvent.delta_f:.3f} ± {result.solvent.error:.3f} kT, "
          f"gas leg {result.gas.delta_f:.3f} ± {result.gas.error:.3f} kT)")
    for name, (value, error) in REFERENCES[args.solute].items():
        print(f"  {name:21s} ΔG_hyd = {value:6.2f}" + (f" ± {error:.2f}" if error is not None else "") + " kcal/mol")
    print(f"  min neighbour overlap (solvent) {min(result.solvent.neighbour_overlap):.3f}; "
          f"{result.solvent.n_uncorrelated} uncorrelated samples per state")
    print(f"  cost: {md_steps} MD force evaluations + {energies} energy evaluations for u_kln "
          f"(solvent leg {sampling['solvent_wall_seconds']:.0f} s, gas leg {sampling['gas_wall_seconds']:.0f} s); "
          f"wall time {wall:.0f} s; run directory {out}")


if __name__ == "__main__":
    main()
