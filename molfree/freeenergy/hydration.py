"""Hydration free energy by alchemical decoupling, Hamiltonian replica exchange and MBAR.

Thermodynamic cycle and signs (all ΔG in kcal/mol in results, kT inside):

    ΔG_solvent = G(solute decoupled in water) − G(solute coupled in water)   (solvent leg)
    ΔG_gas     = G(solute decoupled in vacuum) − G(solute coupled in vacuum) (gas leg)
    ΔG_hyd     = G(in water) − G(in vacuum) = −(ΔG_solvent − ΔG_gas)

Both legs run the same λ schedule (:func:`~molfree.freeenergy.alchemy.lambda_schedule`,
electrostatics off first, then sterics) with ``openmm.app.ReplicaExchangeSampler``
(LangevinMiddleIntegrator). Because :func:`~molfree.freeenergy.alchemy.alchemical_system`
keeps every intra-solute interaction, the vacuum Hamiltonian does not depend on λ, so the gas
leg comes out as 0 (to round-off); it is sampled and estimated the same way anyway, so a solute
whose vacuum Hamiltonian did change would be accounted for.

Analysis of each leg: the per-iteration sum of the replicas' reduced potentials gives the
equilibration time (``detect_equilibration``) and the decorrelated iterations (``decorrelate``);
MBAR on those samples gives ΔG with its error and the overlap matrix. Poor overlap between
neighbouring states raises :class:`~molfree.freeenergy.PoorOverlapError` after writing the
diagnostics. Sampling checkpoints atomically (``checkpoint.npz``: the reduced potentials so far,
replica states and conformations, the exchange RNG) so an interrupted run resumes where its
last checkpoint left off.

Run directory: ``result.json``, ``report.md``, ``convergence.png``, ``overlap.png`` and one
folder per leg (``solvent/``, ``gas/``) with ``checkpoint.npz`` and ``u_kln.npz``.
"""
from __future__ import annotations

import copy
import io
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import units
from ..io import atomic_write_bytes, atomic_write_text, write_json
from .alchemy import alchemical_system, context_parameters, lambda_schedule
from .estimators import PoorOverlapError, mbar
from .timeseries import convergence, decorrelate, detect_equilibration

#: Shipped solutes accepted by :func:`hydration_free_energy`.
SOLUTES = ("methane", "water")
#: Yardsticks per shipped solute (kcal/mol, with the stated error or None): a calculation with the same
#: force field (FreeSolv's GAFF/TIP3P for methane; TIP3P water in TIP3P) and experiment.
REFERENCES = {"methane": {"freesolv_gaff_tip3p": (2.45, 0.01), "experiment": (2.00, 0.20)},
              "water": {"tip3p_in_tip3p": (-6.10, None), "experiment": (-6.33, None)}}
#: λ_electrostatics states a shipped solute needs for neighbour overlap (discharging water's ±0.8 e takes more).
ELECTROSTATIC_STATES = {"methane": 3, "water": 6}

SMILES_UNSUPPORTED = ("SMILES input is not supported: parameterising an arbitrary molecule needs openff-toolkit or "
              "AmberTools (antechamber), which are conda-only, so a pip install cannot do it; give a PDB/SDF "
              "with --solute-file and an OpenMM force-field XML with --forcefield instead")


