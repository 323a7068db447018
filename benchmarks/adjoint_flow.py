"""A trained adjoint sampler's probability flow: exact-density samples beside the SDE's, and OpenMM moves.

Loads a checkpoint written by ``benchmarks/adjoint_sampling.py --checkpoints DIR`` and draws the same number of
samples from the probability-flow ODE (exact density q, importance weights exp(−E/kT)/q) and from the SDE
(path weights). For each it prints mean E/kT, energy-W2 (E/kT) raw and importance-resampled against the
stored reference, distance-W2 (nm), normalised ESS and ln Z (reweighted); for the flow also the inversion
error |ln q forward − ln q backward|. It then runs Langevin MD of the target's OpenMM System
(``molfree.systems.load``) with a ``GeneratorMove`` from the flow between MD blocks and prints the
acceptance (3D targets). Writes ``runs/benchmarks/adjoint_flow.json``.

    python benchmarks/adjoint_flow.py --checkpoint runs/benchmarks/adjoint/lj13-full-seed0.pt
    python benchmarks/adjoint_flow.py --checkpoint ... --samples 256 --moves 100 --n-steps 60

Cost: every flow step evaluates the drift on N·dim copies of the batch (exact trace), so a flow sample of
LJ-13 costs about 39 × 4 × n_steps drift evaluations, and each move integrates the flow twice.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from adjoint_sampling import ROOT, TARGETS, T, drift, reference

from molfree import systems
from molfree.io import write_json
from molfree.samplers import (
    AdjointSampler,
    distance_w2,
    energy_w2,
    log_mean_exp,
    normalised_ess,
)
from molfree.samplers.metrics import importance_resample


def quality(x: torch.Tensor, reduced: torch.Tensor, log_w: torch.Tensor, ref: torch.Tensor,
            ref_e: torch.Tensor) -> dict[str, float]:
    """Raw and importance-resampled figures of samples ``x`` with E/kT ``reduced`` and log-weights ``log_w``."""
    finite = torch.isfinite(log_w)
    x, reduced, log_w = x[finite].double(), reduced[finite], log_w[finite]
    pick = importance_resample(log_w, len(log_w), torch.Generator().manual_seed(0))
    return {"n": len(log_w), "mean_reduced_energy": float(reduced.mean()), "energy_w2": energy_w2(reduced, ref_e),
            "distance_w2": distance_w2(x, ref), "energy_w2_reweighted": energy_w2(reduced[pick], ref_e),
            "ess": float(normalised_ess(log_w)), "log_z_reweighted": float(log_mean_exp(log_w))}


def moves(flow, name: str, n_moves: int, md_steps: int, seed: int) -> dict[str, float]:
    """Langevin MD (time step 0.005 ps, friction 1/ps) of the target's OpenMM System with one flow move after
    every ``md_steps`` steps; the acceptance of the moves."""
    import openmm
    from molfree.openmm import GeneratorMove

    system = systems.load(name)
    integrator = openmm.LangevinMiddleIntegrator(system.temperature, 1.0, 0.005)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(system.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(system.positions)
    context.setVelocitiesToTemperature(system.temperature, seed + 1)
    integrator.step(20 * md_steps)  # leave the minimum-energy start
    move = GeneratorMove(flow, temperature=system.temperature, randomOrientation=True, seed=seed)
    start = time.perf_counter()
    for _ in range(n_moves):
        integrator.step(md_steps)
        move.apply(context)
    return {"moves": n_moves, "md_steps_between": md_steps, "acceptance": move.acceptanceRate,
            "seconds_per_move": (time.perf_counter() - start) / n_moves}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint of benchmarks/adjoint_sampling.py")
    parser.add_argument("--target", default="lj13", choices=sorted(TARGETS))
    parser.add_argument("--samples", type=int, default=64, help="samples from each of the flow and the SDE")
    parser.add_argument("--n-steps", type=int, default=40, help="Runge-Kutta steps of the flow")
    parser.add_argument("--moves", type=int, default=20, help="GeneratorMove proposals in the OpenMM run (0: none)")
    parser.add_argument("--md-steps", type=int, default=100, help="MD steps between moves")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "runs" / "benchmarks" / "adjoint_flow.json"))
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        parser.error(f"no checkpoint at {args.checkpoint}")
    if min(args.samples, args.n_steps, args.md_steps, args.threads) < 1 or args.moves < 0:
        parser.error("--samples, --n-steps, --md-steps and --threads must be >= 1, --moves >= 0")
    torch.set_num_threads(args.threads)
    target = TARGETS[args.target]
    energy = target.energy()
    ref = reference(target, energy)
    ref_e = energy.reduced(ref, temperature=T)
    sampler = AdjointSampler(energy, drift(target), T, target.config, seed=args.seed).load(args.checkpoint)
    trained = sampler.energy_evaluations
    print(f"{args.target}: checkpoint at {trained} energy evaluations; reference mean E/kT {float(ref_e.mean()):.2f}")

    flow = sampler.probability_flow(n_steps=args.n_steps, batch_size=16)
    start = time.perf_counter()
    x, log_q = flow.propose(args.samples)
    flow_time = time.perf_counter() - start
    reduced = sampler.reduced_energy(x)
    inversion = (flow.log_prob(x[:4]) - log_q[:4]).abs().max()
    result = {"target": args.target, "checkpoint_energy_evaluations": trained, "n_steps": args.n_steps,
              "flow": {**quality(x, reduced, -reduced - log_q, ref, ref_e), "seconds_per_sample":
                       flow_time / args.samples, "inversion_error": float(inversion)}}
    sde = sampler.sample(args.samples, n_steps=target.sample_steps)
    result["sde"] = quality(sde.samples, sde.reduced_energies, sde.log_weights, ref, ref_e)
    for name in ("flow", "sde"):
        row = result[name]
        print(f"  {name:4s}: mean E/kT {row['mean_reduced_energy']:7.2f}  energy-W2 {row['energy_w2']:7.3g}  "
              f"distance-W2 {row['distance_w2']:.3g}  reweighted energy-W2 {row['energy_w2_reweighted']:.3g}  "
              f"ESS/n {row['ess']:.3f}  ln Z {row['log_z_reweighted']:.2f}")
    print(f"  flow: {result['flow']['seconds_per_sample']:.2f} s per sample, inversion error of ln q "
          f"{result['flow']['inversion_error']:.2g}")
    if args.moves and energy.dim == 3:
        result["openmm_moves"] = moves(flow, args.target, args.moves, args.md_steps, args.seed)
        row = result["openmm_moves"]
        print(f"  GeneratorMove in OpenMM: acceptance {row['acceptance']:.3f} over {row['moves']} moves "
              f"({row['seconds_per_move']:.1f} s per move)")
    write_json(args.out, {**result, "samples": args.samples, "reference_mean": float(ref_e.mean()),
                          "threads": args.threads})
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
