"""Campaign files: YAML → validated, content-hashed job specs, and the registered job types.

Every error in a campaign file is a ``ValueError`` naming ``file:line`` (PyYAML keeps node marks),
raised before anything runs. A job's key is the SHA-256 of its type and parameters (canonical
JSON), so the same work always has the same key, whatever campaign file it comes from.

Job types (:data:`JOB_TYPES`):

* ``hydration``: one job per solute × λ window × repeat. The window job samples its λ state with
  Langevin MD on the :func:`~molfree.freeenergy.alchemy.alchemical_system` and writes ``u_kn.npz``:
  the reduced potentials ``u[l, n]`` (kT) of each sample at every state l. ``gather`` stacks the
  windows into ``u_kln`` and runs :func:`~molfree.freeenergy.hydration.analyse_u_kln` (MBAR).
  Only the solvent leg is sampled: :func:`alchemical_system` keeps every intra-solute interaction,
  so the gas leg is 0 (see :mod:`molfree.freeenergy.hydration`) and ΔG_hyd = −ΔF_solvent.
* ``bg``: one Boltzmann-generator training run (:func:`molfree.workflows.bg.run_train`) per system ×
  repeat; result ``metrics.json``; ``gather``: ESS, KL(φ), W2(φ, ψ) and ΔF against the reference.
* ``potential``: one equivariant-potential training (:func:`molfree.potentials.training.train`) of a
  ``config`` mapping (its ``data`` file's SHA-256 is part of the job); results ``metrics.json`` and
  ``model.pt``; ``gather``: test MAEs.
* ``crystal``: one random structure search (:func:`molfree.workflows.crystal.run_generate`) per
  composition; result ``results.json``; ``gather``: relaxations, unique structures, the lowest one.
* ``conformers``: one conformer generation (:func:`molfree.workflows.conformers.run_conformers`) per SMILES ×
  repeat (seeds seed, seed + 1, ...); an ``energy`` model file's SHA-256 is part of the job; results
  ``metrics.json`` and ``conformers.sdf``; ``gather``: unique conformers, the lowest energy and, with
  ``compare``, coverage recall at 1 Å of molfree and of ETKDG against the ETKDG reference.

Other files a job writes stay in its attempt folder beside the registered results.

A campaign file (paths relative to it; every key but ``jobs`` optional)::

    name: lj-demo
    directory: runs/campaign-lj-demo     # state (campaign.sqlite), results (jobs/), report.html
    max_attempts: 3                      # per job; failures and dead workers count
    lease_seconds: 60                    # a crashed run's jobs are taken over after this
    min_overlap: 0.03                    # MBAR neighbour overlap required by gather
    resources: {cores: 1, memory: 2GB, gpus: 0, walltime: "01:00:00"}   # per worker / job
    cluster:
      kind: local                        # local | slurm | pbs
      workers: 2                         # local processes, or batch jobs (fixed scale)
      queue: null
      account: null
      lifetime: 50m                      # batch workers retire (and restart) before walltime
      lifetime_stagger: 2m
      profile: hpc-profile.yaml          # defaults for these keys (and resources)
    solutes:
      lj: {system: lj-fluid, options: {n_particles: 27, density: 0.5, cutoff: 1.8}, solute_atoms: [0]}
      methane: {shipped: methane, experiment: 2.0}
    jobs:
      - type: hydration
        solutes: [lj, methane]
        lambdas: {electrostatics: 3, sterics: 9}     # lambda_schedule(3, 9)
        repeats: 3
        samples: 200                                 # per window
        steps_per_sample: 500
        equilibration_steps: 5000
        minimize_iterations: 200
        timestep: 0.002                              # ps
        friction: 1.0                                # 1/ps
        platform: CPU                                # Reference | CPU | CUDA | OpenCL (GPU: gpus >= 1)
        seed: 1
        resources: {cores: 2}
      - type: bg
        systems: [alanine-dipeptide-vacuum]    # alanine-dipeptide-implicit | alanine-dipeptide-vacuum
        repeats: 2                             # seeds seed, seed + 1
        seed: 0
        reference_ps: 60.0                     # any BGSetup number: reference_ps, exchange_ps, timestep_fs,
        ml_steps: 400                          # n_layers, hidden, n_bins, ml_steps, kl_steps, batch_size,
        kl_steps: 60                           # kl_batch, lr, n_samples, umbrella_windows, umbrella_k,
        umbrella_ps: 10.0                      # umbrella_ps (defaults: the system's BGSetup)
      - type: potential
        name: ala-small
        config: {data: data/labelled.xyz, max_epochs: 50, model: {channels: 16}}   # a TrainingConfig
      - type: crystal
        compositions: [Cu, Cu3Au]
        calculator: emt                        # lj | emt | tersoff | born-mayer | chgnet
        n: 50                                  # candidates; also seed, max_atoms, fmax (eV/Å), steps
      - type: conformers
        smiles: [CCCC, "CC(=O)Nc1ccc(O)cc1"]
        energy: mmff                           # mmff | xtb | a molfree model file (relative to this file)
        n: 50                                  # conformers per molecule
        relax: mmff                            # null | mmff | energy
        rmsd_threshold: 0.5                    # Å, heavy-atom deduplication
        temperature: 1000.0                    # K, of the sampler's target
        budget: 6000                           # training energy evaluations (< 200: no training)
        compare: true                          # ETKDG baseline and reference (reference_embeddings: 500)
        repeats: 1                             # seeds seed, seed + 1, ... (seed: 0)
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .. import units
from ..io import atomic_write_bytes

_MEMORY = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B|B)$")
_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")
_DURATION = re.compile(r"^\d+(\.\d+)?\s*(s|m|h|d)$")


# ---------------------------------------------------------------------------------------------------------------
# YAML with line numbers


class _Map(dict):
    """A YAML mapping that remembers its line and the line of each key."""

    line: int = 0
    key_lines: dict


class _Seq(list):
    """A YAML sequence that remembers its line and the line of each item."""

    line: int = 0
    item_lines: list


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    value = _Map(loader.construct_pairs(node, deep=True))
    value.line = node.start_mark.line + 1
    value.key_lines = {key.value: key.start_mark.line + 1 for key, _ in node.value}
    return value


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    value = _Seq(loader.construct_sequence(node, deep=True))
    value.line = node.start_mark.line + 1
    value.item_lines = [item.start_mark.line + 1 for item in node.value]
    return value


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


class _Where:
    """Raises ``ValueError("file:line: message")``."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, line: int, message: str):
        raise ValueError(f"{self.path}:{line}: {message}")

    def mapping(self, value: Any, line: int, what: str, allowed: set[str] | None) -> _Map:
        """``value`` checked to be a mapping whose keys are in ``allowed`` (None: any keys)."""
        if not isinstance(value, _Map):
            self.fail(line, f"{what} must be a mapping")
        for key in value:
            if allowed is not None and key not in allowed:
                self.fail(value.key_lines[key],
                          f"unknown key {key!r} in {what} (allowed: {', '.join(sorted(allowed))})")
        return value

    def number(self, block: _Map, key: str, default, kind: type, minimum: float | None = None,
               positive: bool = False):
        if key not in block:
            return default
        value, line = block[key], block.key_lines[key]
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
            self.fail(line, f"{key} must be {'a number' if kind is float else 'an integer'}, got {value!r}")
        if (minimum is not None and value < minimum) or (positive and value <= 0):
            self.fail(line, f"{key} must be {'> 0' if positive else f'>= {minimum}'}, got {value!r}")
        return kind(value)

    def text(self, block: _Map, key: str, default: str | None, pattern: re.Pattern | None = None,
             choices: tuple[str, ...] | None = None) -> str | None:
        if key not in block or block[key] is None:
            return default
        value, line = block[key], block.key_lines[key]
        if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
            self.fail(line, f"invalid {key} {value!r}")
        if choices is not None and value not in choices:
            self.fail(line, f"{key} must be one of {', '.join(choices)}, got {value!r}")
        return value