@dataclass
class SamplingOptions:
    """Replica-exchange settings (per leg).

    Attributes:
        iterations: exchange iterations recorded for analysis.
        steps_per_iteration: MD steps per replica between exchanges.
        equilibration_steps: MD steps per replica at its own state before the first iteration.
        timestep: ps.
        friction: Langevin collision rate, 1/ps.
        checkpoint_interval: iterations between checkpoints.
        platform: OpenMM platform name ('CPU' gets the Threads property).
        threads: CPU threads (None: all cores).
        seed: seeds the integrator, the velocities and Python's ``random`` (used for exchanges).
    """

    iterations: int = 1000
    steps_per_iteration: int = 500
    equilibration_steps: int = 5000
    timestep: float = 0.002
    friction: float = 1.0
    checkpoint_interval: int = 10
    platform: str = "CPU"
    threads: int | None = None
    seed: int | None = None

    def __post_init__(self):
        for name in ("iterations", "steps_per_iteration", "checkpoint_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.equilibration_steps < 0 or not self.timestep > 0 or not self.friction > 0:
            raise ValueError("need equilibration_steps >= 0, timestep > 0 and friction > 0")


@dataclass
class Sampling:
    """Output of :func:`replica_exchange`.

    Attributes:
        u_kln: ``[K, K, N]`` reduced potentials (kT): sample n drawn in state k, evaluated in state l.
        replica_states: ``[N, K]`` state of each replica at each iteration.
        iterations_run: iterations simulated by this call (excludes those restored from a checkpoint).
        wall_seconds: wall time of the whole run, s: this call plus earlier calls up to their last checkpoint.
        md_steps: MD steps over all replicas (equilibration included) of the whole run.
        energy_evaluations: potential-energy evaluations for u_kln of the whole run (K² per iteration).
    """

    u_kln: np.ndarray
    replica_states: np.ndarray
    iterations_run: int
    wall_seconds: float
    md_steps: int
    energy_evaluations: int


@dataclass
class LegResult:
    """MBAR analysis of one leg: ΔF = F(decoupled) − F(coupled) in kT, diagnostics and convergence."""

    delta_f: float
    error: float
    overlap: list
    neighbour_overlap: list
    equilibration_iterations: int
    statistical_inefficiency: float
    n_uncorrelated: int
    n_iterations: int
    forward: list = field(default_factory=list)
    reverse: list = field(default_factory=list)


def _check_states(states) -> list[tuple[float, float]]:
    states = [tuple(float(v) for v in state) for state in states]
    if len(states) < 2 or any(len(state) != 2 for state in states):
        raise ValueError("need at least two (lambda_electrostatics, lambda_sterics) states")
    for state in states:
        context_parameters(state)
    return states


def _random_state_json() -> str:
    version, internal, gauss = random.getstate()
    return json.dumps([version, list(internal), gauss])


def _set_random_state(text: str) -> None:
    version, internal, gauss = json.loads(text)
    random.setstate((version, tuple(internal), gauss))


def _save_checkpoint(path: Path, sampler, energies: list, replica_states: list, meta: dict, md_steps: int,
                     wall_seconds: float) -> None:
    """One atomic ``.npz``: reduced potentials ``[n, K, K]`` so far, replica states, conformations, RNG, and the
    run's MD steps and wall seconds so far."""
    import openmm

    buffer = io.BytesIO()
    np.savez(buffer, u=np.array(energies, dtype=np.float64).reshape(-1, len(meta["states"]), len(meta["states"])),
             replica_states=np.array(replica_states, dtype=np.int64).reshape(-1, len(meta["states"])),
             conformations=np.array([openmm.XmlSerializer.serialize(s) for s in sampler.replicaConformation]),
             replica_state_index=np.array(sampler.replicaStateIndex, dtype=np.int64),
             iteration=sampler.currentIteration, md_steps=md_steps, wall_seconds=wall_seconds,
             random_state=_random_state_json(),
             meta=json.dumps(meta, sort_keys=True))
    atomic_write_bytes(path, buffer.getvalue())


def replica_exchange(system, topology, positions, solute_atoms: Sequence[int], states, temperature: float,
                     run_dir: str | os.PathLike, options: SamplingOptions | None = None,
                     progress: bool = False) -> Sampling:
    """Hamiltonian replica exchange over alchemical states, resumable from ``run_dir/checkpoint.npz``.

    Args:
        system: ``openmm.System`` (made alchemical here with :func:`alchemical_system`).
        topology: ``openmm.app.Topology`` of the system.
        positions: ``[N, 3]`` starting positions, nm (minimised in state 0 before equilibration).
        solute_atoms: indices of the decoupled particles.
        states: K ``(λ_elec, λ_sterics)`` pairs, each in [0, 1].
        temperature: K.
        run_dir: folder for the checkpoint and ``u_kln.npz``; an existing checkpoint of the same
            run (same states, temperature, particle count and steps per iteration) is resumed.
        options: :class:`SamplingOptions` (None: the defaults).
        progress: show a tqdm bar on stderr.

    Returns:
        :class:`Sampling` with ``u_kln [K, K, options.iterations]``.
    """
    import openmm
    from openmm import app, unit
    from tqdm import tqdm

    states = _check_states(states)
    options = options or SamplingOptions()
    n_states = len(states)
    run_dir = Path(run_dir)
    checkpoint = run_dir / "checkpoint.npz"
    meta = {"states": states, "temperature": float(temperature), "n_particles": system.getNumParticles(),
            "steps_per_iteration": options.steps_per_iteration, "solute_atoms": sorted(int(i) for i in solute_atoms)}
    meta = json.loads(json.dumps(meta))  # as it reads back from the checkpoint (tuples become lists)
    start = time.perf_counter()

    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, options.friction / unit.picosecond,
                                                 options.timestep * unit.picosecond)
    if options.seed is not None:
        integrator.setRandomNumberSeed(options.seed)
        random.seed(options.seed)
    platform = openmm.Platform.getPlatformByName(options.platform)
    properties = {"Threads": str(options.threads or os.cpu_count() or 1)} if options.platform == "CPU" else {}
    simulation = app.Simulation(topology, alchemical_system(system, solute_atoms), integrator, platform, properties)
    simulation.context.setPositions(np.asarray(positions) * unit.nanometer)
    parameters = [context_parameters(state) for state in states]
    sampler = app.ReplicaExchangeSampler(parameters, simulation, options.steps_per_iteration)

    energies: list = []
    replica_states: list = []
    md_steps, earlier_seconds = 0, 0.0
    if checkpoint.exists():
        saved = np.load(checkpoint, allow_pickle=False)
        if json.loads(str(saved["meta"])) != meta:
            raise ValueError(f"{checkpoint} belongs to a different run (states, temperature, system or steps "
                             "per iteration differ); choose another run directory")
        energies, replica_states = list(saved["u"]), list(saved["replica_states"])
        sampler.replicaConformation = [openmm.XmlSerializer.deserialize(str(s)) for s in saved["conformations"]]
        sampler.replicaStateIndex = [int(k) for k in saved["replica_state_index"]]
        sampler._previousReplicaStateIndex = sampler.replicaStateIndex[:]  # no velocity rescaling pending
        sampler.currentIteration = int(saved["iteration"])
        md_steps = int(saved["md_steps"])
        earlier_seconds = float(saved["wall_seconds"]) if "wall_seconds" in saved.files else 0.0
        _set_random_state(str(saved["random_state"]))
    else:
        simulation.minimizeEnergy(maxIterations=1000)
        if options.seed is None:
            simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin)
        else:
            simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin, options.seed)
        sampler.replicaConformation = [simulation.context.getState(positions=True, velocities=True,
                                                                   parameters=True)] * n_states
        if options.equilibration_steps:
            for replica in range(n_states):
                sampler.simulateReplica(replica, options.equilibration_steps)
            md_steps = n_states * options.equilibration_steps
        _save_checkpoint(checkpoint, sampler, energies, replica_states, meta, md_steps,
                         time.perf_counter() - start)

    kt = units.kT(temperature)

    def record(replica_exchange_sampler) -> None:  # called after the energies, before the exchanges
        reduced = np.array(replica_exchange_sampler.replicaStateEnergy.value_in_unit(unit.kilojoule_per_mole)) / kt
        energies.append(reduced)
        replica_states.append(list(replica_exchange_sampler.replicaStateIndex))

    sampler.reporters.append(record)
    remaining = max(options.iterations - sampler.currentIteration, 0)
    for _ in tqdm(range(remaining), desc=f"replica exchange ({run_dir.name})", disable=not progress,
                  initial=sampler.currentIteration, total=options.iterations):
        sampler.simulate(1)
        md_steps += n_states * options.steps_per_iteration
        iteration = sampler.currentIteration
        if iteration % options.checkpoint_interval == 0 or iteration == options.iterations:
            _save_checkpoint(checkpoint, sampler, energies, replica_states, meta, md_steps,
                             earlier_seconds + time.perf_counter() - start)

    u = np.array(energies, dtype=np.float64)[:options.iterations]  # [N, replica, state l]
    replica = np.array(replica_states, dtype=np.int64)[:options.iterations]  # [N, replica] -> state k
    order = np.argsort(replica, axis=1)  # order[n, k]: replica that was in state k
    u_kln = np.take_along_axis(u, order[:, :, None], axis=1).transpose(1, 2, 0)
    buffer = io.BytesIO()
    np.savez(buffer, u_kln=u_kln, states=np.array(states), temperature=temperature)
    atomic_write_bytes(run_dir / "u_kln.npz", buffer.getvalue())
    return Sampling(u_kln=u_kln, replica_states=replica, iterations_run=remaining,
                    wall_seconds=earlier_seconds + time.perf_counter() - start, md_steps=md_steps,
                    energy_evaluations=n_states * n_states * u.shape[0])


