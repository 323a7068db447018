"""How good is the alanine dipeptide ΔF reference? A long replica-exchange run, its block errors, a long
umbrella-sampling estimate along φ, and trained flows' ΔF against them (issue 5's |ΔF − ΔF_ref| ≤ 0.5 kT can
only be judged against a reference that is itself well inside 0.5 kT).

The replica exchange is ``molfree.workflows.bg``'s (the default setup of ``molfree bg train --system SYSTEM``:
300 K, replicas at 300/390/500/650 K in implicit solvent and 300–1120 K in vacuum, all frames reweighted to
300 K by MBAR) run for ``--reference-ps`` per replica (0: skipped) with its own seed, cached in ``--out``.
ΔF = −ln P(φ>0)/P(φ<0) in kT is printed from all frames (the delta-method error assumes independent frames and
is too small) and from
``--blocks`` consecutive blocks (their standard error is the honest one). Each RUN given (a ``molfree bg
train`` directory) has its flow samples' reweighted ΔF compared with the long reference and with the
run's own short one.

``--umbrella-windows K`` adds replica-exchange umbrella sampling along φ (``molfree.freeenergy.umbrella``): K
windows evenly spaced on the circle, each with the periodic harmonic bias ½ k (φ − φ_k)² (``--umbrella-k``
kJ/mol/rad²), started one after the other upwards in φ (``--umbrella-downwards``: the other way round) with the
reference's Langevin integrator and hydrogen masses, neighbours swapping every ps, unbiased by MBAR; its error
is the standard error over ``--blocks`` consecutive blocks of every window. It does not wait for φ barrier
crossings, but ψ relaxes slowly in the φ > 0 windows: compare the two directions before trusting it.

    python benchmarks/bg_reference.py --reference-ps 2400 --umbrella-windows 72 runs/bg-alanine-dipeptide-implicit
    python benchmarks/bg_reference.py --system alanine-dipeptide-vacuum --reference-ps 0 --umbrella-windows 72
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from molfree import systems
from molfree.flows import basin_free_energy
from molfree.freeenergy.umbrella import UmbrellaSamples, torsion_umbrella
from molfree.workflows.bg import (SYSTEMS, BGSetup, analysed_reference, hydrogen_repartitioned, phi_psi,
                                  phi_psi_indices, reference_delta_f, umbrella_delta_f)

RUN_FILES = ("samples.dcd", "topology.pdb", "log_weights.npy", "metrics.json")


def flow_delta_f(run: Path, indices: np.ndarray) -> tuple[float, float, float]:
    """(ΔF, error, the run's own reference ΔF) in kT from a ``molfree bg train`` directory's samples."""
    import mdtraj

    traj = mdtraj.load(str(run / "samples.dcd"), top=str(run / "topology.pdb"))
    angles = phi_psi(traj.xyz, indices)
    delta_f, error = basin_free_energy(angles[:, 0], np.load(run / "log_weights.npy"))
    own = json.loads((run / "metrics.json").read_text())["reference"]["delta_f_kt"]
    return delta_f, error, own


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="molfree bg train directories to compare")
    parser.add_argument("--system", choices=SYSTEMS, default=SYSTEMS[0])
    parser.add_argument("--reference-ps", type=float, default=2400.0, help="per replica (default 2400; 0: none)")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--seed", type=int, default=11, help="replica-exchange seed (not the flows')")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/bg-reference"))
    parser.add_argument("--umbrella-windows", type=int, default=0, help="umbrella windows along φ (0: none)")
    parser.add_argument("--umbrella-k", type=float, default=400.0, help="kJ/mol/rad² (default 400)")
    parser.add_argument("--umbrella-ps", type=float, default=40.0, help="production per window (default 40)")
    parser.add_argument("--umbrella-seed", type=int, default=None, help="umbrella MD seed (default: --seed)")
    parser.add_argument("--umbrella-downwards", action="store_true", help="start the windows downwards in φ")
    args = parser.parse_args(argv)
    if args.blocks < 2:
        parser.error("--blocks must be >= 2")
    missing = [str(run / name) for run in args.runs for name in RUN_FILES if not (run / name).is_file()]
    if missing:
        parser.error(f"not a finished `molfree bg train` directory: {missing[0]} not found")
    torch.set_num_threads(1)
    setup = BGSetup(system=args.system, reference_ps=args.reference_ps or 1.0, seed=args.seed)
    system = systems.load(setup.system, temperature=setup.temperature, platform="CPU")
    indices = phi_psi_indices(system.topology)
    references = {}
    if args.reference_ps:
        reference = analysed_reference(system, setup, args.out)
        delta_f, error, blocks = reference_delta_f(reference, setup, args.blocks)
        references["all replica frames"] = delta_f
        references["replica block mean"] = float(np.mean(blocks))
        print(f"replica exchange: {args.reference_ps:g} ps × {len(setup.replica_temperatures)} replicas "
              f"({float(reference['seconds']):.0f} s): ΔF = {delta_f:.3f} kT from all frames; {args.blocks} blocks "
              f"of {args.reference_ps / args.blocks:g} ps: {np.round(blocks, 2).tolist()}, mean {np.mean(blocks):.3f} "
              f"± {error:.3f} kT (block standard error)")
    if args.umbrella_windows:
        centres = np.linspace(-np.pi, np.pi, args.umbrella_windows, endpoint=False)
        if args.umbrella_downwards:
            centres = centres[::-1].copy()
        seed = args.seed if args.umbrella_seed is None else args.umbrella_seed
        system_tag = "" if args.system == SYSTEMS[0] else args.system + "-"
        direction_tag = "-down" if args.umbrella_downwards else ""
        cache = args.out / (f"umbrella-{system_tag}{args.umbrella_windows}-{args.umbrella_k:g}-{args.umbrella_ps:g}-"
                            f"reus{direction_tag}-{seed}.npy")
        if cache.is_file():
            samples = UmbrellaSamples(np.load(cache), centres, args.umbrella_k, setup.temperature)
        else:
            start = time.perf_counter()
            samples = torsion_umbrella(hydrogen_repartitioned(system, setup.hydrogen_mass), system.positions,
                                       indices[0], centres, args.umbrella_k, setup.temperature,
                                       timestep_fs=setup.timestep_fs, production_ps=args.umbrella_ps, seed=seed)
            print(f"umbrella sampling took {time.perf_counter() - start:.0f} s")
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, samples.theta)
        delta_f, error, blocks = umbrella_delta_f(samples, args.blocks)
        references["umbrella"] = delta_f
        print(f"umbrella sampling (seed {seed}, started {'down' if args.umbrella_downwards else 'up'}wards): "
              f"{args.umbrella_windows} windows × {args.umbrella_ps:g} ps, "
              f"k = {args.umbrella_k:g} kJ/mol/rad²: ΔF = {delta_f:.3f} ± {error:.3f} kT (blocks "
              f"{np.round(blocks, 2).tolist()})")
    for run in args.runs:
        flow, flow_error, own = flow_delta_f(run, indices)
        against = "; ".join(f"{abs(flow - value):.3f} ({name})" for name, value in references.items())
        print(f"flow {run}: ΔF = {flow:.3f} ± {flow_error:.3f} kT; |ΔF − ΔF_ref| = {against}; its own reference "
              f"{own:.3f}")


if __name__ == "__main__":
    main()
