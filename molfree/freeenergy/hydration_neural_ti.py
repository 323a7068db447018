"""Hydration free energy by neural TI (:mod:`molfree.freeenergy.solute_ti`) from endpoint MD frames alone.

Steps, each cached in the run directory's ``neural-ti/`` folder so that a rerun resumes:

1. ``frames.npz``: MD of the fully coupled solvated system (LangevinMiddleIntegrator, the
   :class:`~molfree.freeenergy.hydration.SamplingOptions` time step, friction and platform), one frame every
   ``frame_ps`` after ``equilibration_ps``; saved every ten frames. ``frames-decoupled.npz``: the same with
   the solute decoupled (:func:`decoupled_system`), for the two-sided estimate. Nothing is simulated at
   intermediate λ.
2. ``training.pt``: u_θ trained by paired target score matching on the coupled frames (checkpointed, resumed).
3. ``result.json``, ``report.md``, ``neural-ti.png`` (training loss, ⟨∂u/∂λ⟩ along λ, per-frame works).

ΔG_hyd (kcal/mol) = ΔF · kT, ΔF = F_coupled − F_decoupled of the solvent leg; the gas leg is exactly zero.
"""
from __future__ import annotations

import copy
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import units
from ..io import atomic_write_bytes, atomic_write_text, write_json
from . import solute_ti
from .alchemy import LAMBDA_ELECTROSTATICS, LAMBDA_STERICS, alchemical_system
from .hydration import SamplingOptions, constrain_hydrogen_bonds, resolve_solute
from .solute_environment import SoluteEnvironment


