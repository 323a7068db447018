"""Energy+forces time per evaluation: molfree's EquivariantPotential vs mace-torch's MACE, one run.

Both models get the same cutoff, channels, l_max, layers and body order (molfree's default
``correlation=3`` is MACE's), float32, 1 thread, neighbor list included (``--molfree-channels``
widens molfree alone: speed at equal accuracy rather than at equal architecture), on the same structures (alanine dipeptide and TIP3P water boxes). MACE runs in its own
venv (``.venv-mace``; ``make bench`` creates it) because it pins its own e3nn.

The same run prints the OpenMM bridge overhead: ms per step of an OpenMM ``Simulation`` whose only
force is ``molfree.openmm.NeuralForce`` against ms per direct ``PotentialEvaluator.evaluate`` call of
the same model. With ``--accuracy`` it also trains both models on one GFN2-xTB-labelled alanine
dipeptide dataset (OpenMM MD at 300 and 600 K, cached under ``--out``) with the same split, epochs,
batch size, learning rate and EMA decay, and prints their test MAEs and training wall times next to
the evaluation times above, then the energy conservation (NVE drift) of molfree's trained model.

    python benchmarks/potentials.py [--quick] [--max-atoms N] [--accuracy] [--mace-python .venv-mace/bin/python]
    python benchmarks/potentials.py --nve MODEL_FILE [--nve-ps 1]
"""
from __future__ import annotations

import os

# One thread everywhere: tblite's OpenMP, and torch inside OpenMM's force callback.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.io import write  # noqa: E402

from molfree import systems, units  # noqa: E402
from molfree.potentials import EquivariantPotential  # noqa: E402

#: Training epochs of the accuracy comparison for --quick and the full run (one dataset for both).
ACCURACY_EPOCHS = {True: 2, False: 40}
#: Time step of the bridge-overhead Simulation (fs): small enough that an untrained model's forces leave the
#: positions where the direct calls evaluate them (no neighbor-list rebuild in either path).
BRIDGE_TIMESTEP_FS = 0.001
#: Shared training recipe of the accuracy comparison.
TRAINING = {"seed": 0, "val_fraction": 0.1, "test_fraction": 0.1, "batch_size": 5, "eval_batch_size": 20,
            "learning_rate": 0.01, "ema_decay": 0.99}


def water_box(size_nm: float) -> Atoms:
    """A TIP3P water box from OpenMM's Modeller, as ASE Atoms."""
    import openmm.app as app
    from openmm import Vec3, unit

    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, model="tip3p", boxSize=Vec3(size_nm, size_nm, size_nm) * unit.nanometer)
    positions = np.asarray(modeller.getPositions().value_in_unit(unit.nanometer))
    symbols = [a.element.symbol for a in modeller.topology.atoms()]
    cell = np.diag([size_nm] * 3) * units.NM_TO_ANGSTROM
    return Atoms(symbols, positions=positions * units.NM_TO_ANGSTROM, cell=cell, pbc=True)


def structures(quick: bool, max_atoms: int | None) -> list[tuple[str, Atoms]]:
    """(name, atoms) of the benchmark structures: alanine dipeptide and water boxes up to ``max_atoms``."""
    frames = [("alanine dipeptide", systems.load("alanine-dipeptide-vacuum").to_ase())]
    for size in (1.87,) if quick else (1.87, 3.1, 4.66):
        atoms = water_box(size)
        if max_atoms is None or len(atoms) <= max_atoms:
            frames.append((f"water box {size} nm", atoms))
    return frames


def new_model(args, elements: tuple[str, ...] = ("H", "C", "N", "O")) -> EquivariantPotential:
    """An untrained float32 model with the benchmark's architecture (seeded)."""
    torch.manual_seed(0)
    return EquivariantPotential(list(elements), cutoff=args.cutoff, channels=molfree_channels(args), l_max=args.l_max,
                                n_layers=args.layers)


