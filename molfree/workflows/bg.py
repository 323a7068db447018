"""Boltzmann-generator workflow for alanine dipeptide: ``molfree bg train`` and ``molfree bg sample``.

``run_train(setup, out)`` writes into the run directory:
    setup.json            the declared setup (system description, reference MD, flow, training)
    reference.npz         replica-exchange reference at the target temperature (cached, reused)
    umbrella.npz          umbrella sampling along φ: the minor-basin ML data and a second ΔF (cached)
    checkpoint.pt, training.json, learning_curves.png   (see molfree.flows.training)
    samples.dcd, topology.pdb, log_weights.npy           flow samples (nm) and log importance weights
    ramachandran.png      free energy −ln p(φ, ψ): reference, reweighted flow, equal-budget MD
    metrics.json, report.md
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import systems, units
from ..io import atomic_write_text, write_json

SYSTEMS = ("alanine-dipeptide-implicit", "alanine-dipeptide-vacuum")
# per system: replica temperatures (K) for a 300 K target (scaled with the target), and ps per replica. In vacuum
# the C7ax basin (φ > 0) is reached only above ~800 K: a ladder to 650 K never visited it in 300 ps.
REFERENCE_DEFAULTS = {"alanine-dipeptide-implicit": ((300.0, 390.0, 500.0, 650.0), 300.0),
                      "alanine-dipeptide-vacuum": ((300.0, 390.0, 510.0, 660.0, 860.0, 1120.0), 1200.0)}
UMBRELLA_EQUILIBRATION_PS = 5.0  # per window, before its frames


@dataclass
class BGSetup:
    """Everything a run depends on. Times in ps, temperatures in K, masses in Da.

    Reference: replica exchange over ``replica_temperatures`` (the first is the target; default: the system's
    ladder in ``REFERENCE_DEFAULTS`` scaled to ``temperature``: 300–650 K in implicit solvent, 300–1120 K in vacuum)
    for ``reference_ps`` per replica (default: the system's, 300 ps in implicit solvent, 1200 ps in vacuum),
    Langevin (1/ps) with hydrogen-mass repartitioning (configurational distribution unchanged),
    one exchange attempt between neighbours every ``exchange_ps`` and one frame of every replica
    every ``frame_ps`` (bond and angle vibrations decorrelate in ~0.01 ps: frequent frames give the
    ML data the stiff degrees of freedom at no extra MD cost). Flow: spline couplings on internal
    coordinates (Gaussian prior on standardised bonds/angles, uniform prior on torsions).
    ΔF reference: the replica frames, with the standard error of 4 time blocks.
    Minor-basin data: replica-exchange umbrella sampling along φ at the target temperature
    (``umbrella_windows`` windows around the circle, ½ ``umbrella_k`` (φ − φ_k)² in kJ/mol/rad²,
    ``umbrella_ps`` of frames per window after 5 ps of equilibration), unbiased by MBAR. It samples
    φ > 0 at the target temperature without waiting for barrier crossings, which the replicas make rarely
    (vacuum: never C7ax in 300 ps with a ladder to 650 K). Its ΔF is reported too, but is not the reference:
    ψ relaxes too slowly in the φ > 0 windows, and with 40 ps windows ΔF still moved by 1.1 kT with the order
    in which the windows were first visited.
    Training data: the replica frames with φ < 0 with their MBAR weights at the target temperature, and
    the umbrella frames with φ > 0 with their unbiased weights, raised to ``ml_minor_share`` of the
    total (see :func:`ml_training_data`).
    Training: ``ml_steps`` of maximum likelihood, the learning rate decaying from ``lr`` along a half
    cosine (with ``validation_fraction`` > 0: ending at the best −log q on that held-out share of the
    frames; off by default, because on short correlated references the best-validation flow is too
    broad in the stiff bonds and angles to sample low energies), then ``kl_steps`` of ML + reverse KL
    (``kl_batch`` energy evaluations per step) towards the target with the same minor-basin share as
    the ML data (:func:`minor_basin_bias`). No KL steps by default: on this CPU budget they raised the
    ESS only from ~0.01 to ~0.02 and, even so biased, moved probability out of φ > 0, which spoiled ΔF;
    3000 ML steps instead of 600 overfit the correlated frames (ESS/n 0.001 against 0.03).
    Sampling: ``n_samples`` flow samples (about a minute for 10⁵ on one core); with ESS/n 0.02–0.06 the
    reweighted ΔF of 10⁵ samples has an error of 0.08–0.2 kT (0.45 kT with 2·10⁴ at ESS/n 0.03).
    """

    system: str = "alanine-dipeptide-implicit"
    temperature: float = 300.0
    replica_temperatures: list[float] | None = None
    reference_ps: float | None = None
    exchange_ps: float = 0.1
    frame_ps: float = 0.02
    timestep_fs: float = 2.0
    hydrogen_mass: float = 3.0
    n_layers: int = 8
    hidden: int = 128
    n_bins: int = 8
    ml_steps: int = 600
    kl_steps: int = 0
    batch_size: int = 256
    kl_batch: int = 64
    lr: float = 1e-3
    validation_fraction: float = 0.0
    ml_minor_share: float = 0.2
    umbrella_windows: int = 48
    umbrella_k: float = 200.0
    umbrella_ps: float = 20.0
    energy_cap_margin: float = 20.0
    n_samples: int = 100_000
    seed: int = 0
    threads: int = 1

    def __post_init__(self):
        ladder, reference_ps = REFERENCE_DEFAULTS.get(self.system, REFERENCE_DEFAULTS[SYSTEMS[0]])
        if self.replica_temperatures is None:
            self.replica_temperatures = [t * self.temperature / 300.0 for t in ladder]
        if self.reference_ps is None:
            self.reference_ps = reference_ps

    @classmethod
    def quick(cls, **overrides) -> "BGSetup":
        """A few-minute CPU setup (short reference, small flow, short training)."""
        values = dict(reference_ps=60.0, n_layers=6, hidden=64, ml_steps=400, n_samples=5000, umbrella_windows=24,
                      umbrella_ps=5.0)
        return cls(**{**values, **overrides})

    def check(self) -> None:
        if self.system not in SYSTEMS:
            raise ValueError(f"bg supports {', '.join(SYSTEMS)} (φ/ψ metrics), not {self.system!r}")
        if self.replica_temperatures[0] != self.temperature:
            raise ValueError("the first replica temperature must be the target temperature")
        if min(self.reference_ps, self.exchange_ps, self.frame_ps, self.timestep_fs) <= 0 or self.ml_steps < 1:
            raise ValueError("reference_ps, exchange_ps, frame_ps, timestep_fs must be positive and ml_steps >= 1")
        if self.umbrella_windows < 4 or min(self.umbrella_k, self.umbrella_ps) <= 0:
            raise ValueError("umbrella_windows must be >= 4 and umbrella_k, umbrella_ps positive")
        if self.frame_ps > self.exchange_ps:
            raise ValueError("frame_ps must not exceed exchange_ps (frames are saved between exchanges)")


def hydrogen_repartitioned(system, hydrogen_mass: float):
    """Copy of ``system.system`` with hydrogens of mass ``hydrogen_mass`` (Da), taken from their bonded heavy atom."""
    import openmm
    from openmm import unit

    omm = openmm.XmlSerializer.clone(system.system)
    for bond in system.topology.bonds():
        for h, heavy in ((bond[0], bond[1]), (bond[1], bond[0])):
            if h.element is not None and h.element.symbol == "H" and heavy.element.symbol != "H":
                delta = hydrogen_mass - omm.getParticleMass(h.index).value_in_unit(unit.dalton)
                omm.setParticleMass(h.index, hydrogen_mass)
                omm.setParticleMass(heavy.index, omm.getParticleMass(heavy.index).value_in_unit(unit.dalton) - delta)
    return omm


def _replica_contexts(system, setup: BGSetup) -> list:
    """One OpenMM CPU context per replica temperature, all started from the minimised input structure."""
    import openmm
    from openmm import unit

    omm = hydrogen_repartitioned(system, setup.hydrogen_mass)
    platform = openmm.Platform.getPlatformByName("CPU")
    contexts = []
    for k, temperature in enumerate(setup.replica_temperatures):
        integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, 1 / unit.picosecond,
                                                     setup.timestep_fs * unit.femtosecond)
        integrator.setRandomNumberSeed(setup.seed + k + 1)
        context = openmm.Context(omm, integrator, platform, {"Threads": "1"})
        context.setPositions(system.positions)
        if k == 0:
            openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
            start = context.getState(getPositions=True).getPositions()
        context.setPositions(start)
        context.setVelocitiesToTemperature(temperature * unit.kelvin, setup.seed + k + 1)
        contexts.append(context)
    return contexts


def _exchange(contexts: list, states: list, u: list[float], temperatures: list[float], parity: int,
              rng: np.random.Generator) -> np.ndarray:
    """Metropolis swaps between neighbours ``(k, k + 1)``, ``k ≡ parity`` (mod 2), of the replicas' current
    ``states`` (energies ``u`` kJ/mol); velocities are rescaled by √(T_new/T_old). Returns 1 per accepted pair."""
    beta = [1 / units.kT(t) for t in temperatures]
    accepted = np.zeros(len(contexts) - 1)
    for k in range(parity, len(contexts) - 1, 2):
        if math.log(rng.random() + 1e-300) < (beta[k] - beta[k + 1]) * (u[k] - u[k + 1]):
            accepted[k] = 1
            for j, other in ((k, k + 1), (k + 1, k)):
                contexts[j].setPositions(states[other].getPositions())
                contexts[j].setVelocities(states[other].getVelocities(asNumpy=True)
                                          * math.sqrt(temperatures[j] / temperatures[other]))
            states[k], states[k + 1], u[k], u[k + 1] = states[k + 1], states[k], u[k + 1], u[k]
    return accepted


def replica_exchange(system, setup: BGSetup) -> dict[str, np.ndarray]:
    """Temperature replica exchange; returns the frames of every temperature ``[K, F, N, 3]`` (nm), saved every
    ``frame_ps``, their energies ``[K, F]`` (kJ/mol), the exchange acceptance per neighbour pair (one attempt
    every ``exchange_ps``, alternating even and odd pairs) and the total number of MD steps."""
    from openmm import unit

    temperatures = setup.replica_temperatures
    contexts = _replica_contexts(system, setup)
    frame_steps = max(1, round(setup.frame_ps * 1000 / setup.timestep_fs))
    frames_per_exchange = max(1, round(setup.exchange_ps / setup.frame_ps))
    n_iterations = max(1, round(setup.reference_ps / setup.exchange_ps))
    rng = np.random.default_rng(setup.seed)
    accepted, attempted = np.zeros(len(temperatures) - 1), np.zeros(len(temperatures) - 1)
    frames, energies = [], []
    for iteration in tqdm(range(n_iterations), desc=f"replica exchange ({len(temperatures)} replicas)", unit="exch"):
        for _ in range(frames_per_exchange):
            for context in contexts:
                context.getIntegrator().step(frame_steps)
            states = [c.getState(getPositions=True, getVelocities=True, getEnergy=True) for c in contexts]
            u = [s.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) for s in states]
            frames.append([s.getPositions(asNumpy=True).value_in_unit(unit.nanometer) for s in states])
            energies.append(list(u))
        attempted[iteration % 2::2] += 1
        accepted += _exchange(contexts, states, u, temperatures, iteration % 2, rng)
    return {"positions": np.asarray(frames).swapaxes(0, 1), "energies": np.asarray(energies).T,
            "acceptance": accepted / np.maximum(attempted, 1),
            "md_steps": np.asarray(n_iterations * frames_per_exchange * frame_steps * len(temperatures))}


def reference_data(system, setup: BGSetup, out: Path) -> dict[str, np.ndarray]:
    """Replica-exchange reference, cached as ``out/reference.npz`` keyed by the reference settings."""
    key = repr((setup.system, setup.replica_temperatures, setup.reference_ps, setup.exchange_ps, setup.frame_ps,
                setup.timestep_fs, setup.hydrogen_mass, setup.seed))
    path = out / "reference.npz"
    if path.exists():
        cached = dict(np.load(path))
        if str(cached.pop("key")) == key:
            return cached
    start = time.perf_counter()
    data = replica_exchange(system, setup)
    data["seconds"] = np.asarray(time.perf_counter() - start)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".reference.tmp.npz")
    np.savez(tmp, key=key, **data)
    tmp.replace(path)
    return data


def umbrella_reference(system, setup: BGSetup, out: Path):
    """Umbrella sampling along φ (:func:`molfree.freeenergy.umbrella.torsion_umbrella`, frames every ``frame_ps``
    with positions), cached as ``out/umbrella.npz`` keyed by its settings; returns (samples, seconds)."""
    from ..freeenergy.umbrella import UmbrellaSamples, torsion_umbrella

    key = repr(("replica-exchange umbrella", setup.system, setup.temperature, setup.umbrella_windows,
                setup.umbrella_k, setup.umbrella_ps, setup.frame_ps, setup.timestep_fs, setup.hydrogen_mass,
                setup.seed))
    path = out / "umbrella.npz"
    if path.exists():
        cached = dict(np.load(path))
        if str(cached.pop("key")) == key:
            seconds = float(cached.pop("seconds"))
            return UmbrellaSamples(cached["theta"], cached["centres"], setup.umbrella_k, setup.temperature,
                                   cached["positions"]), seconds
    start = time.perf_counter()
    centres = np.linspace(-np.pi, np.pi, setup.umbrella_windows, endpoint=False)
    samples = torsion_umbrella(hydrogen_repartitioned(system, setup.hydrogen_mass), system.positions,
                               phi_psi_indices(system.topology)[0], centres, setup.umbrella_k, setup.temperature,
                               timestep_fs=setup.timestep_fs, equilibration_ps=UMBRELLA_EQUILIBRATION_PS,
                               production_ps=setup.umbrella_ps,
                               frame_ps=setup.frame_ps, seed=setup.seed, keep_positions=True)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".umbrella.tmp.npz")
    np.savez(tmp, key=key, seconds=seconds, theta=samples.theta, centres=centres, positions=samples.positions)
    tmp.replace(path)
    return samples, seconds


def analysed_reference(system, setup: BGSetup, out: Path) -> dict:
    """:func:`reference_data` plus ``angles`` (φ, ψ) ``[K·F, 2]`` (rad) of every frame and their log MBAR weights
    at the target temperature (``log_w``, ``[K·F]``)."""
    reference = reference_data(system, setup, out)
    reference["angles"] = phi_psi(reference["positions"].reshape(-1, system.n_atoms, 3),
                                  phi_psi_indices(system.topology))
    reference["log_w"] = reference_log_weights(reference["energies"], setup.replica_temperatures,
                                               [setup.temperature])[0]
    return reference


def reference_log_weights(energies: np.ndarray, temperatures: list[float], at: list[float]) -> np.ndarray:
    """Log MBAR weights ``[len(at), K·F]`` at the temperatures ``at`` (K) of all replicas' frames
    (energies ``[K, F]`` kJ/mol, sampled at ``temperatures``)."""
    from scipy.special import logsumexp

    from ..freeenergy import mbar

    u_kn = np.array([[1 / units.kT(t)] for t in temperatures]) * energies.reshape(1, -1)
    n_k = np.full(len(temperatures), energies.shape[1])
    f_k = mbar(u_kn, n_k).f_k
    mixture = logsumexp(f_k[:, None] - u_kn + np.log(n_k)[:, None], axis=0)
    return np.array([-energies.reshape(-1) / units.kT(t) - mixture for t in at])


def reference_delta_f(reference: dict, setup: BGSetup, blocks: int = 4) -> tuple[float, float, list[float]]:
    """ΔF = −ln P(φ>0)/P(φ<0) (kT) of the replica-exchange reference from all frames, its standard error over
    ``blocks`` consecutive time blocks (each reweighted by its own MBAR), and the block values.

    The frames are strongly correlated (φ changes basin rarely), so the delta-method error of the pooled
    frames is far too small; the spread of the blocks is the honest error.
    """
    from ..flows import basin_free_energy

    energies = reference["energies"]
    angles = reference["angles"].reshape(*energies.shape, 2)
    pooled, _ = basin_free_energy(angles[..., 0].reshape(-1), reference["log_w"])
    edges = np.linspace(0, energies.shape[1], blocks + 1).astype(int)
    values = [basin_free_energy(angles[:, a:b, 0].reshape(-1), reference_log_weights(
        energies[:, a:b], setup.replica_temperatures, [setup.temperature])[0])[0] for a, b in pairwise(edges)]
    return pooled, _block_error(values), values


def umbrella_delta_f(umbrella, blocks: int = 4) -> tuple[float, float, list[float]]:
    """ΔF = −ln P(φ>0)/P(φ<0) (kT) from umbrella samples along φ (all frames, MBAR), its standard error over
    ``blocks`` consecutive time blocks of every window (each unbiased by its own MBAR; NaN and an infinite
    error for a block whose windows do not overlap), and the block values. Raises
    :class:`~molfree.freeenergy.PoorOverlapError` if the windows do not overlap with all frames."""
    from ..flows import basin_free_energy
    from ..freeenergy import PoorOverlapError

    def delta_f(frames: slice) -> float:
        try:
            return basin_free_energy(phi[:, frames].reshape(-1), umbrella.log_weights(frames))[0]
        except PoorOverlapError:
            return math.nan

    phi = umbrella.theta
    pooled, _ = basin_free_energy(phi.reshape(-1), umbrella.log_weights())
    edges = np.linspace(0, phi.shape[1], blocks + 1).astype(int)
    values = [delta_f(slice(a, b)) for a, b in pairwise(edges)]
    return pooled, _block_error(values), values


def _block_error(values: list[float]) -> float:
    """Standard error of block estimates; inf if a block has no finite estimate (e.g. no weight in φ > 0)."""
    if not all(math.isfinite(v) for v in values):
        return math.inf
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def basin_mixture(reference: dict, share_minor: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames ``[M, N, 3]`` (nm), their (φ, ψ) ``[M, 2]`` (rad) and weights ``[M]`` (sum 1): the replica frames with
    φ < 0 with their MBAR weights ``reference["log_w"]`` at the target temperature, then the umbrella frames with
    φ > 0 with their unbiased weights, holding the umbrella's P(φ > 0) or ``share_minor``, if larger.

    The minor basin φ > 0 holds ~0.2 % at 300 K in implicit solvent; the replicas visit it rarely (in vacuum
    the C7ax basin only from their hottest replicas), the umbrella windows sample it at the target temperature."""
    from ..flows.metrics import normalized_weights

    umbrella = reference["umbrella"]
    w_major = normalized_weights(reference["log_w"]) * (reference["angles"][:, 0] < 0)
    w_minor = normalized_weights(umbrella.log_weights()) * (umbrella.theta.reshape(-1) > 0)
    minor = w_minor > 0
    share = max(share_minor, float(w_minor.sum())) if minor.any() else 0.0
    frames = np.concatenate([reference["positions"].reshape(-1, *reference["positions"].shape[2:]),
                             umbrella.positions.reshape(-1, *umbrella.positions.shape[2:])[minor]])
    angles = np.concatenate([reference["angles"], reference["umbrella_angles"][minor]])
    weights = np.concatenate([w_major * (1 - share) / w_major.sum(), w_minor[minor] * share / w_minor.sum()])
    return frames, angles, weights


def ml_training_data(reference: dict, share_minor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ML frames ``[M, N, 3]`` (nm) and weights ``[M]``: :func:`basin_mixture` with the minor basin raised to
    ``share_minor``. The flow then learns it; its samples' importance weights undo the raised share."""
    frames, _, weights = basin_mixture(reference, share_minor)
    return torch.as_tensor(frames, dtype=torch.float32), torch.as_tensor(weights)


def minor_basin_bias(p_minor: float, share_minor: float, phi_atoms: np.ndarray):
    """Reduced-energy offset ``x [B, N, 3] -> [B]`` (kT) for the KL stage: −ln(share/(1 − share) · P(φ<0)/P(φ>0))
    where φ > 0 (``p_minor`` = P(φ>0) at the target temperature), 0 elsewhere, so that reverse KL targets the
    same minor-basin share as the ML data (:func:`ml_training_data`) instead of removing it."""
    from ..flows.internal import dihedral

    share = max(share_minor, p_minor)
    offset = -math.log(share / (1 - share) * (1 - p_minor) / p_minor) if 0 < p_minor < 1 else 0.0
    atoms = torch.as_tensor(phi_atoms)

    def bias(x: torch.Tensor) -> torch.Tensor:
        phi = dihedral(*(x[:, i] for i in atoms))
        return torch.where(phi > 0, offset, 0.0).to(x.dtype)

    return bias


def phi_psi_indices(topology) -> np.ndarray:
    """Atom indices ``[2, 4]`` of the backbone dihedrals φ and ψ (mdtraj's definitions)."""
    import mdtraj

    traj = mdtraj.Trajectory(np.zeros((1, topology.getNumAtoms(), 3)), mdtraj.Topology.from_openmm(topology))
    return np.stack([mdtraj.compute_phi(traj)[0][0], mdtraj.compute_psi(traj)[0][0]])


def phi_psi(positions, indices: np.ndarray) -> np.ndarray:
    """Backbone dihedrals ``[B, 2]`` (rad) of positions ``[B, N, 3]``."""
    from ..flows.internal import dihedral

    x = torch.as_tensor(np.asarray(positions, dtype=np.float64))
    return torch.stack([dihedral(*(x[:, i] for i in idx)) for idx in indices], -1).numpy()


def build_generator(system, setup: BGSetup, data: torch.Tensor):
    """The flow on internal coordinates, standardised by ``data`` ``[M, N, 3]`` (nm), with chirality check."""
    from ..energies.openmm_energy import OpenMMEnergy
    from ..flows import (BoltzmannGenerator, Chirality, InternalCoordinates, NormalDistribution, ProductDistribution,
                         SequentialFlow, Standardize, UniformTorus, spline_flow)

    ic = InternalCoordinates(system.topology)
    circular = ic.circular
    q, _ = ic.inverse(data.double())
    mean = torch.where(circular, 0.0, q.mean(0))
    std = torch.where(circular, 1.0, q.std(0).clamp_min(1e-4))
    n_torsions = int(circular.sum())
    prior = ProductDistribution([NormalDistribution(ic.dim - n_torsions), UniformTorus(n_torsions)])
    flow = SequentialFlow([spline_flow(ic.dim, circular, n_layers=setup.n_layers, hidden=setup.hidden,
                                       n_bins=setup.n_bins, seed=setup.seed), Standardize(mean, std), ic])
    energy = OpenMMEnergy(system.system, platform="CPU", platform_properties={"Threads": "1"})
    return BoltzmannGenerator(prior, flow, energy, setup.temperature,
                              validity=Chirality(system.topology, system.positions))


def _sampling_metrics(angles: np.ndarray, log_w, reference: dict) -> dict:
    """KL, W2 and ΔF of (possibly weighted) φ/ψ samples ``[B, 2]`` against the weighted reference
    (:func:`basin_mixture`) and the umbrella ΔF."""
    from ..flows import basin_free_energy, kl_divergence, wasserstein2_torus
    from ..flows.metrics import normalized_weights

    ref, ref_w = reference["mixture_angles"], reference["mixture_log_w"]
    kept = np.ones(len(angles), dtype=bool) if log_w is None else np.isfinite(log_w)
    df, df_err = basin_free_energy(angles[:, 0], log_w)
    df_ref = reference["delta_f"][0]
    return {"kl_phi": kl_divergence(ref[:, 0], angles[:, 0], log_w, reference_log_w=ref_w),
            "kl_psi": kl_divergence(ref[:, 1], angles[:, 1], log_w, reference_log_w=ref_w),
            "kl_phi_psi": kl_divergence(ref, angles, log_w, bins=30, reference_log_w=ref_w),
            "w2_phi": wasserstein2_torus(ref[:, :1], angles[:, :1], log_w, reference_log_w=ref_w),
            "w2_phi_psi": wasserstein2_torus(ref, angles, log_w, reference_log_w=ref_w),
            "n_phi_positive": int((kept & (angles[:, 0] > 0)).sum()),
            "delta_f_kt": df, "delta_f_error_kt": df_err, "delta_f_deviation_kt": abs(df - df_ref),
            "fraction_phi_positive": float(np.sum(normalized_weights(log_w)[angles[:, 0] > 0]) if log_w is not None
                                           else np.mean(angles[:, 0] > 0))}


def ramachandran_figure(panels: list[tuple[str, np.ndarray, np.ndarray | None]], path: Path) -> None:
    """PNG of free energies −ln p(φ, ψ) (kT, minimum 0) for (title, angles [B, 2], log weights or None) panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..flows.metrics import normalized_weights

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, angles, log_w) in zip(axes[0], panels):
        weights = None if log_w is None else normalized_weights(log_w)
        hist, xe, ye = np.histogram2d(angles[:, 0], angles[:, 1], bins=60, range=[[-np.pi, np.pi]] * 2,
                                      weights=weights, density=True)
        with np.errstate(divide="ignore"):
            free = -np.log(hist)
        free -= free[np.isfinite(free)].min()
        mesh = ax.pcolormesh(xe, ye, np.where(np.isfinite(free), free, np.nan).T, cmap="viridis", vmax=10)
        ax.set(xlabel="φ (rad)", ylabel="ψ (rad)", title=title)
    fig.colorbar(mesh, ax=axes[0].tolist(), label="free energy / kT")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_samples(out: Path, system, x: torch.Tensor, log_w: torch.Tensor) -> None:
    import mdtraj

    topology = mdtraj.Topology.from_openmm(system.topology)
    traj = mdtraj.Trajectory(x.detach().numpy().astype(np.float32), topology)
    traj[0].save_pdb(str(out / "topology.pdb"))
    tmp = out / ".samples.tmp.dcd"
    traj.save_dcd(str(tmp))
    tmp.replace(out / "samples.dcd")
    np.save(out / "log_weights.npy", log_w.numpy())


def _evaluate(generator, system, setup: BGSetup, reference: dict, out: Path) -> dict:
    """Sample the flow, compute its metrics and those of MD with the same number of energy evaluations
    (KL training + sampling); write the samples and the Ramachandran figure."""
    from ..flows import fraction_below, fraction_finite, kish_ess
    from .demo import run_md

    indices = phi_psi_indices(system.topology)
    start = time.perf_counter()
    x, log_w, u = generator.sample_with_energies(setup.n_samples, batch_size=500)
    sample_seconds = time.perf_counter() - start
    flow_angles = phi_psi(x, indices)
    budget = generator.energy_evaluations
    flow = {"ess": kish_ess(log_w), "fraction_finite": fraction_finite(log_w),
            "fraction_low_energy": fraction_below(u, energy_cap(reference, setup)), "n_samples": setup.n_samples,
            "energy_evaluations": budget, "rejected_chirality": generator.n_rejected,
            "nonfinite": generator.n_nonfinite, "sampling_seconds": sample_seconds,
            **_sampling_metrics(flow_angles, log_w.numpy(), reference)}
    md_ps = budget * 1e-3  # run_md integrates at 1 fs: one force evaluation per step
    start = time.perf_counter()
    md_frames, _ = run_md(system, md_ps, seed=setup.seed + 100, timestep_fs=1.0,
                          frame_interval_ps=max(md_ps / 2000, 0.01))
    md_angles = phi_psi(md_frames, indices)
    baseline = {"method": f"Langevin MD at {setup.temperature:g} K, {md_ps:.4g} ps at 1 fs",
                "energy_evaluations": budget, "seconds": time.perf_counter() - start,
                **_sampling_metrics(md_angles, None, reference)}
    _write_samples(out, system, x, log_w)
    ramachandran_figure([("reference (replicas φ<0, umbrella φ>0)", reference["mixture_angles"],
                          reference["mixture_log_w"]),
                         ("flow, reweighted", flow_angles, log_w.numpy()),
                         (f"MD, equal budget ({budget} evals)", md_angles, None)], out / "ramachandran.png")
    return {"flow": flow, "baseline_md": baseline}


def energy_cap(reference: dict, setup: BGSetup) -> float:
    """Reduced energy (kT) above which training regularises and samples count as high-energy:
    the highest target-temperature reference energy plus ``energy_cap_margin``."""
    return float(np.max(reference["energies"][0]) / units.kT(setup.temperature) + setup.energy_cap_margin)


def _load_setup(out: Path, setup: BGSetup | None) -> BGSetup:
    """The run directory's setup; a different ``setup`` for an existing run is an error."""
    path = out / "setup.json"
    if path.exists():
        import json

        values = json.loads(path.read_text())["setup"]
        unknown = sorted(set(values) - {f.name for f in fields(BGSetup)})
        if unknown:
            raise ValueError(f"{out} holds a run from an older molfree (setup keys {', '.join(unknown)}); "
                             "choose another --out")
        saved = BGSetup(**values)
        if setup is not None and asdict(setup) != asdict(saved):
            raise ValueError(f"{out} holds a run with a different setup ({path}); choose another --out")
        return saved
    if setup is None:
        raise FileNotFoundError(f"no Boltzmann-generator run in {out} (missing setup.json); run `molfree bg train`")
    return setup


def _declare(out: Path, setup: BGSetup, system) -> None:
    write_json(out / "setup.json", {
        "setup": asdict(setup), "system_description": system.description,
        "coordinates": "flow on internal coordinates (Z-matrix from the topology's bonds; bonds nm, angles and "
                       "torsions rad; rigid-body frame removed, samples in the canonical frame)",
        "reference": "temperature replica exchange (OpenMM CPU platform, Langevin 1/ps, hydrogen-mass "
                     "repartitioning), all replicas' frames reweighted to the target temperature by MBAR; "
                     "replica-exchange umbrella sampling along φ at the target temperature for the minor basin",
        "chirality": "samples whose Cα handedness differs from the input structure are rejected (weight 0)"})


def _prepare(setup: BGSetup, out: Path):
    setup.check()
    torch.set_num_threads(setup.threads)
    system = systems.load(setup.system, temperature=setup.temperature, platform="CPU")
    reference = analysed_reference(system, setup, out)
    reference["umbrella"], reference["umbrella_seconds"] = umbrella_reference(system, setup, out)
    reference["delta_f"] = reference_delta_f(reference, setup)
    reference["umbrella_angles"] = phi_psi(reference["umbrella"].positions.reshape(-1, system.n_atoms, 3),
                                           phi_psi_indices(system.topology))
    _, reference["mixture_angles"], weights = basin_mixture(reference)
    with np.errstate(divide="ignore"):
        reference["mixture_log_w"] = np.log(weights)
    target_frames = torch.as_tensor(reference["positions"][0], dtype=torch.float32)
    return system, reference, build_generator(system, setup, target_frames)


def _finish(results: dict, setup: BGSetup, system, reference: dict, out: Path, training_seconds: float) -> dict:
    from ..flows import kish_ess

    df_ref, df_ref_err, df_blocks = reference["delta_f"]
    df_umbrella, df_umbrella_err, df_umbrella_blocks = umbrella_delta_f(reference["umbrella"])
    umbrella = reference["umbrella"]
    umbrella_steps = umbrella.theta.size * round(setup.frame_ps * 1000 / setup.timestep_fs) + round(
        UMBRELLA_EQUILIBRATION_PS * 1000 / setup.timestep_fs) * len(umbrella.centres)
    results["reference"] = {"method": "temperature replica exchange, all replicas reweighted by MBAR",
                            "frames": int(len(reference["angles"])), "ess": kish_ess(reference["log_w"]),
                            "md_steps": int(reference["md_steps"]) + umbrella_steps,
                            "seconds": float(reference["seconds"]) + reference["umbrella_seconds"],
                            "exchange_acceptance": reference["acceptance"].tolist(),
                            "delta_f_kt": df_ref, "delta_f_error_kt": df_ref_err, "delta_f_blocks_kt": df_blocks,
                            "delta_f_error_method": "standard error of 4 consecutive time blocks",
                            "umbrella": f"replica-exchange umbrella sampling along φ ({len(umbrella.centres)} "
                                        f"windows × {setup.umbrella_ps:g} ps, swap acceptance "
                                        f"{umbrella.exchange_acceptance or 0:.2f}), MBAR; not the ΔF reference",
                            "umbrella_delta_f_kt": df_umbrella, "umbrella_delta_f_error_kt": df_umbrella_err,
                            "umbrella_delta_f_blocks_kt": df_umbrella_blocks}
    results["training_seconds"] = training_seconds
    results["system"] = setup.system
    write_json(out / "metrics.json", results)
    atomic_write_text(out / "report.md", report(results, setup, system))
    return results


def run_train(setup: BGSetup, out: str | Path, progress: bool = True) -> dict:
    """Reference data, ML then ML+KL training (resumable), sampling, metrics and the equal-budget MD baseline."""
    from ..flows import Stage, Trainer

    out = Path(out)
    setup = _load_setup(out, setup)
    setup.check()
    torch.manual_seed(setup.seed)
    out.mkdir(parents=True, exist_ok=True)
    system, reference, generator = _prepare(setup, out)
    data, weights = ml_training_data(reference, setup.ml_minor_share)
    _declare(out, setup, system)
    stages = [Stage("ml", setup.ml_steps, lr=setup.lr, cosine=True)]
    if setup.kl_steps:
        stages.append(Stage("ml+kl", setup.kl_steps, ml_weight=1.0, kl_weight=1.0, lr=setup.lr / 3))
    p_minor = float(np.exp(reference["mixture_log_w"])[reference["mixture_angles"][:, 0] > 0].sum())
    bias = minor_basin_bias(p_minor, setup.ml_minor_share, phi_psi_indices(system.topology)[0])
    trainer = Trainer(generator, out, setup.system, data=data, data_weights=weights, kl_bias=bias,
                      batch_size=setup.batch_size, kl_batch_size=setup.kl_batch,
                      energy_cap=energy_cap(reference, setup), progress=progress,
                      validation_fraction=setup.validation_fraction)
    trainer.fit(stages)
    return _finish(_evaluate(generator, system, setup, reference, out), setup, system, reference, out, trainer.seconds)


def run_sample(run_dir: str | Path, n_samples: int | None = None) -> dict:
    """Sample a trained run again (``n_samples`` overrides the setup) and rewrite its samples, metrics and report."""
    from ..flows import load_checkpoint
    from ..flows.training import CHECKPOINT

    out = Path(run_dir)
    setup = _load_setup(out, None)
    if n_samples is not None:
        setup.n_samples = int(n_samples)
    if not (out / CHECKPOINT).exists():
        raise FileNotFoundError(f"no checkpoint in {out}; run `molfree bg train --out {out}` first")
    system, reference, generator = _prepare(setup, out)
    checkpoint = load_checkpoint(generator, out / CHECKPOINT, setup.system)
    return _finish(_evaluate(generator, system, setup, reference, out), setup, system, reference, out,
                   checkpoint["seconds"])


def summary(results: dict) -> str:
    """Flow and equal-budget MD side by side, with the reference ΔF."""
    ref = results["reference"]
    lines = [f"{'':26s}{'ESS':>7s}{'KL(φ)':>8s}{'W2(φ,ψ)':>9s}{'ΔF/kT':>15s}{'|ΔF−ref|':>10s}{'evals':>9s}",
             f"{'reference (replicas)':26s}{'':7s}{'':8s}{'':9s}"
             f"{ref['delta_f_kt']:>8.2f} ± {ref['delta_f_error_kt']:<4.2f}{'':10s}{ref['md_steps']:>9d} MD steps"]
    for name, row in (("flow (reweighted)", results["flow"]), ("MD, equal budget", results["baseline_md"])):
        ess = f"{row['ess']:.3f}" if "ess" in row else "-"
        lines.append(f"{name:26s}{ess:>7s}{row['kl_phi']:>8.3f}{row['w2_phi_psi']:>9.3f}"
                     f"{row['delta_f_kt']:>8.2f} ± {row['delta_f_error_kt']:<4.2f}{row['delta_f_deviation_kt']:>10.2f}"
                     f"{row['energy_evaluations']:>9d}")
    return "\n".join(lines)


def _reference_warning(ref: dict) -> list[str]:
    """A report line when the replicas' and the umbrella's ΔF differ by more than 1 kT."""
    gap = abs(ref["delta_f_kt"] - ref["umbrella_delta_f_kt"])
    if gap <= 1.0:
        return []
    return [f"- **Warning:** the replicas' ΔF and the umbrella's differ by {gap:.1f} kT. The replicas may not have "
            "visited the minor basin at all (in vacuum a ladder to 650 K never reached C7ax in 300 ps); then the "
            "reference ΔF and |ΔF − ΔF_ref| are not meaningful. Compare with a longer reference "
            "(`benchmarks/bg_reference.py`)."]


def report(results: dict, setup: BGSetup, system) -> str:
    """Markdown report of a run."""
    flow, ref = results["flow"], results["reference"]
    return "\n".join([
        f"# Boltzmann generator: {setup.system}", "",
        f"System: {system.description}", "",
        f"- Reference: {ref['method']} over {setup.replica_temperatures} K, {setup.reference_ps:g} ps per replica "
        f"({ref['md_steps']} MD steps, {ref['seconds']:.0f} s), exchange acceptance "
        f"{', '.join(f'{a:.2f}' for a in ref['exchange_acceptance'])}; {ref['frames']} frames of all replicas "
        f"reweighted to {setup.temperature:g} K by MBAR (ESS/n {ref['ess']:.2f}) give the reference ΔF and, where "
        "φ < 0, the Ramachandran reference and the ML training data.",
        *_reference_warning(ref),
        f"- Minor basin: {ref['umbrella']}, k = {setup.umbrella_k:g} kJ/mol/rad². Its frames with φ > 0 are the "
        f"minor-basin ML data, raised to ≥ {setup.ml_minor_share:g} of the weight (the flow's importance weights "
        f"undo this). Its ΔF, {ref['umbrella_delta_f_kt']:.2f} ± {ref['umbrella_delta_f_error_kt']:.2f} kT, is not "
        "the reference: ψ relaxes too slowly in its φ > 0 windows (ΔF depends on the windows' start by ~1 kT).",
        f"- Flow: {setup.n_layers} rational-quadratic spline couplings ({setup.n_bins} bins, hidden {setup.hidden}) "
        "on internal coordinates; circular splines and a uniform prior for torsions.",
        f"- Training: {setup.ml_steps} ML steps, then {setup.kl_steps} ML+KL steps ({setup.kl_batch} energy "
        f"evaluations each); {results['training_seconds']:.0f} s.",
        f"- Sampling: {flow['n_samples']} samples, ESS/n = {flow['ess']:.3f}, finite {flow['fraction_finite']:.3f}, "
        f"low-energy {flow['fraction_low_energy']:.3f}, rejected for chirality {flow['rejected_chirality']}.", "",
        "Equal-budget baseline: MD with as many force evaluations as the flow used energy evaluations "
        "(KL training + sampling; the reference MD that supplied the ML data is listed separately).", "",
        "```", summary(results), "```", "",
        "ΔF = −ln(P(φ>0)/P(φ<0)) against the replicas' ΔF; its error is the spread of 4 time blocks, the flow's "
        "and MD's assume independent samples (MD's are optimistic).", "",
        "Files: `samples.dcd` + `topology.pdb` (nm, canonical frame), `log_weights.npy`, `ramachandran.png`, "
        "`learning_curves.png`, `training.json`, `metrics.json`, `setup.json`, `reference.npz`, `umbrella.npz`.",
        ""])