@dataclass
class NeuralTIOptions:
    """Settings of :func:`neural_ti_hydration`.

    Attributes:
        n_frames: coupled MD frames.
        n_decoupled_frames: frames of MD with the solute decoupled, for the two-sided (BAR) estimate; 0: the
            one-sided exponential average over coupled frames only.
        frame_ps: MD time between frames, ps.
        equilibration_ps: MD before the first frame, ps.
        training_steps: target-score-matching steps (batch ``batch_size``).
        batch_size: configurations per training step.
        redraws: displaced copies of each frame in the training set.
        blur: width (nm) of the solute displacement that defines the training interpolant.
        n_coupling: Gauss–Legendre nodes in s on each coupling stage (sterics, electrostatics).
        n_correction: Gauss–Legendre nodes in λ for the network's term.
        poses: solute walkers per frame and node.
        sweeps, burn_in: replica-exchange sweeps averaged, and discarded first.
        moves_per_sweep: rigid-body Metropolis moves per walker and sweep.
        restraint_radius: nm; the solute's centroid stays this close to its coupled position during the TI
            (:func:`~molfree.freeenergy.solute_ti.per_frame_ti`), ``None`` for the whole box.
        insertions: test insertions per frame: into the decoupled frames, and into the coupled ones outside the
            restraint's ball (:func:`~molfree.freeenergy.solute_ti.estimate`).
    """

    n_frames: int = 50
    n_decoupled_frames: int = 50
    frame_ps: float = 1.0
    equilibration_ps: float = 20.0
    training_steps: int = 400
    batch_size: int = 128
    redraws: int = 8
    blur: float = 0.25
    n_coupling: int = 6
    n_correction: int = 6
    poses: int = 8
    sweeps: int = 30
    burn_in: int = 15
    moves_per_sweep: int = 3
    restraint_radius: float | None = 0.2
    insertions: int = 8000

    def __post_init__(self):
        for name in ("n_frames", "training_steps", "batch_size", "redraws", "n_coupling", "n_correction", "poses",
                     "sweeps", "moves_per_sweep"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.n_frames < 2 or self.n_decoupled_frames == 1 or self.n_decoupled_frames < 0:
            raise ValueError(f"n_frames must be >= 2 and n_decoupled_frames 0 or >= 2, got {self.n_frames} and "
                             f"{self.n_decoupled_frames}")
        if not self.frame_ps > 0 or self.equilibration_ps < 0 or self.burn_in < 0 or not self.blur > 0:
            raise ValueError("need frame_ps > 0, equilibration_ps >= 0, burn_in >= 0 and blur > 0")
        if (self.restraint_radius is not None or self.n_decoupled_frames) and self.insertions < 1:
            raise ValueError("insertions must be >= 1 with a restraint radius or decoupled frames")
        if self.restraint_radius is not None and not self.restraint_radius > 0:
            raise ValueError(f"restraint_radius must be positive (nm) or None, got {self.restraint_radius!r}")


def decoupled_system(system, solute_atoms: Sequence[int]):
    """A copy of ``system`` with the solute's interactions with everything else switched off (its own kept): the
    alchemical System of :func:`~molfree.freeenergy.alchemy.alchemical_system` with both λ defaults at 0."""
    alchemical = alchemical_system(system, solute_atoms)
    for force in alchemical.getForces():
        for k in range(getattr(force, "getNumGlobalParameters", lambda: 0)()):
            if force.getGlobalParameterName(k) in (LAMBDA_STERICS, LAMBDA_ELECTROSTATICS):
                force.setGlobalParameterDefaultValue(k, 0.0)
    return alchemical


def md_frames(system, positions: np.ndarray, temperature: float, n_frames: int, frame_ps: float,
                   equilibration_ps: float, path: str | os.PathLike, sampling: SamplingOptions,
                   progress: bool = False) -> tuple[np.ndarray, int]:
    """``[n_frames, N, 3]`` positions (nm; molecules whole) from MD of ``system``, and the MD steps taken.

    Frames are saved to ``path`` every ten frames; an existing file for the same system is continued from
    its last frame (with fresh velocities).
    """
    import openmm
    from openmm import unit
    from tqdm import tqdm

    path = Path(path)
    steps_per_frame = max(1, round(frame_ps / sampling.timestep))
    meta = {"n_particles": system.getNumParticles(), "temperature": float(temperature),
            "steps_per_frame": steps_per_frame}
    frames, md_steps = [], 0
    if path.is_file():
        saved = np.load(path, allow_pickle=False)
        if json.loads(str(saved["meta"])) != meta:
            raise ValueError(f"{path} holds frames of a different system or frame interval; "
                             "choose another run directory")
        frames, md_steps = list(saved["positions"]), int(saved["md_steps"])
        positions = frames[-1]
    if len(frames) >= n_frames:
        return np.stack(frames[:n_frames]), md_steps
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, sampling.friction / unit.picosecond,
                                                 sampling.timestep * unit.picosecond)
    if sampling.seed is not None:
        integrator.setRandomNumberSeed(sampling.seed + len(frames))
    properties = ({"Threads": str(sampling.threads or os.cpu_count() or 1)} if sampling.platform == "CPU" else {})
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(sampling.platform), properties)
    context.setPositions(np.asarray(positions) * unit.nanometer)
    if not frames:
        openmm.LocalEnergyMinimizer.minimize(context, maxIterations=1000)
        equilibration = round(equilibration_ps / sampling.timestep)
        context.setVelocitiesToTemperature(temperature * unit.kelvin, *(() if sampling.seed is None
                                                                        else (sampling.seed,)))
        integrator.step(equilibration)
        md_steps += equilibration
    else:
        context.setVelocitiesToTemperature(temperature * unit.kelvin)

    def save() -> None:
        buffer = io.BytesIO()
        np.savez(buffer, positions=np.stack(frames), md_steps=md_steps, meta=json.dumps(meta))
        atomic_write_bytes(path, buffer.getvalue())

    for _ in tqdm(range(len(frames), n_frames), desc="coupled MD frames", unit="frame", disable=not progress,
                  initial=len(frames), total=n_frames):
        integrator.step(steps_per_frame)
        md_steps += steps_per_frame
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        if len(frames) % 10 == 0 or len(frames) == n_frames:
            save()
    return np.stack(frames), md_steps