def _u_kn(u_kln: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """``u_kn [K, K·M]`` and ``n_k`` for the iterations ``samples [M]`` of ``u_kln [K, K, N]``."""
    n_states = u_kln.shape[0]
    block = u_kln[:, :, samples]
    return block.transpose(1, 0, 2).reshape(n_states, -1), [samples.size] * n_states


def analyse_u_kln(u_kln, min_overlap: float = 0.03,
                  fractions: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0)) -> LegResult:
    """MBAR on decorrelated samples of ``u_kln [K, K, N]`` (kT) after automatic equilibration detection.

    ``forward``/``reverse`` hold ``[fraction, ΔF, error]`` rows (kT) from the first/last fraction of
    the decorrelated samples. Raises :class:`PoorOverlapError` if a neighbour overlap is below
    ``min_overlap`` (with the full data).
    """
    u_kln = np.asarray(u_kln, dtype=np.float64)
    if u_kln.ndim != 3 or u_kln.shape[0] != u_kln.shape[1] or u_kln.shape[2] < 3:
        raise ValueError(f"u_kln must be [K, K, N] with N >= 3, got {u_kln.shape}")
    diagonal = np.einsum("kkn->n", u_kln)  # total reduced potential of the replicas per iteration
    t0, g, _ = detect_equilibration(diagonal)
    samples = t0 + decorrelate(diagonal[t0:])
    result = mbar(*_u_kn(u_kln, samples), min_overlap=min_overlap)

    usable = [f for f in fractions if round(f * samples.size) >= 2]

    def estimate(first: bool):
        def on_fraction(fraction: float) -> tuple[float, float]:
            count = round(fraction * samples.size)
            total = mbar(*_u_kn(u_kln, samples[:count] if first else samples[-count:]), min_overlap=0).total
            return total.delta_f, total.error
        return on_fraction

    def block(first: bool) -> list:
        return convergence(estimate(first), usable).tolist() if usable else []

    return LegResult(delta_f=result.total.delta_f, error=result.total.error, overlap=result.overlap.tolist(),
                     neighbour_overlap=result.neighbour_overlap().tolist(), equilibration_iterations=t0,
                     statistical_inefficiency=g, n_uncorrelated=int(samples.size), n_iterations=u_kln.shape[2],
                     forward=block(True), reverse=block(False))


