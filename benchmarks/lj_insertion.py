"""LJ solute in an LJ fluid: insertion free energy βμ_ex by neural TI, MBAR and Widom on the same samples, one run.

Prints ΔF with its error, the Monte Carlo moves, energy evaluations and wall time of each method, side by side:
neural TI from the coupled samples (training, then per-sample TI of the solute: its evaluations are of the
solute's interaction alone, N pairs each), MBAR over a 9-state soft-core ladder, Widom insertion into the λ = 0
samples.

    python benchmarks/lj_insertion.py [--quick] [--seed N]

Quick: the CI system (32 + 1 particles, ρ* = 0.5, T* = 2, cutoff 1.9σ; the size tests/test_lj_insertion.py uses).
Full: that, then 512 + 1 particles as in Máté, Fleuret & Bereau (state point chosen here: ρ* = 0.5, T* = 2,
cutoff 2.5σ). The full run is CPU-heavy (hours on one core) and has not been timed yet.
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


def run(name: str, seed: int) -> None:
    system, n_samples, sweeps, sweeps_per_state, steps = SETUPS[name]
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
    parser.add_argument("--quick", action="store_true", help="the CI system only")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in SETUPS if not args.quick else ["CI 32 + 1"]:
        run(name, args.seed)


if __name__ == "__main__":
    main()
