"""Methanol with a molfree equivariant potential in ASE: BFGS relaxation, then Langevin MD.

    python examples/ase_md_with_nnp.py [model.molfree] [--steps 300]

Without a model file, a small UNTRAINED demo model is built and saved in the temporary directory:
its energies are meaningless, it only shows the plumbing.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from ase import units
from ase.build import molecule
from ase.md import MDLogger
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta
from ase.optimize import BFGS
from molfree.ase import MolfreeCalculator
from _demo_model import demo_model  # examples/_demo_model.py


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="molfree model file (default: build an untrained demo model)")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    model_path = args.model or demo_model(Path(tempfile.gettempdir()) / "molfree-untrained-demo.molfree")

    atoms = molecule("CH3OH")
    atoms.calc = MolfreeCalculator(model_path)
    BFGS(atoms).run(fmax=0.05, steps=100)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dynamics = Langevin(atoms, timestep=0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, fixcm=False,
                        rng=np.random.default_rng(1))
    dynamics.attach(MDLogger(dynamics, atoms, "-", peratom=False), interval=50)
    dynamics.run(args.steps)


if __name__ == "__main__":
    main()