# ---------------------------------------------------------------------------------------------------------------
# solutes and the gas-phase system


def _read_sdf(path: Path):
    """Topology (one residue ``MOL``) and ``[N, 3]`` nm positions from the first molecule of a V2000 SDF."""
    from openmm import app

    lines = path.read_text().splitlines()
    if len(lines) < 4 or "V2000" not in lines[3]:
        raise ValueError(f"{path}: only V2000 SDF/MOL files are supported")
    n_atoms, n_bonds = int(lines[3][0:3]), int(lines[3][3:6])
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    atoms, positions = [], []
    for k, line in enumerate(lines[4:4 + n_atoms]):
        symbol = line[31:34].strip()
        positions.append([float(line[0:10]), float(line[10:20]), float(line[20:30])])
        atoms.append(topology.addAtom(f"{symbol}{k + 1}", app.element.get_by_symbol(symbol), residue))
    for line in lines[4 + n_atoms:4 + n_atoms + n_bonds]:
        topology.addBond(atoms[int(line[0:3]) - 1], atoms[int(line[3:6]) - 1])
    return topology, np.array(positions) * units.ANGSTROM_TO_NM


def solute_from_file(path: str | os.PathLike, forcefield: Sequence[str], size: float = 2.5, cutoff: float = 0.9,
                     temperature: float = 298.15, relax_iterations: int = 50):
    """Solvate a PDB/SDF solute parametrised by OpenMM force-field XML files in TIP3P.

    Returns ``(System, solute_atoms)``; the solute keeps its file order and comes first.
    """
    from openmm import app, unit

    from .. import systems

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"solute file not found: {path}")
    if not forcefield:
        raise ValueError("--solute-file needs --forcefield: OpenMM force-field XML file(s) for the solute")
    suffix = path.suffix.lower()
    if suffix == ".pdb":
        pdb = app.PDBFile(str(path))
        topology, positions = pdb.topology, pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    elif suffix in (".sdf", ".mol"):
        topology, positions = _read_sdf(path)
    elif suffix in (".smi", ".smiles"):
        raise ValueError(SMILES_UNSUPPORTED)
    else:
        raise ValueError(f"unsupported solute file {path.name}: use .pdb or .sdf")
    positions = np.asarray(positions) - np.mean(positions, axis=0) + 0.5 * size
    solvated = systems._solvated(f"{path.stem}-in-water", topology, positions, size, cutoff, temperature,
                                 "Reference", relax_iterations, ("amber14/tip3p.xml", *map(str, forcefield)),
                                 f"{path.name} ({', '.join(map(str, forcefield))}) in ")
    return solvated, list(range(topology.getNumAtoms()))