def molfree_channels(args) -> int:
    """molfree's channel count: ``--molfree-channels``, else the shared ``--channels``."""
    return args.molfree_channels or args.channels


def nm_positions_box(atoms: Atoms) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions ``[N, 3]`` and box ``[3, 3]`` (or None when open) in nm."""
    box = atoms.cell.array * units.ANGSTROM_TO_NM if atoms.pbc.all() else None
    return atoms.positions * units.ANGSTROM_TO_NM, box


def block_seconds(call: Callable[[], object], per_block: int = 1) -> float:
    """Mean seconds per call over ``per_block`` consecutive calls of ``call``."""
    start = time.perf_counter()
    for _ in range(per_block):
        call()
    return (time.perf_counter() - start) / per_block


def block_times(call: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``call`` after one warm-up call."""
    call()
    return [block_seconds(call) for _ in range(repeats)]


# ---------------------------------------------------------------------------------------------------------------
# speed


def time_molfree(atoms: Atoms, args) -> list[float]:
    energy = new_model(args).bind(atoms.numbers)
    x, box = (None if a is None else torch.tensor(a, dtype=torch.float32) for a in nm_positions_box(atoms))
    return block_times(lambda: energy.energy_and_forces(x, box), args.repeats)


def time_mace(path: Path, args) -> list[list[float]]:
    cmd = [args.mace_python, str(Path(__file__).with_name("_mace_worker.py")), str(path),
           "--cutoff-angstrom", str(args.cutoff * units.NM_TO_ANGSTROM), "--channels", str(args.channels),
           "--l-max", str(args.l_max), "--layers", str(args.layers), "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"MACE worker failed:\n{out.stderr[-2000:]}")
    return [json.loads(line)["seconds"] for line in out.stdout.splitlines() if line.startswith("{")]


def speed_table(frames: list[tuple[str, Atoms]], args) -> dict[str, tuple[float, float]]:
    """Print and return median ms per energy+forces evaluation, {name: (molfree, MACE)}."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "structures.xyz"
        write(path, [atoms for _, atoms in frames])
        mace = time_mace(path, args) if Path(args.mace_python).exists() else None
    print(f"energy+forces per evaluation, float32, 1 thread, cutoff {args.cutoff} nm, channels {args.channels} "
          f"(molfree {molfree_channels(args)}), "
          f"l_max {args.l_max}, {args.layers} layers; median of {args.repeats}")
    if args.quick or args.max_atoms is not None:
        print(f"(sizes capped: {'--quick' if args.quick else f'--max-atoms {args.max_atoms}'})")
    print(f"{'system':>24} {'atoms':>6} {'molfree ms':>11} {'MACE ms':>9} {'molfree/MACE':>13}")
    rows = {}
    for k, (name, atoms) in enumerate(frames):
        ours = statistics.median(time_molfree(atoms, args)) * 1000
        theirs = statistics.median(mace[k]) * 1000 if mace else float("nan")
        rows[name] = (ours, theirs)
        print(f"{name:>24} {len(atoms):>6} {ours:>11.1f} {theirs:>9.1f} {ours / theirs:>13.2f}", flush=True)
    if mace is None:
        print(f"(MACE not timed: {args.mace_python} not found; `make bench` creates it)", file=sys.stderr)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# OpenMM bridge overhead


def topology_of(atoms: Atoms):
    """An OpenMM Topology with the elements of ``atoms`` (one residue per atom) and its box when periodic."""
    from openmm import Vec3, app, unit

    topology = app.Topology()
    chain = topology.addChain()
    for symbol in atoms.get_chemical_symbols():
        topology.addAtom(symbol, app.Element.getBySymbol(symbol), topology.addResidue("UNK", chain))
    _, box = nm_positions_box(atoms)
    if box is not None:
        topology.setPeriodicBoxVectors([Vec3(*row) for row in box] * unit.nanometer)
    return topology


def neural_simulation(atoms: Atoms, model: EquivariantPotential):
    """A Simulation (Verlet, CPU platform, 1 thread) whose only force is a NeuralForce of ``model``."""
    import openmm
    from openmm import Vec3, app, unit

    from molfree.openmm import NeuralForce

    topology = topology_of(atoms)
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(mass)
    positions, box = nm_positions_box(atoms)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*(Vec3(*row) for row in box))
    system.addForce(NeuralForce(model, topology))
    integrator = openmm.VerletIntegrator(BRIDGE_TIMESTEP_FS * unit.femtosecond)
    platform = openmm.Platform.getPlatformByName("CPU")
    simulation = app.Simulation(topology, system, integrator, platform, {"Threads": "1"})
    simulation.context.setPositions(positions)
    return simulation


def bridge_times(atoms: Atoms, args) -> tuple[float, float, float]:
    """Median ms per direct PotentialEvaluator call, median ms per OpenMM step, largest displacement (nm)."""
    from openmm import unit

    from molfree.potentials.evaluator import PotentialEvaluator

    model = new_model(args)
    positions, box = nm_positions_box(atoms)
    evaluator = PotentialEvaluator(model, atoms.numbers)
    simulation = neural_simulation(atoms, model)
    calls = (lambda: evaluator.evaluate(positions, box), lambda: simulation.step(1))
    for call in calls:  # warm-up
        call()
    # blocks alternate between the two paths so that load from other processes hits both alike
    direct, step = zip(*([block_seconds(call, args.bridge_steps) for call in calls] for _ in range(args.repeats)))
    final = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    moved = float(np.linalg.norm(final - positions, axis=1).max())
    return statistics.median(direct) * 1000, statistics.median(step) * 1000, moved


def bridge_overhead(frames: list[tuple[str, Atoms]], args) -> None:
    """Print ms per OpenMM step with NeuralForce vs ms per direct PotentialEvaluator call, and the overhead."""
    print(f"\nOpenMM bridge overhead: Simulation (VerletIntegrator {BRIDGE_TIMESTEP_FS} fs, CPU platform, 1 thread) "
          f"with only molfree.openmm.NeuralForce\nvs PotentialEvaluator.evaluate on the start positions; same "
          f"untrained model as above; median of {args.repeats} alternating blocks of {args.bridge_steps} steps/calls")
    print(f"{'system':>24} {'atoms':>6} {'direct ms':>10} {'OpenMM ms/step':>15} {'steps/s':>8} {'overhead':>9}"
          f" {'max moved nm':>13}")
    for name, atoms in frames:
        direct, step, moved = bridge_times(atoms, args)
        print(f"{name:>24} {len(atoms):>6} {direct:>10.1f} {step:>15.1f} {1000 / step:>8.2f} "
              f"{100 * (step - direct) / direct:>8.1f}% {moved:>13.4f}", flush=True)
    print(f"(max moved: largest displacement during the Simulation; the neighbor list (skin 0.05 nm) is rebuilt "
          f"when an atom moves > 0.025 nm. The {BRIDGE_TIMESTEP_FS} fs step keeps the untrained model's large "
          f"forces from moving atoms: at 0.5 fs they travel > 0.1 nm in a few steps)")


# ---------------------------------------------------------------------------------------------------------------
# accuracy side by side


def labelled_dataset(out: Path, frames_per_temperature: int) -> Path:
    """Cached GFN2-xTB-labelled alanine dipeptide frames from OpenMM MD at 300 and 600 K (0.5 ps apart)."""
    from molfree.potentials.data import write_xyz
    from molfree.potentials.labelling import XTBReference, label_file
    from molfree.potentials.sampling import sample_md

    labelled = out / f"alanine-xtb-{frames_per_temperature}x2.xyz"
    if labelled.is_file():
        return labelled
    frames = out / f"alanine-md-{frames_per_temperature}x2.xyz"
    if not frames.is_file():
        write_xyz(frames, sample_md(systems.load("alanine-dipeptide-vacuum"), [300.0, 600.0],
                                    frames_per_temperature, interval_ps=0.5, seed=0))
    return label_file(frames, labelled, XTBReference(), progress=False)


def train_molfree(config, run_dir: Path) -> dict:
    """Train with molfree.potentials.training.train; test MAEs and wall seconds."""
    from molfree.potentials.training import train

    torch.set_num_threads(1)
    start = time.perf_counter()
    metrics = train(config, run_dir)
    return {**metrics["test"], "wall_seconds": time.perf_counter() - start}


def train_mace(split_files: dict[str, Path], run_dir: Path, epochs: int, args) -> dict:
    """Train with mace_run_train in the MACE venv (``_mace_train.py``); test MAEs and wall seconds."""
    cmd = [args.mace_python, str(Path(__file__).with_name("_mace_train.py")),
           "--train", str(split_files["train"]), "--valid", str(split_files["val"]), "--test", str(split_files["test"]),
           "--work-dir", str(run_dir), "--cutoff-angstrom", str(args.cutoff * units.NM_TO_ANGSTROM),
           "--channels", str(args.channels), "--l-max", str(args.l_max), "--layers", str(args.layers),
           "--epochs", str(epochs), "--batch-size", str(TRAINING["batch_size"]),
           "--eval-batch-size", str(TRAINING["eval_batch_size"]), "--lr", str(TRAINING["learning_rate"]),
           "--ema-decay", str(TRAINING["ema_decay"]), "--seed", str(TRAINING["seed"])]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"MACE training failed (log: {run_dir / 'mace_run_train.log'}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def accuracy(args, speed: dict[str, tuple[float, float]]) -> Path:
    """Train both models on the same data and split with the same budget; print test MAEs, wall and speed.
    Returns molfree's trained model file."""
    from molfree.potentials.data import read_xyz, write_xyz
    from molfree.potentials.training import TrainingConfig, split_indices

    epochs = args.epochs or ACCURACY_EPOCHS[args.quick]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = labelled_dataset(out, args.frames)
    config = TrainingConfig.from_dict({
        **TRAINING, "data": str(data), "max_epochs": epochs, "patience": epochs, "progress": False,
        "model": {"cutoff": args.cutoff, "channels": molfree_channels(args), "l_max": args.l_max,
                  "n_layers": args.layers}})
    run = out / f"train-{args.frames}x2-{epochs}ep-{molfree_channels(args)}ch"
    shutil.rmtree(run, ignore_errors=True)  # train from scratch: wall times must not include a resume
    frames = read_xyz(data)
    split = split_indices(len(frames), config)  # molfree's own split, written out for MACE
    split_files = {part: write_xyz(run / f"{part}.xyz", [frames[i] for i in indices]) for part, indices in split.items()}
    results = {"molfree": train_molfree(config, run / "molfree")}
    if Path(args.mace_python).exists():
        results["MACE"] = train_mace(split_files, run / "mace", epochs, args)
    print(f"\naccuracy side by side: GFN2-xTB (tblite) labels of alanine dipeptide, {len(frames)} frames from OpenMM "
          f"MD at 300 and 600 K ({data}),\nsplit train/val/test {len(split['train'])}/{len(split['val'])}/{len(split['test'])} "
          f"(seed {TRAINING['seed']}, shared); same budget: {epochs} epochs, batch {TRAINING['batch_size']}, "
          f"lr {TRAINING['learning_rate']}, EMA {TRAINING['ema_decay']}, 1 thread, float32; each with its own loss "
          f"weights and LR schedule;\nbest-validation EMA weights tested. Wall: the whole training call (molfree: "
          f"train() in process; MACE: the mace_run_train process incl. start-up, final error tables, JIT export)")
    names = list(speed)[:2]
    print(f"{'model':>8} {'force MAE meV/Å':>16} {'energy MAE meV/atom':>20} {'train wall s':>13} "
          + " ".join(f"{'ms/eval ' + n:>28}" for n in names))
    for column, (model, result) in enumerate(results.items()):
        times = " ".join(f"{speed[n][column]:>28.1f}" for n in names)
        print(f"{model:>8} {result['force_mae_mev_per_angstrom']:>16.1f} {result['energy_mae_mev_per_atom']:>20.2f} "
              f"{result['wall_seconds']:>13.0f} {times}")
    if "MACE" in results:
        ours, theirs = results["molfree"], results["MACE"]
        print(f"molfree/MACE: force MAE {ours['force_mae_mev_per_angstrom'] / theirs['force_mae_mev_per_angstrom']:.2f}"
              f", energy MAE {ours['energy_mae_mev_per_atom'] / theirs['energy_mae_mev_per_atom']:.2f}, training wall "
              f"{ours['wall_seconds'] / theirs['wall_seconds']:.2f}, time per evaluation "
              + ", ".join(f"{n} {speed[n][0] / speed[n][1]:.2f}" for n in names)
              + f" (evaluation times: the speed table above, molfree with {molfree_channels(args)} channels, MACE with "
              f"{args.channels}; the cost does not depend on weights)")
    return run / "molfree" / "model.pt"


def nve(model_path: Path, picoseconds: float) -> None:
    """Energy conservation of a trained model: OpenMM velocity-Verlet NVE of alanine dipeptide (vacuum topology)
    through NeuralForce, float32, 300 K start, at two time steps (drift per ns per atom, total-energy std)."""
    import openmm

    from molfree.md import nve_energy_drift
    from molfree.openmm import NeuralForce

    alanine = systems.load("alanine-dipeptide-vacuum")
    system = openmm.System()
    for atom in alanine.topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(NeuralForce(model_path, alanine.topology, dtype=torch.float32))
    print(f"\nNVE with the trained model {model_path} (alanine dipeptide, float32, {picoseconds:g} ps, Reference platform)")
    for timestep_fs in (0.5, 0.25):
        start = time.perf_counter()
        result = nve_energy_drift(system, alanine.positions, 300.0, timestep_fs, round(picoseconds * 1000 / timestep_fs))
        print(f"  {timestep_fs:g} fs: drift {result['drift']:.3g} kJ/mol/ns/atom, total-energy std "
              f"{result['std']:.3g} kJ/mol, range {np.ptp(result['totals']):.3g} kJ/mol "
              f"({time.perf_counter() - start:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cutoff", type=float, default=0.5, help="nm")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--molfree-channels", type=int, help="molfree's channels if not --channels (MACE keeps those)")
    parser.add_argument("--l-max", type=int, default=2)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="alanine dipeptide and the ~650-atom box only; with --accuracy, few epochs")
    parser.add_argument("--max-atoms", type=int, help="leave out water boxes with more atoms")
    parser.add_argument("--bridge-steps", type=int, default=3, help="OpenMM steps (direct calls) per timed block")
    parser.add_argument("--accuracy", action="store_true", help="also train both models and compare test MAEs")
    parser.add_argument("--frames", type=int, default=250, help="accuracy: MD frames per temperature")
    parser.add_argument("--epochs", type=int,
                        help=f"accuracy: training epochs of both models (default {ACCURACY_EPOCHS[False]}, "
                             f"{ACCURACY_EPOCHS[True]} with --quick)")
    parser.add_argument("--out", default="runs/bench-potentials", help="accuracy: data cache and training runs")
    parser.add_argument("--mace-python", default=".venv-mace/bin/python")
    parser.add_argument("--nve", metavar="MODEL", help="only the NVE energy-conservation check of a trained model file")
    parser.add_argument("--nve-ps", type=float, default=1.0, help="NVE length in ps (default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.nve:
        nve(Path(args.nve), args.nve_ps)
        return
    frames = structures(args.quick, args.max_atoms)
    speed = speed_table(frames, args)
    bridge_overhead(frames[:2], args)
    if args.accuracy:
        nve(accuracy(args, speed), args.nve_ps)


if __name__ == "__main__":
    main()
