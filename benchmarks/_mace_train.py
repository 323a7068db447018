"""Trains mace-torch's MACE with its own CLI (``mace_run_train``) and tests it; run with the mace venv's Python.

The train/valid/test files are extended XYZ with ``energy`` (eV) and ``forces`` (eV/Å). The CLI's
output goes to ``<work-dir>/mace_run_train.log``. Prints one JSON line: {"wall_seconds",
"energy_mae_mev_per_atom", "force_mae_mev_per_angstrom"}, with the test MAEs
computed here as molfree computes its own (mean over structures of |ΔE|/N; mean over force components).
"""
import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from _mace_worker import CORRELATION, MLP_IRREPS, NUM_BESSEL, NUM_CUTOFF_BASIS, energy_forces, hidden_irreps

warnings.filterwarnings("ignore")


def train_command(args) -> list[str]:
    """``mace_run_train`` arguments for the architecture of ``_mace_worker.build`` and the given budget."""
    options = {
        "name": "mace", "work_dir": args.work_dir, "seed": args.seed, "device": "cpu", "default_dtype": "float32",
        "train_file": args.train, "valid_file": args.valid, "energy_key": "energy", "forces_key": "forces",
        "E0s": "average", "model": "MACE", "r_max": args.cutoff_angstrom, "num_radial_basis": NUM_BESSEL,
        "num_cutoff_basis": NUM_CUTOFF_BASIS, "max_ell": args.l_max, "correlation": CORRELATION,
        "num_interactions": args.layers, "hidden_irreps": hidden_irreps(args.channels, args.l_max),
        "MLP_irreps": MLP_IRREPS, "batch_size": args.batch_size, "valid_batch_size": args.eval_batch_size,
        "lr": args.lr, "max_num_epochs": args.epochs, "patience": args.epochs, "ema_decay": args.ema_decay,
        "eval_interval": 1, "plot": False, "save_cpu": None, "ema": None,
    }
    executable = Path(sys.executable).with_name("mace_run_train")
    return [str(executable)] + [item for key, value in options.items()
                                for item in ([f"--{key}"] if value is None else [f"--{key}", str(value)])]


def test_errors(model_path: Path, test_file: str, cutoff_a: float) -> dict:
    """Per-atom energy MAE (meV/atom) and force-component MAE (meV/Å) of the saved model on ``test_file``."""
    from mace import tools

    model = torch.load(model_path, map_location="cpu", weights_only=False)
    table = tools.AtomicNumberTable([int(z) for z in model.atomic_numbers])
    energy_errors, force_errors = [], []
    for atoms in read(test_file, ":"):
        energy, forces = energy_forces(model, atoms, table, cutoff_a)
        energy_errors.append(abs(energy - atoms.get_potential_energy()) / len(atoms))
        force_errors.append(np.abs(forces - atoms.get_forces()).ravel())
    return {"energy_mae_mev_per_atom": 1000 * float(np.mean(energy_errors)),
            "force_mae_mev_per_angstrom": 1000 * float(np.mean(np.concatenate(force_errors)))}


def main():
    parser = argparse.ArgumentParser()
    for name in ("--train", "--valid", "--test", "--work-dir"):
        parser.add_argument(name, required=True)
    parser.add_argument("--cutoff-angstrom", type=float, required=True)
    for name in ("--channels", "--l-max", "--layers", "--epochs", "--batch-size", "--eval-batch-size"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--ema-decay", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(work / "mace_run_train.log", "w") as log:
        subprocess.run(train_command(args), stdout=log, stderr=subprocess.STDOUT, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    print(json.dumps({"wall_seconds": wall, **test_errors(work / "mace.model", args.test, args.cutoff_angstrom)}))


if __name__ == "__main__":
    main()