def shipped_solute(name: str, size: float = 2.5, cutoff: float = 0.9, temperature: float = 298.15,
                   relax_iterations: int = 50):
    """``(System, solute_atoms)`` for a shipped solute name (see :data:`SOLUTES`) in TIP3P: GAFF methane, or
    water (the box's first TIP3P molecule, rigid, decoupled from the others)."""
    from .. import systems

    if name not in SOLUTES:
        raise ValueError(f"unknown solute {name!r}; shipped solutes: {', '.join(SOLUTES)} "
                         "(or --solute-file X --forcefield Y.xml)")
    solvated = systems.load("methane-in-water" if name == "methane" else "water-box", size=size, cutoff=cutoff,
                            temperature=temperature, relax_iterations=relax_iterations)
    if name == "methane":
        return solvated, [a.index for a in solvated.topology.atoms() if a.residue.name == "CH4"]
    return solvated, [a.index for a in next(solvated.topology.residues()).atoms()]


def constrain_hydrogen_bonds(system, atoms: Sequence[int]) -> int:
    """Add constraints (in place) for the HarmonicBondForce bonds to hydrogen among ``atoms``; returns the count.

    Hydrogens are particles lighter than 1.5 Da; the constraint length is the bond's r0.
    """
    import openmm
    from openmm import unit

    atoms = {int(i) for i in atoms}
    constrained = {tuple(sorted(system.getConstraintParameters(k)[:2])) for k in range(system.getNumConstraints())}
    light = {i for i in atoms if system.getParticleMass(i).value_in_unit(unit.dalton) < 1.5}
    added = 0
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, length, _ = force.getBondParameters(k)
                pair = (min(i, j), max(i, j))
                if i in atoms and j in atoms and (i in light or j in light) and pair not in constrained:
                    system.addConstraint(i, j, length)
                    constrained.add(pair)
                    added += 1
    return added


