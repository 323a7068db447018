"""LJ solute in an LJ fluid: insertion free energy βμ_ex by neural TI, MBAR and Widom on the same samples, one run.

Prints ΔF with its error, the Monte Carlo moves, energy evaluations and wall time of each method, side by side:
neural TI from the coupled samples (training, then per-sample TI of the solute: its evaluations are of the
solute's interaction alone, N pairs each), MBAR over a 9-state soft-core ladder, Widom insertion into the λ = 0
samples.

    python benchmarks/lj_insertion.py [--quick | --paper-only] [--samples N] [--seed N]

Quick: the CI system (32 + 1 particles, ρ* = 0.5, T* = 2, cutoff 1.9σ; the size tests/test_lj_insertion.py uses).
Full: that, then 512 + 1 particles as in Máté, Fleuret & Bereau (state point chosen here: ρ* = 0.5, T* = 2,
cutoff 2.5σ). The full run is CPU-heavy (about two hours on one core: one MC sweep of one 513-particle chain
takes ~36 ms); ``--paper-only --samples 50`` runs the paper system alone with 50 samples per state (25 min).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from molfree.freeenergy import lj_insertion as lji

#: (system, samples per state, sweeps from the lattice, sweeps per further state, neural-TI training steps)
SETUPS = {
    "CI 32 + 1": (lji.LJInsertion(n_solvent=32, density=0.5, reduced_temperature=2.0, cutoff=1.9), 500, 100, 25, 600),
    "paper 512 + 1": (lji.LJInsertion(n_solvent=512, density=0.5, reduced_temperature=2.0, cutoff=2.5), 200, 200, 30,
                      1000),
}


def run(name: str, seed: int, samples: int | None = None) -> None:
    system, n_samples, sweeps, sweeps_per_state, steps = SETUPS[name]
    n_samples = samples or n_samples
    start = time.perf_counter()
    states = lji.ladder(system, np.linspace(0, 1, 9), n_samples, sweeps, sweeps_per_state, seed=seed)
    sampling = time.perf_counter() - start
    neural, _ = lji.neural_ti(system, states[-1], steps=steps, seed=seed)
    results = [neural, lji.mbar_ladder(system, states), lji.widom(system, states[0], insertions_per_frame=100,
                                                                   seed=seed)]
    print(f"{name}: L = {system.box_length:.3f} σ, T* = {system.reduced_temperature}, ρ* = {system.density}, "
          f"9-state ladder × {n_samples} independent MC chains ({sampling:.0f} s of sampling in all)")
    for result in results:
        d = result.details
        print(f"  {result.method:10s} ΔF = {result.delta_f:7.4f} ± {result.error:.4f} kT   "
              f"{d['mc_moves']:>10d} MC moves + {d['energy_evaluations']:>8d} energy evaluations   "
              f"{d['wall_seconds']:6.1f} s (sampling included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="the CI system only")
    group.add_argument("--paper-only", action="store_true", help="the 512 + 1 system only")
    parser.add_argument("--samples", type=int, help="independent samples per λ state (default: 500 CI, 200 paper)")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.samples is not None and args.samples < 2:
        parser.error("--samples must be >= 2")
    names = ["CI 32 + 1"] if args.quick else ["paper 512 + 1"] if args.paper_only else list(SETUPS)
    for name in names:
        run(name, args.seed, args.samples)


if __name__ == "__main__":
    main()