def _plot(path: Path, losses: list[float], estimate, kcal: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    details = estimate.details
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(losses)
    axes[0].set(xlabel="training step", ylabel="score-matching loss", yscale="log", title="training")
    axes[1].plot(details["s_nodes"], details["mean_dc_ds"], "o-", label="⟨∂c/∂s⟩ (coupling, in s)")
    axes[1].plot(details["correction_lambdas"], details["mean_dcorrection_dlambda"], "s-",
                 label="⟨∂[λ(1−λ)g]/∂λ⟩ (network, in λ)")
    axes[1].axvline(0.5, color="grey", ls=":")
    axes[1].set(xlabel="s or λ", ylabel="integrand (kT)", yscale="symlog", title="TI integrands")
    axes[1].legend(fontsize=8)
    constants = details["constants_kT"]  # on the works too, so that they share ΔG_hyd's scale
    axes[2].hist((np.asarray(details["per_frame"]) + constants) * kcal, bins=30, alpha=0.6, label="coupled frames")
    if "per_frame_decoupled" in details:
        axes[2].hist((np.asarray(details["per_frame_decoupled"]) + constants) * kcal, bins=30, alpha=0.6,
                     label="decoupled frames")
    axes[2].axvline(estimate.delta_f * kcal, color="k", label="ΔG_hyd")
    axes[2].set(xlabel="per-frame work + constants (kcal/mol)", ylabel="frames", title="per-frame insertion work")
    axes[2].legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def neural_ti_hydration(solute="methane", solute_atoms: Sequence[int] | None = None,
                        out: str | os.PathLike = "runs/solvation-methane", options: NeuralTIOptions | None = None,
                        sampling: SamplingOptions | None = None, seed: int = 0,
                        progress: bool = False) -> dict:
    """ΔG_hyd (kcal/mol) of a rigid solute in TIP3P by neural TI; writes ``out/neural-ti/``.

    Args:
        solute: a shipped solute name or a solvated :class:`molfree.systems.System` (with ``solute_atoms``).
        options: :class:`NeuralTIOptions`; sampling: MD settings (time step, friction, platform, threads, seed).
        seed: training and estimation seed.

    Returns:
        The result document (also ``result.json``): ``dG_kcal_mol``, ``error_kcal_mol``, ``delta_f_kT``,
        the per-frame ΔF, the quadrature, and the cost (MD steps, u_θ evaluations, wall time).
    """
    start = time.perf_counter()
    options, sampling = options or NeuralTIOptions(), sampling or SamplingOptions()
    solvated, solute_atoms, name = resolve_solute(solute, solute_atoms)
    folder = Path(out) / "neural-ti"
    folder.mkdir(parents=True, exist_ok=True)
    system = copy.deepcopy(solvated.system)
    constrain_hydrogen_bonds(system, solute_atoms)
    temperature = solvated.temperature
    frames, md_steps = md_frames(system, solvated.positions, temperature, options.n_frames, options.frame_ps,
                                 options.equilibration_ps, folder / "frames.npz", sampling, progress)
    if options.n_decoupled_frames:
        ghost, ghost_steps = md_frames(decoupled_system(system, solute_atoms), solvated.positions, temperature,
                                       options.n_decoupled_frames, options.frame_ps, options.equilibration_ps,
                                       folder / "frames-decoupled.npz", sampling, progress)
        frames, md_steps = np.concatenate([frames, ghost]), md_steps + ghost_steps
    environment_atoms = [i for i in range(frames.shape[1]) if i not in set(solute_atoms)]
    frames_t = torch.as_tensor(frames, dtype=torch.float64)
    environment = SoluteEnvironment(system, solute_atoms, frames_t[:, environment_atoms])
    configurations = solute_ti.pack(torch.arange(len(frames)), frames_t[:, solute_atoms])
    coupled, decoupled = configurations[:options.n_frames], configurations[options.n_frames:]
    potential = solute_ti.lambda_potential(environment, temperature)
    losses = solute_ti.train(potential, coupled, blur=options.blur, redraws=options.redraws,
                             steps=options.training_steps, batch_size=options.batch_size, seed=seed,
                             checkpoint=folder / "training.pt", progress=progress)
    constants = environment.openmm_constants(system, frames[0])
    kt = units.kT(temperature)
    estimate = solute_ti.estimate(potential, coupled, environment.box_length, sum(constants.values()) / kt,
                                  decoupled=decoupled if options.n_decoupled_frames else None,
                                  n_coupling=options.n_coupling, n_correction=options.n_correction,
                                  poses=options.poses, sweeps=options.sweeps, burn_in=options.burn_in,
                                  moves_per_sweep=options.moves_per_sweep, radius=options.restraint_radius,
                                  insertions=options.insertions,
                                  seed=seed, progress=progress)
    kcal = kt * units.KJ_TO_KCAL
    document = {"solute": name, "method": "neural-ti", "temperature_K": temperature,
                "dG_kcal_mol": estimate.delta_f * kcal, "error_kcal_mol": estimate.error * kcal,
                "delta_f_kT": estimate.delta_f, "error_kT": estimate.error, "constants_kJ_mol": constants,
                "options": asdict(options), "md_steps": md_steps,
                "training_final_loss": float(np.mean(losses[-50:])) if losses else None,
                "wall_seconds": time.perf_counter() - start, **estimate.details}
    write_json(folder / "result.json", document)
    if losses:
        np.save(folder / "losses.npy", np.asarray(losses))
    saved_losses = np.load(folder / "losses.npy").tolist() if (folder / "losses.npy").is_file() else losses
    _plot(folder / "neural-ti.png", saved_losses, estimate, kcal)
    atomic_write_text(folder / "report.md", _report(document, solvated.description))
    return document


def _report(document: dict, description: str) -> str:
    per_frame = np.asarray(document["per_frame"])
    lines = [
        f"# Hydration free energy of {document['solute']} by neural TI", "", description, "",
        (f"ΔG_hyd = {document['dG_kcal_mol']:.2f} ± {document['error_kcal_mol']:.2f} kcal/mol "
         f"(ΔF = {document['delta_f_kT']:.3f} ± {document['error_kT']:.3f} kT, {document['temperature_K']:g} K)"), "",
        (f"- {per_frame.size} coupled frames; per-frame work: mean {per_frame.mean():.2f} kT, std "
         f"{per_frame.std():.2f} kT (a one-sided exponential average over frames is reliable while this std is a "
         f"few kT); one-sided estimate from them: {document['exp_coupled_kT']:.3f} kT"),
        *([(f"- {document['n_decoupled']} decoupled frames (test insertions); one-sided estimate from them "
            f"{document['exp_decoupled_kT']:.3f} kT; the result is BAR over both sets"
            + ("" if document["works_overlap"] else ", whose works do not overlap: BAR only extrapolates (error "
               "infinite); more frames are needed"))]
          if "n_decoupled" in document else []),
        (f"- coupling part {document['coupling_part']:.3f} kT, network part {document['correction_part']:.3f} kT "
         f"(frame means); stage boundary (sterics → electrostatics) at λ = {document['stage_boundary']:.4f}"),
        *([(f"- TI restrained to a ball of {document['restraint_radius']} nm about the solute; the rest of the box "
            f"by {document['insertions']} test insertions per frame, which lowered the mean per-frame work from "
            f"{np.mean(document['per_frame_ball']):.2f} to {per_frame.mean():.2f} kT")]
          if document["restraint_radius"] is not None else []),
        (f"- {document['n_nodes']} nodes, {document['burn_in']} + {document['sweeps']} replica-exchange sweeps; "
         f"move acceptance {min(document['move_acceptance']):.2f}–{max(document['move_acceptance']):.2f}, "
         f"neighbour swap acceptance ≥ {min(document['swap_acceptance']):.2f}"),
        f"- position-independent terms (kJ/mol): {json.dumps(document['constants_kJ_mol'])}",
        (f"- cost: {document['md_steps']} MD steps of the full system, {document['solute_energy_evaluations']} "
         f"solute–environment evaluations ({document['insertion_evaluations']} of them test insertions); wall "
         f"{document['wall_seconds']:.0f} s"),
        "", "Files: result.json, neural-ti.png, frames.npz, frames-decoupled.npz, training.pt, losses.npy.", ""]
    return "\n".join(lines)