def vacuum_system(system, atoms: Sequence[int]):
    """The subsystem of ``atoms`` in vacuum: their masses, constraints, bonded terms and NonbondedForce (NoCutoff).

    Supports HarmonicBond/Angle, PeriodicTorsion, RBTorsion and NonbondedForce; CMMotionRemover
    and barostats are dropped; any other force raises ``ValueError``.
    """
    import openmm

    index = {int(old): new for new, old in enumerate(atoms)}
    vacuum = openmm.System()
    for old in index:
        vacuum.addParticle(system.getParticleMass(old))
    for k in range(system.getNumConstraints()):
        i, j, length = system.getConstraintParameters(k)
        if i in index and j in index:
            vacuum.addConstraint(index[i], index[j], length)
    terms = {openmm.HarmonicBondForce: ("Bond", 2), openmm.HarmonicAngleForce: ("Angle", 3),
             openmm.PeriodicTorsionForce: ("Torsion", 4), openmm.RBTorsionForce: ("Torsion", 4)}
    for force in system.getForces():
        if isinstance(force, (openmm.CMMotionRemover, openmm.MonteCarloBarostat)):
            continue
        if isinstance(force, openmm.NonbondedForce):
            term = openmm.NonbondedForce()
            term.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
            for old in index:
                term.addParticle(*force.getParticleParameters(old))
            for k in range(force.getNumExceptions()):
                i, j, *parameters = force.getExceptionParameters(k)
                if i in index and j in index:
                    term.addException(index[i], index[j], *parameters)
        elif type(force) in terms:
            kind, n_atoms = terms[type(force)]
            term = type(force)()
            for k in range(getattr(force, f"getNum{kind}s")()):
                parameters = getattr(force, f"get{kind}Parameters")(k)
                indices = parameters[:n_atoms]
                if all(i in index for i in indices):
                    getattr(term, f"add{kind}")(*[index[i] for i in indices], *parameters[n_atoms:])
        else:
            raise ValueError(f"cannot build the gas-phase solute: unsupported force {type(force).__name__}")
        vacuum.addForce(term)
    return vacuum


def _vacuum_topology(topology, atoms: Sequence[int]):
    from openmm import app

    modeller = app.Modeller(topology, [[0.0, 0.0, 0.0]] * topology.getNumAtoms())
    keep = {int(i) for i in atoms}
    modeller.delete([a for a in topology.atoms() if a.index not in keep])
    modeller.topology.setPeriodicBoxVectors(None)
    return modeller.topology


# ---------------------------------------------------------------------------------------------------------------
# the job


@dataclass
class HydrationResult:
    """ΔG_hyd = −(ΔG_solvent − ΔG_gas) in kcal/mol with its error, and both legs (kT)."""

    dG_kcal_mol: float
    error_kcal_mol: float
    solvent: LegResult
    gas: LegResult
    states: list
    temperature: float
    details: dict

    def to_json(self) -> dict:
        return {"dG_kcal_mol": self.dG_kcal_mol, "error_kcal_mol": self.error_kcal_mol, "method": "mbar",
                "status": "ok", "temperature_K": self.temperature, "states": self.states,
                "solvent": asdict(self.solvent), "gas": asdict(self.gas), **self.details}


def _kcal(temperature: float) -> float:
    return units.kT(temperature) * units.KJ_TO_KCAL


