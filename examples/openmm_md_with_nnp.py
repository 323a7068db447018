"""Alanine dipeptide in vacuum with a molfree equivariant potential in a plain OpenMM Simulation.

    python examples/openmm_md_with_nnp.py [model.molfree] [--steps 300]

Without a model file, a small UNTRAINED demo model is built and saved in the temporary directory:
its energies are meaningless, it only shows the plumbing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from importlib import resources
from pathlib import Path

from openmm import LangevinMiddleIntegrator, Platform, unit
from openmm.app import PDBFile, Simulation, StateDataReporter
from openmmml import MLPotential  # 'molfree' is registered through molfree's entry point
from _demo_model import demo_model  # examples/_demo_model.py


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="molfree model file (default: build an untrained demo model)")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    model_path = args.model or demo_model(Path(tempfile.gettempdir()) / "molfree-untrained-demo.molfree")

    with resources.as_file(resources.files("molfree.data") / "alanine-dipeptide.pdb") as pdb_path:
        pdb = PDBFile(str(pdb_path))
    system = MLPotential("molfree", modelPath=str(model_path)).createSystem(pdb.topology, device="cpu")
    integrator = LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
    simulation = Simulation(pdb.topology, system, integrator, Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(pdb.positions)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    simulation.reporters.append(StateDataReporter(sys.stdout, 50, step=True, time=True, potentialEnergy=True,
                                                  temperature=True, speed=True))
    simulation.step(args.steps)


if __name__ == "__main__":
    main()