# ---------------------------------------------------------------------------------------------------------------
# specs


@dataclass(frozen=True)
class Resources:
    """What one job needs: CPU cores, memory (e.g. ``"2GB"``), GPUs and walltime ``[D-]HH:MM:SS``."""

    cores: int = 1
    memory: str = "2GB"
    gpus: int = 0
    walltime: str = "01:00:00"


@dataclass(frozen=True)
class JobSpec:
    """One unit of work: a registered ``type`` with JSON parameters; ``group`` names its analysis."""

    type: str
    params: dict
    group: str
    resources: Resources = field(default_factory=Resources)

    @functools.cached_property
    def key(self) -> str:
        """SHA-256 of the type and parameters (resources and group do not change the work)."""
        text = json.dumps({"type": self.type, "params": self.params}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps({"type": self.type, "params": self.params, "group": self.group,
                           "resources": vars(self.resources)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        data = json.loads(text)
        return cls(type=data["type"], params=data["params"], group=data["group"],
                   resources=Resources(**data["resources"]))


@dataclass(frozen=True)
class ClusterConfig:
    """Where workers run: ``local`` (LocalCluster), ``slurm`` or ``pbs`` (dask-jobqueue, ``workers`` batch jobs).

    ``lifetime``/``lifetime_stagger`` (e.g. ``"50m"``) retire batch workers before their walltime;
    ``resources`` is what each worker asks for (its GPUs become the Dask resource ``GPU``).
    """

    kind: str = "local"
    workers: int = 2
    queue: str | None = None
    account: str | None = None
    lifetime: str | None = None
    lifetime_stagger: str = "2m"
    resources: Resources = field(default_factory=Resources)


@dataclass(frozen=True)
class Solute:
    """A solute: a shipped one (``shipped``) or a registered system with its solute atoms; ΔG_exp if known."""

    name: str
    shipped: str | None = None
    system: str | None = None
    options: dict = field(default_factory=dict)
    solute_atoms: tuple[int, ...] = ()
    experiment: float | None = None

    def definition(self) -> dict:
        """The part that determines the physics (hashed into job keys)."""
        return {"name": self.name, "shipped": self.shipped, "system": self.system, "options": self.options,
                "solute_atoms": list(self.solute_atoms)}


@dataclass
class Campaign:
    """A validated campaign: jobs, solutes, cluster, retry limit and lease length (s)."""

    name: str
    path: Path
    directory: Path
    jobs: list[JobSpec]
    solutes: dict[str, Solute]
    cluster: ClusterConfig
    max_attempts: int = 3
    lease_seconds: float = 60.0
    min_overlap: float = 0.03

    @property
    def db_path(self) -> Path:
        return self.directory / "campaign.sqlite"


# ---------------------------------------------------------------------------------------------------------------
# job types


@dataclass(frozen=True)
class JobType:
    """A registered job type.

    ``expand(entry, where, campaign)`` → job specs of one ``jobs:`` entry; ``run(params, out_dir, threads)``
    → names of the files it wrote; ``check(path)`` raises unless a result file is loadable and complete;
    ``gather(specs, files, campaign)`` → the analysis of one group (``files[key][name]`` are paths).
    """

    expand: Callable[[_Map, _Where, Campaign], list[JobSpec]]
    run: Callable[[dict, Path, int], list[str]]
    check: Callable[[Path, dict], None]
    gather: Callable[[list[JobSpec], dict, Campaign], dict]


@functools.lru_cache(maxsize=8)
def _solute_system(definition: str):
    """``(System, solute_atoms, hydrogen-constrained openmm.System)``, cached per worker process."""
    import copy

    from .. import systems
    from ..freeenergy.hydration import constrain_hydrogen_bonds, shipped_solute

    solute = json.loads(definition)
    if solute["shipped"]:
        solvated, atoms = shipped_solute(solute["shipped"])
        system = copy.deepcopy(solvated.system)
        constrain_hydrogen_bonds(system, atoms)
    else:
        solvated = systems.load(solute["system"], **solute["options"])
        atoms, system = solute["solute_atoms"], solvated.system
    return solvated, sorted(atoms), system


def _run_window(params: dict, out_dir: Path, threads: int) -> list[str]:
    """Sample λ window ``params['window']``; write ``u_kn.npz`` with ``u [K, samples]`` (kT) at all states."""
    import openmm
    from openmm import unit

    from ..freeenergy.alchemy import alchemical_system, context_parameters

    solvated, atoms, system = _solute_system(json.dumps(params["solute"], sort_keys=True))
    states = [tuple(state) for state in params["states"]]
    temperature = solvated.temperature
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, params["friction"] / unit.picosecond,
                                                 params["timestep"] * unit.picosecond)
    integrator.setRandomNumberSeed(params["seed"])
    platform = openmm.Platform.getPlatformByName(params["platform"])
    properties = {"Threads": str(threads)} if params["platform"] == "CPU" else {}
    context = openmm.Context(alchemical_system(system, atoms), integrator, platform, properties)
    context.setPositions(solvated.positions * unit.nanometer)
    if solvated.box is not None:
        context.setPeriodicBoxVectors(*(solvated.box * unit.nanometer))

    def set_state(state) -> None:
        for name, value in context_parameters(state).items():
            context.setParameter(name, value)

    own = states[params["window"]]
    set_state(own)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, params["minimize_iterations"])
    context.setVelocitiesToTemperature(temperature * unit.kelvin, params["seed"])
    integrator.step(params["equilibration_steps"])
    kt = units.kT(temperature)
    u = np.empty((len(states), params["samples"]))
    for n in range(params["samples"]):
        integrator.step(params["steps_per_sample"])
        for l, state in enumerate(states):
            set_state(state)
            u[l, n] = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / kt
        set_state(own)
    buffer = io.BytesIO()
    np.savez(buffer, u=u, states=np.array(states), window=params["window"], temperature=temperature)
    atomic_write_bytes(out_dir / "u_kn.npz", buffer.getvalue())
    return ["u_kn.npz"]


def _check_window(path: Path, params: dict) -> None:
    with np.load(path, allow_pickle=False) as data:
        u = data["u"]
        if u.shape != (len(params["states"]), params["samples"]) or not np.all(np.isfinite(u)):
            raise ValueError(f"{path}: u has shape {u.shape} or non-finite values")


def _gather_hydration(specs: list[JobSpec], files: dict, campaign: Campaign) -> dict:
    """MBAR over the windows of one solute × repeat: ΔG_hyd = −ΔF_solvent (kcal/mol)."""
    from ..freeenergy.hydration import analyse_u_kln

    specs = sorted(specs, key=lambda spec: spec.params["window"])
    windows = []
    for spec in specs:
        with np.load(files[spec.key]["u_kn.npz"], allow_pickle=False) as data:
            windows.append(data["u"])
            temperature = float(data["temperature"])
    leg = analyse_u_kln(np.stack(windows), campaign.min_overlap)  # u_kln[k, l, n] = window k's u[l, n]
    kcal = units.kT(temperature) * units.KJ_TO_KCAL
    solute = specs[0].params["solute"]["name"]
    return {"solute": solute, "repeat": specs[0].params["repeat"], "dG_kcal_mol": -leg.delta_f * kcal,
            "error_kcal_mol": leg.error * kcal, "temperature_K": temperature,
            "experiment_kcal_mol": campaign.solutes[solute].experiment, "solvent": asdict(leg),
            "convergence_kcal_mol": {side: [[f, -d * kcal, e * kcal] for f, d, e in getattr(leg, side)]
                                     for side in ("forward", "reverse")}}


_HYDRATION_KEYS = {"type", "solutes", "lambdas", "repeats", "samples", "steps_per_sample", "equilibration_steps",
                   "minimize_iterations", "timestep", "friction", "platform", "seed", "resources"}


def _expand_hydration(entry: _Map, where: _Where, campaign: Campaign) -> list[JobSpec]:
    from ..freeenergy.alchemy import lambda_schedule

    where.mapping(entry, entry.line, "hydration job", _HYDRATION_KEYS)
    names = _names(entry, where, "solutes", "hydration")
    for name, line in names:
        if name not in campaign.solutes:
            where.fail(line, f"missing solute {name!r}: not defined under 'solutes:' "
                             f"(defined: {', '.join(sorted(campaign.solutes)) or 'none'})")
    lambdas = where.mapping(entry.get("lambdas", _Map()), entry.key_lines.get("lambdas", entry.line), "lambdas",
                            {"electrostatics", "sterics"})
    n_elec = where.number(lambdas, "electrostatics", 2, int, minimum=2)
    n_sterics = where.number(lambdas, "sterics", 6, int, minimum=2)
    common = {"states": [list(state) for state in lambda_schedule(n_elec, n_sterics)],
              "samples": where.number(entry, "samples", 200, int, minimum=3),
              "steps_per_sample": where.number(entry, "steps_per_sample", 500, int, minimum=1),
              "equilibration_steps": where.number(entry, "equilibration_steps", 5000, int, minimum=0),
              "minimize_iterations": where.number(entry, "minimize_iterations", 200, int, minimum=1),
              "timestep": where.number(entry, "timestep", 0.002, float, positive=True),
              "friction": where.number(entry, "friction", 1.0, float, positive=True),
              "platform": where.text(entry, "platform", "CPU", choices=("Reference", "CPU", "CUDA", "OpenCL"))}
    repeats = where.number(entry, "repeats", 1, int, minimum=1)
    seed = where.number(entry, "seed", 1, int, minimum=1)
    resources = _resources(entry, where, campaign.cluster.resources)
    if common["platform"] in ("CUDA", "OpenCL") and resources.gpus == 0:  # GPU platforms request a GPU
        resources = Resources(**{**asdict(resources), "gpus": 1})
    return [JobSpec("hydration", {**common, "solute": campaign.solutes[name].definition(), "window": k,
                                  "repeat": r, "seed": seed + 1000 * r + k},
                    group=f"{name}/repeat-{r}", resources=resources)
            for name, _ in names for r in range(repeats) for k in range(len(common["states"]))]


def _numbers(entry: _Map, where: _Where, defaults: dict, minimums: dict[str, float | None]) -> dict:
    """``entry``'s numbers for the keys of ``minimums`` (None: must be > 0); defaults and kinds from ``defaults``."""
    return {key: where.number(entry, key, defaults[key], type(defaults[key]), minimum=minimum,
                              positive=minimum is None)
            for key, minimum in minimums.items()}


def _names(entry: _Map, where: _Where, key: str, what: str) -> list[tuple[str, int]]:
    """A non-empty list of strings under ``key``, each with its line."""
    values = entry.get(key)
    if not isinstance(values, _Seq) or not values:
        where.fail(entry.key_lines.get(key, entry.line), f"{what} job needs a non-empty list {key!r}")
    for value, line in zip(values, values.item_lines):
        if not isinstance(value, str):
            where.fail(line, f"{key} must be strings, got {value!r}")
    return list(zip(values, values.item_lines))


def _sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes: input files (training data, models) are part of a job's key."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _check_unchanged(path: str | os.PathLike, digest: str) -> None:
    """ValueError unless the input file ``path`` still has the SHA-256 the campaign was loaded with."""
    if _sha256(path) != digest:
        raise ValueError(f"{path} changed since the campaign was loaded")


def _check_json(*keys: str) -> Callable[[Path, dict], None]:
    """A result check: the file is a JSON object with ``keys``."""
    def check(path: Path, params: dict) -> None:
        data = json.loads(path.read_text())
        missing = [key for key in keys if key not in data]
        if missing:
            raise ValueError(f"{path}: missing {', '.join(missing)}")
    return check


def _gather_one(name: str, summary: Callable[[dict, dict], dict]) -> Callable[[list[JobSpec], dict, Campaign], dict]:
    """The ``gather`` of one-job groups: ``summary(params, the job's JSON file name)``."""
    def gather(specs: list[JobSpec], files: dict, campaign: Campaign) -> dict:
        (spec,) = specs
        return summary(spec.params, json.loads(Path(files[spec.key][name]).read_text()))
    return gather


# -- bg: Boltzmann-generator training (molfree.workflows.bg) ----------------------------------------------------

_BG_NUMBERS = {"reference_ps": None, "exchange_ps": None, "timestep_fs": None, "n_layers": 1, "hidden": 1,
               "n_bins": 2, "ml_steps": 1, "kl_steps": 0, "batch_size": 1, "kl_batch": 1, "lr": None,
               "n_samples": 1, "umbrella_windows": 4, "umbrella_k": None, "umbrella_ps": None}


def _expand_bg(entry: _Map, where: _Where, campaign: Campaign) -> list[JobSpec]:
    """One training run per system × repeat (seed, seed + 1, ...); numbers default to each system's
    :class:`BGSetup`."""
    from ..workflows.bg import SYSTEMS, BGSetup

    where.mapping(entry, entry.line, "bg job", {"type", "systems", "repeats", "seed", "resources", *_BG_NUMBERS})
    systems = _names(entry, where, "systems", "bg")
    for name, line in systems:
        if name not in SYSTEMS:
            where.fail(line, f"bg system must be one of {', '.join(SYSTEMS)}, got {name!r}")
    numbers = {name: _numbers(entry, where, asdict(BGSetup(system=name)), _BG_NUMBERS) for name, _ in systems}
    seed = where.number(entry, "seed", 0, int, minimum=0)
    repeats = where.number(entry, "repeats", 1, int, minimum=1)
    resources = _resources(entry, where, campaign.cluster.resources)
    return [JobSpec("bg", {**numbers[name], "system": name, "seed": seed + r}, group=f"bg/{name}/seed-{seed + r}",
                    resources=resources)
            for name, _ in systems for r in range(repeats)]


def _run_bg(params: dict, out_dir: Path, threads: int) -> list[str]:
    """Train a Boltzmann generator (reference MD, flow training, sampling, metrics) in ``out_dir``."""
    from ..workflows.bg import BGSetup, run_train

    run_train(BGSetup(**params, threads=threads), out_dir, progress=False)
    return ["metrics.json"]


def _summarise_bg(params: dict, metrics: dict) -> dict:
    flow, reference = metrics["flow"], metrics["reference"]
    return {"system": params["system"], "seed": params["seed"], "ess": flow["ess"], "kl_phi": flow["kl_phi"],
            "w2_phi_psi": flow["w2_phi_psi"], "delta_f_kt": flow["delta_f_kt"],
            "reference_delta_f_kt": reference["delta_f_kt"], "training_seconds": metrics["training_seconds"]}


# -- potential: equivariant-potential training (molfree.potentials.training) --------------------------------------


def _expand_potential(entry: _Map, where: _Where, campaign: Campaign) -> list[JobSpec]:
    """One training run of ``config`` (a :class:`TrainingConfig` mapping; ``data`` relative to the campaign file)."""
    from ..potentials.training import TrainingConfig

    where.mapping(entry, entry.line, "potential job", {"type", "name", "config", "resources"})
    name = where.text(entry, "name", None)
    if name is None:
        where.fail(entry.line, "potential job needs a 'name'")
    line = entry.key_lines.get("config", entry.line)
    config = where.mapping(entry.get("config"), line, "config", None)
    if not isinstance(config.get("data"), str):
        where.fail(config.key_lines.get("data", line), "config needs 'data': a labelled extended-XYZ file")
    data = campaign.path.parent / config["data"]
    if not data.is_file():
        where.fail(config.key_lines["data"], f"training data {data} not found")
    try:
        config = TrainingConfig.from_dict({**config, "data": str(data), "progress": False}).to_dict()
    except ValueError as exc:  # the line of the first key the message names
        where.fail(next((n for key, n in config.key_lines.items() if key in str(exc)), line), str(exc))
    return [JobSpec("potential", {"name": name, "config": config, "data_sha256": _sha256(data)},
                    group=f"potential/{name}", resources=_resources(entry, where, campaign.cluster.resources))]


def _run_potential(params: dict, out_dir: Path, threads: int) -> list[str]:
    """Train the potential in ``out_dir`` (metrics.json, model.pt), on the data the campaign was validated with."""
    import torch

    from ..potentials.training import train

    _check_unchanged(params["config"]["data"], params["data_sha256"])
    torch.set_num_threads(threads)
    train(params["config"], out_dir)
    return ["metrics.json", "model.pt"]


def _check_potential(path: Path, params: dict) -> None:
    from ..potentials import read_header

    if path.suffix == ".pt":
        read_header(path)
    else:
        _check_json("test", "steps", "best_epoch")(path, params)


def _summarise_potential(params: dict, metrics: dict) -> dict:
    return {"name": params["name"], "steps": metrics["steps"], "best_epoch": metrics["best_epoch"],
            **{f"test_{key}": value for key, value in metrics["test"].items()}}


# -- crystal: random structure search (molfree.workflows.crystal) ------------------------------------------------

_CALCULATORS = ("lj", "emt", "tersoff", "born-mayer", "chgnet")


def _expand_crystal(entry: _Map, where: _Where, campaign: Campaign) -> list[JobSpec]:
    """One random search per composition; numbers default to :class:`GenerateSetup`'s."""
    from ..crystals.calculators import make_calculator
    from ..crystals.structures import parse_composition
    from ..workflows.crystal import GenerateSetup

    where.mapping(entry, entry.line, "crystal job",
                  {"type", "compositions", "calculator", "n", "seed", "max_atoms", "fmax", "steps", "resources"})
    defaults = asdict(GenerateSetup(composition=""))
    calculator = where.text(entry, "calculator", defaults["calculator"], choices=_CALCULATORS)
    compositions = _names(entry, where, "compositions", "crystal")
    for composition, line in compositions:
        try:
            symbols = list(parse_composition(composition))
            if calculator != "chgnet":  # a model to load, not checked here
                make_calculator(calculator, symbols)
        except ValueError as exc:
            where.fail(line, str(exc))
    numbers = _numbers(entry, where, defaults, {"n": 1, "seed": 0, "max_atoms": 1, "fmax": None, "steps": 1})
    resources = _resources(entry, where, campaign.cluster.resources)
    return [JobSpec("crystal", {**numbers, "composition": composition, "calculator": calculator},
                    group=f"crystal/{composition}/seed-{numbers['seed']}", resources=resources)
            for composition, _ in compositions]


def _run_crystal(params: dict, out_dir: Path, threads: int) -> list[str]:
    """Random search, relaxation, deduplication and ranking in ``out_dir`` (results.json, CIFs, plot)."""
    from ..workflows.crystal import GenerateSetup, run_generate

    run_generate(GenerateSetup(**params), out_dir)
    return ["results.json"]


def _summarise_crystal(params: dict, results: dict) -> dict:
    best = results["unique"][0] if results["unique"] else {}
    return {"composition": params["composition"], "calculator": params["calculator"],
            "relaxations": results["relaxations"], "converged": results["converged"], "unique": len(results["unique"]),
            "lowest_energy_per_atom_eV": best.get("energy_per_atom_eV"), "lowest_symbol": best.get("symbol")}


# -- conformers: torsional adjoint sampling of conformers (molfree.workflows.conformers) ----------------------------

_CONFORMER_KEYS = {"type", "smiles", "energy", "n", "relax", "rmsd_threshold", "temperature", "budget", "compare",
                   "reference_embeddings", "repeats", "seed", "resources"}


def _check_smiles(smiles: str, energy: str, relax: str | None) -> None:
    """ValueError unless RDKit parses ``smiles`` as one molecule whose elements ``energy`` and ``relax`` cover."""
    from rdkit import Chem

    from ..workflows.conformers import check_elements, parse_smiles

    molecule = Chem.AddHs(parse_smiles(smiles))
    check_elements(molecule, energy)
    if relax == "mmff":
        check_elements(molecule, "mmff")


def _expand_conformers(entry: _Map, where: _Where, campaign: Campaign) -> list[JobSpec]:
    """One conformer generation per SMILES × repeat (seeds seed, seed + 1, ...); defaults: ``run_conformers``'s."""
    from ..potentials import read_header
    from ..workflows.conformers import validate_request

    where.mapping(entry, entry.line, "conformers job", _CONFORMER_KEYS)
    energy = where.text(entry, "energy", "mmff")
    params = {"energy": energy, "energy_sha256": None}
    if energy not in ("mmff", "xtb"):
        model = campaign.path.parent / energy
        try:
            read_header(model)
        except (OSError, ValueError) as exc:
            where.fail(entry.key_lines["energy"], f"energy must be mmff, xtb or a molfree model file: {exc}")
        params = {"energy": str(model), "energy_sha256": _sha256(model)}
    relax = where.text(entry, "relax", None, choices=("mmff", "energy"))
    smiles = _names(entry, where, "smiles", "conformers")
    for value, line in smiles:
        try:
            _check_smiles(value, energy, relax)
        except ValueError as exc:
            where.fail(line, str(exc))
    compare = entry.get("compare", True)
    if not isinstance(compare, bool):
        where.fail(entry.key_lines["compare"], f"compare must be true or false, got {compare!r}")
    params.update(relax=relax, compare=compare,
                  n=where.number(entry, "n", 100, int, minimum=1),
                  rmsd_threshold=where.number(entry, "rmsd_threshold", 0.5, float, minimum=0),
                  temperature=where.number(entry, "temperature", 1000.0, float, positive=True),
                  budget=where.number(entry, "budget", 6000, int, minimum=1),
                  reference_embeddings=where.number(entry, "reference_embeddings", 500, int, minimum=1))
    try:
        validate_request(params["n"], params["rmsd_threshold"], params["reference_embeddings"])
    except ValueError as exc:  # the upper limits
        where.fail(entry.line, str(exc))
    seed = where.number(entry, "seed", 0, int, minimum=0)
    repeats = where.number(entry, "repeats", 1, int, minimum=1)
    resources = _resources(entry, where, campaign.cluster.resources)
    return [JobSpec("conformers", {**params, "smiles": value, "seed": seed + r},
                    group=f"conformers/{value}/seed-{seed + r}", resources=resources)
            for value, _ in smiles for r in range(repeats)]


def _run_conformers(params: dict, out_dir: Path, threads: int) -> list[str]:
    """Sample, relax, deduplicate (and compare with ETKDG) in ``out_dir``: conformers.sdf, metrics.json."""
    import torch

    from ..workflows.conformers import SamplerOptions, run_conformers

    if params["energy_sha256"] is not None:
        _check_unchanged(params["energy"], params["energy_sha256"])
    torch.set_num_threads(threads)
    run_conformers(params["smiles"], out_dir, energy=params["energy"], n=params["n"], relax_method=params["relax"],
                   rmsd_threshold=params["rmsd_threshold"], reference_embeddings=params["reference_embeddings"],
                   options=SamplerOptions(temperature=params["temperature"], max_energy_evaluations=params["budget"]),
                   compare=params["compare"], seed=params["seed"], progress=False)
    return ["conformers.sdf", "metrics.json"]


def _sdf_energies(path: Path) -> list[float]:
    """The ``energy_kj_mol`` of every conformer in an SD file; ValueError if it is cut short, a record is
    unreadable or one lacks the energy."""
    from rdkit import Chem, rdBase

    text = Path(path).read_text()
    blocker = rdBase.BlockLogs()  # RDKit's messages about a broken record; the ValueError says it
    molecules = list(Chem.SDMolSupplier(str(path), removeHs=False))
    del blocker
    if (text and not text.endswith("$$$$\n")) or not all(m is not None and m.HasProp("energy_kj_mol")
                                                          for m in molecules):
        raise ValueError(f"{path}: cut short, an unreadable conformer or one without energy_kj_mol")
    return [m.GetDoubleProp("energy_kj_mol") for m in molecules]


def _check_conformers(path: Path, params: dict) -> None:
    if path.suffix == ".sdf":
        energies = _sdf_energies(path)
        if len(energies) > params["n"] or not np.all(np.isfinite(energies)):
            raise ValueError(f"{path}: {len(energies)} conformers (at most {params['n']}) or non-finite energies")
    else:
        _check_json("molfree", "n_torsions")(path, params)


def _gather_conformers(specs: list[JobSpec], files: dict, campaign: Campaign) -> dict:
    """One molecule × seed: unique conformers, the lowest energy, coverage recall at 1 Å (with ``compare``)."""
    (spec,) = specs
    metrics = json.loads(Path(files[spec.key]["metrics.json"]).read_text())
    energies = _sdf_energies(files[spec.key]["conformers.sdf"])
    molfree = metrics["molfree"]
    result = {"smiles": spec.params["smiles"], "seed": spec.params["seed"], "energy": metrics["energy"],
              "torsions": metrics["n_torsions"], "generated": molfree["n_generated"], "unique": molfree["n_kept"],
              "invalid": molfree["n_invalid"], "lowest_energy_kj_mol": min(energies, default=None),
              "energy_evaluations": molfree["energy_evaluations"], "wall_time_s": molfree["wall_time_s"]}
    if "reference" in metrics:
        result.update(reference_conformers=metrics["reference"]["n_kept"], recall_1A=_recall_1a(molfree),
                      etkdg_unique=metrics["etkdg"]["n_kept"], etkdg_recall_1A=_recall_1a(metrics["etkdg"]))
    return result


def _recall_1a(summary: dict) -> float:
    """Coverage recall at 1 Å of one method's summary in ``metrics.json`` (0 when it kept no conformer)."""
    return summary["coverage"]["recall"]["1"] if summary["coverage"] else 0.0


#: Registered job types by name.
JOB_TYPES: dict[str, JobType] = {
    "hydration": JobType(expand=_expand_hydration, run=_run_window, check=_check_window, gather=_gather_hydration),
    "bg": JobType(expand=_expand_bg, run=_run_bg, check=_check_json("flow", "reference"),
                  gather=_gather_one("metrics.json", _summarise_bg)),
    "potential": JobType(expand=_expand_potential, run=_run_potential, check=_check_potential,
                         gather=_gather_one("metrics.json", _summarise_potential)),
    "crystal": JobType(expand=_expand_crystal, run=_run_crystal, check=_check_json("unique", "relaxations"),
                       gather=_gather_one("results.json", _summarise_crystal)),
    "conformers": JobType(expand=_expand_conformers, run=_run_conformers, check=_check_conformers,
                          gather=_gather_conformers),
}


# ---------------------------------------------------------------------------------------------------------------
# campaign files

_TOP_KEYS = {"name", "directory", "max_attempts", "lease_seconds", "min_overlap", "resources", "cluster",
             "solutes", "jobs"}
_CLUSTER_KEYS = {"kind", "workers", "queue", "account", "lifetime", "lifetime_stagger", "profile"}


def _resources(block: _Map, where: _Where, default: Resources) -> Resources:
    if "resources" not in block:
        return default
    res = where.mapping(block["resources"], block.key_lines["resources"], "resources",
                        {"cores", "memory", "gpus", "walltime"})
    return Resources(cores=where.number(res, "cores", default.cores, int, minimum=1),
                     memory=where.text(res, "memory", default.memory, _MEMORY),
                     gpus=where.number(res, "gpus", default.gpus, int, minimum=0),
                     walltime=where.text(res, "walltime", default.walltime, _WALLTIME))


def _cluster_block(block: _Map, where: _Where, base: ClusterConfig) -> ClusterConfig:
    return ClusterConfig(kind=where.text(block, "kind", base.kind, choices=("local", "slurm", "pbs")),
                         workers=where.number(block, "workers", base.workers, int, minimum=1),
                         queue=where.text(block, "queue", base.queue),
                         account=where.text(block, "account", base.account),
                         lifetime=where.text(block, "lifetime", base.lifetime, _DURATION),
                         lifetime_stagger=where.text(block, "lifetime_stagger", base.lifetime_stagger, _DURATION),
                         resources=base.resources)


def _cluster(top: _Map, where: _Where, base: Path) -> ClusterConfig:
    """The ``cluster:`` block over its ``profile`` file (if any); top-level ``resources`` win over the profile's."""
    block = where.mapping(top.get("cluster", _Map()), top.key_lines.get("cluster", top.line), "cluster",
                          _CLUSTER_KEYS)
    config = ClusterConfig()
    if "profile" in block:
        profile_path = base / str(block["profile"])
        if not profile_path.is_file():
            where.fail(block.key_lines["profile"], f"cluster profile {profile_path} not found")
        profile = _load(profile_path)
        profile_where = _Where(profile_path)
        profile_where.mapping(profile, profile.line, "profile", _CLUSTER_KEYS - {"profile"} | {"resources"})
        config = _cluster_block(profile, profile_where,
                                ClusterConfig(resources=_resources(profile, profile_where, Resources())))
    config = _cluster_block(block, where, config)
    return ClusterConfig(**{**asdict(config), "resources": _resources(top, where, config.resources)})


def _solutes(top: _Map, where: _Where) -> dict[str, Solute]:
    from .. import systems
    from ..freeenergy.hydration import SOLUTES

    block = where.mapping(top.get("solutes", _Map()), top.key_lines.get("solutes", top.line), "solutes", None)
    solutes = {}
    for name, value in block.items():
        line = block.key_lines[name]
        entry = where.mapping(value, line, f"solute {name!r}",
                              {"shipped", "system", "options", "solute_atoms", "experiment"})
        shipped, system = entry.get("shipped"), entry.get("system")
        if (shipped is None) == (system is None):
            where.fail(line, f"solute {name!r} needs exactly one of 'shipped' or 'system'")
        if shipped is not None and shipped not in SOLUTES:
            where.fail(entry.key_lines["shipped"],
                       f"unknown shipped solute {shipped!r} (shipped: {', '.join(SOLUTES)})")
        if system is not None and system not in systems.names():
            where.fail(entry.key_lines["system"], f"unknown system {system!r} (known: {', '.join(systems.names())})")
        atoms = entry.get("solute_atoms", [])
        if system is not None and (not isinstance(atoms, list) or not atoms
                                   or not all(isinstance(i, int) and i >= 0 for i in atoms)):
            where.fail(entry.key_lines.get("solute_atoms", line), f"solute {name!r} needs solute_atoms: [int, ...]")
        options = entry.get("options", {})
        if not isinstance(options, dict):
            where.fail(entry.key_lines["options"], "options must be a mapping")
        experiment = where.number(entry, "experiment", None, float) if entry.get("experiment") is not None else None
        solutes[name] = Solute(name=name, shipped=shipped, system=system, options=dict(options),
                               solute_atoms=tuple(atoms), experiment=experiment)
    return solutes


def _load(path: Path) -> _Map:
    try:
        document = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ValueError(f"{path}:{mark.line + 1 if mark else '?'}: invalid YAML: {exc.problem}") from None
    if not isinstance(document, _Map):
        raise ValueError(f"{path}:1: a campaign file must be a mapping")
    return document


def load_campaign(path: str | os.PathLike) -> Campaign:
    """Read and validate a campaign file (see the module docstring); nothing runs."""
    path = Path(path).resolve()
    top = _load(path)
    where = _Where(path)
    where.mapping(top, top.line, "campaign", _TOP_KEYS)
    name = where.text(top, "name", path.stem)
    campaign = Campaign(name=name, path=path,
                        directory=path.parent / where.text(top, "directory", f"runs/campaign-{name}"),
                        jobs=[], solutes=_solutes(top, where),
                        cluster=_cluster(top, where, path.parent),
                        max_attempts=where.number(top, "max_attempts", 3, int, minimum=1),
                        lease_seconds=where.number(top, "lease_seconds", 60.0, float, positive=True),
                        min_overlap=where.number(top, "min_overlap", 0.03, float, minimum=0))
    jobs = top.get("jobs")
    if not isinstance(jobs, _Seq) or not jobs:
        where.fail(top.key_lines.get("jobs", top.line), "a campaign needs a non-empty list 'jobs'")
    for entry, line in zip(jobs, jobs.item_lines):
        if not isinstance(entry, _Map) or "type" not in entry:
            where.fail(line, "each job needs a 'type'")
        if entry["type"] not in JOB_TYPES:
            where.fail(entry.key_lines["type"], f"unknown job type {entry['type']!r} "
                                                f"(registered: {', '.join(sorted(JOB_TYPES))})")
        specs = JOB_TYPES[entry["type"]].expand(entry, where, campaign)
        if specs and specs[0].resources.gpus > campaign.cluster.resources.gpus:
            where.fail(line, f"this job needs {specs[0].resources.gpus} GPU(s) per job but the workers have "
                             f"{campaign.cluster.resources.gpus} (set top-level resources: gpus)")
        campaign.jobs.extend(specs)
    keys = [job.key for job in campaign.jobs]
    if len(set(keys)) != len(keys):
        where.fail(jobs.line, "two jobs are identical (same type and parameters)")
    return campaign
