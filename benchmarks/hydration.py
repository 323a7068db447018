"""Hydration free energy of methane (or water) in TIP3P: classical MBAR (decoupling, HREX) and neural TI, one run.

Prints ΔG_hyd with its error, the force/energy evaluations and the wall time of each method side by side,
beside the yardsticks: methane, FreeSolv's GAFF/TIP3P calculation (2.45 ± 0.01 kcal/mol) and experiment
(2.00 ± 0.20 kcal/mol); water, TIP3P in TIP3P (−6.10 kcal/mol) and experiment (−6.33 kcal/mol).
Reruns with the same --out resume from the checkpoints.

    python benchmarks/hydration.py [--quick] [--solute methane|water] [--method mbar|neural-ti|both]
                                   [--iterations N] [--frames N] [--insertions N]
                                   [--out runs/bench-hydration-SOLUTE] [--threads N]

Neural TI (molfree.freeenergy.hydration_neural_ti): coupled and decoupled MD frames 1 ps apart (full: 50 + 50,
quick: 20 + 20 frames of 0.2 ps; --frames N sets both), 400 training steps (quick: 100), then per-frame replica
exchange of the rigid solute along the learned path within 0.2 nm of its MD position, test insertions for the
rest of the box and into the decoupled frames (--insertions, full 8000, quick 2000 per frame), combined by BAR
over the two sets of frames. Its cost is MD steps of the full system plus solute–environment evaluations, which
are much cheaper than a full-system energy (a few thousand pair terms and an Ewald structure factor, no PME grid).

Full: 2.5 nm box, 3 + 9 − 1 = 11 λ states for methane (6 + 9 − 1 for water), 1000 iterations of 1 ps per
replica (11 ns per leg for methane).
Quick: 2.2 nm box, 2 + 6 − 1 = 7 states (water 5 + 6 − 1), 40 iterations of 0.2 ps: a smoke test of the
pipeline with a large error bar, not a converged number.
"""
from __future__ import annotations

import argparse
import math
import time

from molfree import units
from molfree.freeenergy.hydration import (
    ELECTROSTATIC_STATES,
    REFERENCES,
    SOLUTES,
    SamplingOptions,
    hydration_free_energy,
    shipped_solute,
)
from molfree.freeenergy.hydration_neural_ti import NeuralTIOptions, neural_ti_hydration

#: λ_electrostatics states of the quick run per solute (full runs: the library's ELECTROSTATIC_STATES).
QUICK_ELECTROSTATIC_STATES = {"methane": 2, "water": 5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke-test run")
    parser.add_argument("--out", help="run directory (default: runs/bench-hydration[-quick])")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--solute", choices=SOLUTES, default="methane")
    parser.add_argument("--iterations", type=int, help="exchange iterations per leg (default: 40 quick, 1000 full)")
    parser.add_argument("--method", choices=("mbar", "neural-ti", "both"), default="both")
    parser.add_argument("--frames", type=int, help="neural TI: coupled and decoupled frames, each (default: 20 "
                        "quick, 50 full)")
    parser.add_argument("--insertions", type=int, help="neural TI: test insertions per frame (default: 2000 quick, "
                        "8000 full)")
    args = parser.parse_args()

    if args.quick:
        size, n_electrostatics, n_sterics = 2.2, QUICK_ELECTROSTATIC_STATES[args.solute], 6
        options = SamplingOptions(iterations=40, steps_per_iteration=100, equilibration_steps=500,
                                  threads=args.threads, seed=args.seed)
    else:
        size, n_electrostatics, n_sterics = 2.5, ELECTROSTATIC_STATES[args.solute], 9
        options = SamplingOptions(iterations=1000, steps_per_iteration=500, equilibration_steps=5000,
                                  threads=args.threads, seed=args.seed)
    if args.iterations:
        options.iterations = args.iterations
    neural = (NeuralTIOptions(n_frames=20, n_decoupled_frames=20, frame_ps=0.2, equilibration_ps=2.0,
                              training_steps=100, insertions=2000) if args.quick else NeuralTIOptions())
    if args.frames:
        neural.n_frames = neural.n_decoupled_frames = args.frames
    if args.insertions:
        neural.insertions = args.insertions
    out = args.out or f"runs/bench-hydration-{args.solute}{'-quick' if args.quick else ''}"
    solvated, solute = shipped_solute(args.solute, size=size, temperature=298.15)
    print(f"{args.solute} hydration free energy, TIP3P, {solvated.temperature:g} K, {solvated.n_atoms} atoms "
          f"({size} nm box, {'quick' if args.quick else 'full'})")
    if args.method in ("mbar", "both"):
        start = time.perf_counter()
        result = hydration_free_energy(solvated, solute, out=out, n_electrostatics=n_electrostatics,
                                       n_sterics=n_sterics, options=options, progress=True)
        wall = time.perf_counter() - start
        sampling = result.details["sampling"]
        md_steps = sampling["solvent_md_steps"] + sampling["gas_md_steps"]
        energies = sampling["solvent_energy_evaluations"] + sampling["gas_energy_evaluations"]
        print(f"  molfree MBAR          ΔG_hyd = {result.dG_kcal_mol:6.2f} ± {result.error_kcal_mol:.2f} kcal/mol "
              f"({len(result.states)} λ states, {options.iterations} iterations x {options.steps_per_iteration} steps; "
              f"solvent leg {result.solvent.delta_f:.3f} ± {result.solvent.error:.3f} kT, "
              f"gas leg {result.gas.delta_f:.3f} ± {result.gas.error:.3f} kT)")
        print(f"      min neighbour overlap (solvent) {min(result.solvent.neighbour_overlap):.3f}; "
              f"{result.solvent.n_uncorrelated} uncorrelated samples per state")
        print(f"      cost: {md_steps} MD force evaluations + {energies} energy evaluations for u_kln; wall {wall:.0f} s")
    if args.method in ("neural-ti", "both"):
        document = neural_ti_hydration(solvated, solute, out=out, options=neural, sampling=options,
                                       seed=args.seed, progress=True)
        kcal = units.kT(document["temperature_K"]) * units.KJ_TO_KCAL
        print(f"  molfree neural TI     ΔG_hyd = {document['dG_kcal_mol']:6.2f} ± {document['error_kcal_mol']:.2f} "
              f"kcal/mol (BAR over {neural.n_frames} coupled + {neural.n_decoupled_frames} decoupled frames; "
              f"one-sided: {document['exp_coupled_kT'] * kcal:.2f} from coupled, "
              f"{document.get('exp_decoupled_kT', math.nan) * kcal:.2f} from decoupled)")
        print(f"      cost: {document['md_steps']} MD force evaluations + {document['solute_energy_evaluations']} "
              f"solute–environment evaluations; wall {document['wall_seconds']:.0f} s")
    for name, (value, error) in REFERENCES[args.solute].items():
        print(f"  {name:21s} ΔG_hyd = {value:6.2f}" + (f" ± {error:.2f}" if error is not None else "") + " kcal/mol")
    print(f"  run directory {out}")


if __name__ == "__main__":
    main()
