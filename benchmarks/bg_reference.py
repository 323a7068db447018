"""How good is the alanine dipeptide ΔF reference? A long replica-exchange run, its block errors, and trained
flows' ΔF against it (issue 5's |ΔF − ΔF_ref| ≤ 0.5 kT can only be judged against a reference that is itself
well inside 0.5 kT).

The reference is ``molfree.workflows.bg``'s replica exchange (the default setup of ``molfree bg train``:
amber96 + OBC1, 300 K, replicas at 300/390/500/650 K, all frames reweighted to 300 K by MBAR) run for
``--reference-ps`` per replica with its own seed, cached in ``--out``. ΔF = −ln P(φ>0)/P(φ<0) in kT is
printed from all frames (the delta-method error assumes independent frames and is too small) and from
``--blocks`` consecutive blocks (their standard error is the honest one). Each RUN given (a ``molfree bg
train`` directory) has its flow samples' reweighted ΔF compared with the long reference and with the
run's own short one.

    python benchmarks/bg_reference.py --reference-ps 2400 runs/bg-alanine-dipeptide-implicit
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from molfree import systems
from molfree.flows import basin_free_energy
from molfree.workflows.bg import BGSetup, phi_psi, phi_psi_indices, reference_data, reference_log_weights


def reference_delta_f(reference: dict, setup: BGSetup, indices: np.ndarray, frames: slice) -> tuple[float, float]:
    """ΔF (kT) and its independent-frame error from the replica-exchange frames ``frames`` of every replica."""
    positions = reference["positions"][:, frames]
    angles = phi_psi(positions.reshape(-1, positions.shape[-2], 3), indices)
    log_w = reference_log_weights(reference["energies"][:, frames], setup.replica_temperatures,
                                  [setup.temperature])[0]
    return basin_free_energy(angles[:, 0], log_w)


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
    parser.add_argument("--reference-ps", type=float, default=2400.0, help="per replica (default 2400)")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--seed", type=int, default=11, help="replica-exchange seed (not the flows')")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/bg-reference"))
    args = parser.parse_args(argv)
    if args.blocks < 2:
        parser.error("--blocks must be >= 2")
    missing = [str(run / name) for run in args.runs for name in RUN_FILES if not (run / name).is_file()]
    if missing:
        parser.error(f"not a finished `molfree bg train` directory: {missing[0]} not found")
    torch.set_num_threads(1)
    setup = BGSetup(reference_ps=args.reference_ps, seed=args.seed)
    system = systems.load(setup.system, temperature=setup.temperature, platform="CPU")
    indices = phi_psi_indices(system.topology)
    reference = reference_data(system, setup, args.out)
    n_frames = reference["energies"].shape[1]
    delta_f, error = reference_delta_f(reference, setup, indices, slice(None))
    print(f"reference: {args.reference_ps:g} ps × {len(setup.replica_temperatures)} replicas "
          f"({float(reference['seconds']):.0f} s): ΔF = {delta_f:.3f} ± {error:.3f} kT (all frames, independent-frame "
          f"error)")
    edges = np.linspace(0, n_frames, args.blocks + 1).astype(int)
    blocks = np.array([reference_delta_f(reference, setup, indices, slice(a, b))[0]
                       for a, b in itertools.pairwise(edges)])
    block_error = blocks.std(ddof=1) / np.sqrt(args.blocks)
    print(f"{args.blocks} blocks of {args.reference_ps / args.blocks:g} ps: {np.round(blocks, 2).tolist()}; "
          f"mean {blocks.mean():.3f} ± {block_error:.3f} kT (block standard error)")
    for run in args.runs:
        flow, flow_error, own = flow_delta_f(run, indices)
        print(f"flow {run}: ΔF = {flow:.3f} ± {flow_error:.3f} kT; |ΔF − ΔF_ref| = {abs(flow - delta_f):.3f} (all "
              f"frames), {abs(flow - blocks.mean()):.3f} (block mean); its own reference {own:.3f}")


if __name__ == "__main__":
    main()