def _plot_overlap(path: Path, legs: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(legs), figsize=(5.5 * len(legs), 5), squeeze=False)
    for ax, (name, overlap) in zip(axes[0], legs.items()):
        overlap = np.asarray(overlap)
        image = ax.imshow(overlap, cmap="Blues", vmin=0, vmax=1)
        if overlap.shape[0] <= 16:
            for (i, j), value in np.ndenumerate(overlap):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if value > 0.5 else "black")
        ax.set(title=f"{name} leg: MBAR overlap", xlabel="state l", ylabel="state k",
               xticks=range(overlap.shape[0]), yticks=range(overlap.shape[0]))
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _plot_convergence(path: Path, solvent: LegResult, gas: LegResult, kcal: float) -> None:
    """ΔG_hyd (kcal/mol) vs fraction of the decorrelated data, forward and reverse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, key, marker in (("forward", "forward", "o"), ("reverse", "reverse", "s")):
        gas_by_fraction = {row[0]: row for row in getattr(gas, key)}
        rows = [(f, -(d - gas_by_fraction[f][1]) * kcal, np.hypot(e, gas_by_fraction[f][2]) * kcal)
                for f, d, e in getattr(solvent, key) if f in gas_by_fraction]
        if rows:
            f, d, e = np.array(rows).T
            ax.errorbar(f, d, yerr=e, marker=marker, capsize=3, label=label)
    final = -(solvent.delta_f - gas.delta_f) * kcal
    ax.axhline(final, color="gray", lw=0.8, ls="--")
    ax.set(xlabel="fraction of decorrelated samples", ylabel="ΔG_hyd (kcal/mol)", title="MBAR convergence")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _report(result: dict, description: str) -> str:
    lines = [f"# Hydration free energy: {result['solute']}", "", description, ""]
    if result["status"] == "ok":
        lines += [(f"**ΔG_hyd = {result['dG_kcal_mol']:.3f} ± {result['error_kcal_mol']:.3f} kcal/mol** "
                   f"(MBAR, {result['temperature_K']} K; ΔG_hyd = −(ΔG_solvent − ΔG_gas), decoupling legs)."), ""]
    else:
        lines += [f"**FAILED: {result['error']}**", ""]
    lines += ["| leg | ΔG_decouple (kT) | error (kT) | min neighbour overlap | t0 (iterations) | g | uncorrelated |",
              "|---|---|---|---|---|---|---|"]
    for name in ("solvent", "gas"):
        leg = result.get(name)
        if isinstance(leg, dict) and "delta_f" in leg:
            lines.append(f"| {name} | {leg['delta_f']:.4f} | {leg['error']:.4f} | {min(leg['neighbour_overlap']):.3f} "
                         f"| {leg['equilibration_iterations']} | {leg['statistical_inefficiency']:.2f} "
                         f"| {leg['n_uncorrelated']} |")
    lines += ["", f"λ states (λ_elec, λ_sterics): {result['states']}", "",
              f"Sampling: {json.dumps(result['sampling'])}", "",
              "Files: result.json, overlap.png, convergence.png, solvent/ and gas/ (checkpoint.npz, u_kln.npz)."]
    return "\n".join(lines) + "\n"


def resolve_solute(solute, solute_atoms: Sequence[int] | None = None):
    """``(solvated System, sorted solute atoms, name)`` from a shipped solute name (at 298.15 K) or a solvated
    :class:`molfree.systems.System` with its ``solute_atoms``."""
    if isinstance(solute, str):
        solvated, solute_atoms = shipped_solute(solute, temperature=298.15)
        name = solute
    else:
        if solute_atoms is None:
            raise ValueError("solute_atoms are required with a System")
        solvated, name = solute, solute.name
    return solvated, sorted(int(i) for i in solute_atoms), name


def hydration_free_energy(solute="methane", solute_atoms: Sequence[int] | None = None,
                          out: str | os.PathLike = "runs/solvation-methane", n_electrostatics: int = 3,
                          n_sterics: int = 9, options: SamplingOptions | None = None,
                          min_overlap: float = 0.03, constrain_hydrogens: bool = True,
                          progress: bool = False) -> HydrationResult:
    """Hydration free energy of a solute in TIP3P by decoupling (solvent and gas legs), HREX and MBAR.

    Args:
        solute: a shipped solute name (:data:`SOLUTES`) or a solvated :class:`molfree.systems.System`.
        solute_atoms: the solute's atom indices (required with a System, ignored with a name).
        out: run directory (rerunning with the same directory resumes from the checkpoints).
        n_electrostatics, n_sterics: see :func:`~molfree.freeenergy.alchemy.lambda_schedule`.
        options: :class:`SamplingOptions` for both legs (None: the defaults).
        min_overlap: smallest acceptable neighbour overlap.
        constrain_hydrogens: constrain the solute's bonds to hydrogen (for 2 fs steps).
        progress: tqdm bars on stderr.

    Returns:
        :class:`HydrationResult`; ``out`` gets result.json, report.md and the PNGs.

    Raises:
        ValueError for bad inputs; :class:`PoorOverlapError` (after writing result.json with
        ``status: "poor_overlap"``, report.md and overlap.png) if neighbouring states do not overlap.
    """
    out = Path(out)
    solvated, solute_atoms, name = resolve_solute(solute, solute_atoms)
    system = copy.deepcopy(solvated.system)
    n_constraints = constrain_hydrogen_bonds(system, solute_atoms) if constrain_hydrogens else 0
    states = lambda_schedule(n_electrostatics, n_sterics)
    options = options or SamplingOptions()
    temperature = solvated.temperature
    gas_positions = solvated.positions[solute_atoms]

    legs = {
        "solvent": replica_exchange(system, solvated.topology, solvated.positions, solute_atoms, states, temperature,
                                    out / "solvent", options, progress),
        "gas": replica_exchange(vacuum_system(system, solute_atoms), _vacuum_topology(solvated.topology, solute_atoms),
                                gas_positions, range(len(solute_atoms)), states, temperature, out / "gas", options,
                                progress),
    }
    kcal = _kcal(temperature)
    summary = {"solute": name, "temperature_K": temperature, "states": states, "method": "mbar",
               "sampling": {**asdict(options), "hydrogen_constraints_added": n_constraints,
                            **{f"{leg}_{key}": getattr(sampling, key) for leg, sampling in legs.items()
                               for key in ("wall_seconds", "md_steps", "energy_evaluations", "iterations_run")}}}
    analysed: dict[str, LegResult] = {}
    try:
        for leg, sampling in legs.items():
            analysed[leg] = analyse_u_kln(sampling.u_kln, min_overlap)
    except PoorOverlapError as exc:
        overlap = np.asarray(exc.overlap)
        message = (f"{leg} leg: {exc}; neighbour overlaps "
                   f"{np.round(np.diagonal(overlap, offset=1), 3).tolist()} (diagnostics in {out})")
        failure = {**summary, "status": "poor_overlap", "error": message, "dG_kcal_mol": None,
                   "error_kcal_mol": None, leg: {"overlap": overlap.tolist()},
                   **{k: asdict(v) for k, v in analysed.items()}}
        _plot_overlap(out / "overlap.png", {leg: overlap})
        write_json(out / "result.json", failure)
        atomic_write_text(out / "report.md", _report(failure, solvated.description))
        raise PoorOverlapError(message, overlap) from exc

    solvent, gas = analysed["solvent"], analysed["gas"]
    result = HydrationResult(dG_kcal_mol=-(solvent.delta_f - gas.delta_f) * kcal,
                             error_kcal_mol=float(np.hypot(solvent.error, gas.error) * kcal), solvent=solvent,
                             gas=gas, states=states, temperature=temperature,
                             details={"solute": name, "sampling": summary["sampling"]})
    _plot_overlap(out / "overlap.png", {"solvent": np.array(solvent.overlap), "gas": np.array(gas.overlap)})
    _plot_convergence(out / "convergence.png", solvent, gas, kcal)
    document = result.to_json()
    write_json(out / "result.json", document)
    atomic_write_text(out / "report.md", _report(document, solvated.description))
    return result
