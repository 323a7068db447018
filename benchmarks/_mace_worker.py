"""Times mace-torch's MACE on structures from an extxyz file; run with the mace venv's Python.

Prints one JSON line per structure: {"n_atoms", "seconds": [...]} (energy + forces, neighbor list included).
The architecture constants and :func:`energy_forces` are shared with ``_mace_train.py``.
"""
import argparse
import json
import time
import warnings

import numpy as np
import torch
from ase.io import read

warnings.filterwarnings("ignore")

#: Radial Bessel functions, polynomial-cutoff degree, correlation order and readout MLP of every MACE built here.
NUM_BESSEL = 8
NUM_CUTOFF_BASIS = 6
CORRELATION = 3
MLP_IRREPS = "16x0e"


def hidden_irreps(channels: int, l_max: int) -> str:
    """Node irreps with ``channels`` copies of every l up to ``l_max`` (parity (-1)^l)."""
    return "+".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(l_max + 1))


def build(z, cutoff_a, channels, l_max, n_layers):
    from e3nn import o3
    from mace import modules

    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.MACE(r_max=cutoff_a, num_bessel=NUM_BESSEL, num_polynomial_cutoff=NUM_CUTOFF_BASIS,
                        max_ell=l_max, interaction_cls=block, interaction_cls_first=block,
                        num_interactions=n_layers, num_elements=len(z),
                        hidden_irreps=o3.Irreps(hidden_irreps(channels, l_max)), MLP_irreps=o3.Irreps(MLP_IRREPS),
                        atomic_energies=np.zeros(len(z)), avg_num_neighbors=20.0, atomic_numbers=z,
                        correlation=CORRELATION, gate=torch.nn.functional.silu)


def energy_forces(model, atoms, z_table, cutoff_a):
    """Energy (eV) and forces (eV/Å, numpy) of ``model`` on one ``ase.Atoms``, neighbor list included."""
    from mace import data
    from mace.tools import torch_geometric

    item = data.AtomicData.from_config(data.config_from_atoms(atoms), z_table=z_table, cutoff=cutoff_a)
    batch = next(iter(torch_geometric.dataloader.DataLoader([item], batch_size=1)))
    out = model(batch.to_dict(), compute_force=True)
    return float(out["energy"].sum()), out["forces"].detach().numpy()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("xyz")
    parser.add_argument("--cutoff-angstrom", type=float, required=True)
    parser.add_argument("--channels", type=int, required=True)
    parser.add_argument("--l-max", type=int, required=True)
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from mace import tools

    frames = read(args.xyz, ":")
    z = sorted({int(n) for a in frames for n in a.numbers})
    torch.manual_seed(0)
    model = build(z, args.cutoff_angstrom, args.channels, args.l_max, args.layers)
    table = tools.AtomicNumberTable(z)
    for atoms in frames:
        energy_forces(model, atoms, table, args.cutoff_angstrom)
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            energy_forces(model, atoms, table, args.cutoff_angstrom)
            seconds.append(time.perf_counter() - start)
        print(json.dumps({"n_atoms": len(atoms), "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
