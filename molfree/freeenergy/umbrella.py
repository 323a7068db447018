"""Replica-exchange umbrella sampling along one torsion of an OpenMM System, unbiased by MBAR.

Each window k adds the periodic harmonic bias ½ κ d(θ, θ_k)² (κ in kJ/mol/rad², d the angle difference
wrapped to (−π, π]) to the System; the windows run side by side, one Context each, and neighbours
swap configurations (Metropolis on the bias energies). Because the bias depends on θ alone, the reduced
bias energies of every frame in every window are all MBAR needs; the unbiased ensemble's weights follow
from the MBAR free energies f_k: ln w_n = −ln Σ_k N_k exp(f_k − u_k(θ_n)).

Only θ is driven: coordinates orthogonal to it must relax within the windows (and through the swaps).
Where one does not, the result depends on the windows' starting states — check by starting from other
structures or visiting the windows in the other direction.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import logsumexp
from tqdm.auto import tqdm

from .. import units
from .estimators import mbar


def wrapped(angle: np.ndarray) -> np.ndarray:
    """Angles (rad) wrapped to (−π, π]."""
    return np.angle(np.exp(1j * np.asarray(angle, dtype=np.float64)))


def torsion(positions: np.ndarray, atoms) -> np.ndarray:
    """The torsion (rad) of four ``atoms`` in positions ``[B, N, 3]`` (nm), ``[B]``; OpenMM's sign convention."""
    from ..flows.internal import dihedral

    x = torch.as_tensor(np.asarray(positions, dtype=np.float64))
    return dihedral(*(x[:, int(i)] for i in atoms)).numpy()


@dataclass
class UmbrellaSamples:
    """Frames of K umbrella windows: torsions ``theta`` ``[K, F]`` (rad), optionally ``positions`` ``[K, F, N, 3]``
    (nm), the window ``centres`` ``[K]`` (rad), the force constant (kJ/mol/rad²), temperature (K) and the
    fraction of accepted swaps between neighbouring windows."""

    theta: np.ndarray
    centres: np.ndarray
    force_constant: float
    temperature: float
    positions: np.ndarray | None = None
    exchange_acceptance: float | None = None
    _all_frames_log_w: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def log_weights(self, frames: slice = slice(None)) -> np.ndarray:
        """Normalised unbiased log weights ``[K·F']`` of the frames ``frames`` of every window (MBAR; the solve for
        all frames, seconds for 10⁴–10⁵ frames, is done once)."""
        if frames != slice(None):
            return unbiased_log_weights(self.theta[:, frames], self.centres, self.force_constant, self.temperature)
        if self._all_frames_log_w is None:
            self._all_frames_log_w = unbiased_log_weights(self.theta, self.centres, self.force_constant,
                                                          self.temperature)
        return self._all_frames_log_w


def torsion_umbrella(system, positions, atoms, centres, force_constant: float, temperature: float, *,
                     timestep_fs: float = 2.0, friction: float = 1.0, equilibration_ps: float = 5.0,
                     production_ps: float = 40.0, frame_ps: float = 0.05, exchange_ps: float | None = 1.0,
                     seed: int = 0, keep_positions: bool = False, progress: bool = True) -> UmbrellaSamples:
    """Sample the torsion ``atoms`` in umbrella windows centred at ``centres`` (rad, ``[K]``, in order around the
    circle), with replica exchange between neighbouring windows.

    Args:
        system: an ``openmm.System`` (not modified; a bias force is added to a copy).
        positions: starting positions ``[N, 3]`` (nm), minimised first.
        force_constant: κ (kJ/mol/rad²); temperature: K; friction: Langevin, 1/ps; times in fs and ps.
        exchange_ps: interval of swap attempts between neighbouring windows (None: no swaps).
        keep_positions: also keep every frame's positions (float32).
    Start: the windows are visited in order around the circle from the one nearest the minimised structure's θ,
    each equilibrated for ``equilibration_ps`` from the previous window's last state. Production: all windows run
    side by side for ``production_ps``, a frame every ``frame_ps``; every ``exchange_ps`` neighbouring windows
    (alternately even and odd pairs, the circle closed for even K) swap configurations with the Metropolis
    probability of their bias energies. Swaps let coordinates orthogonal to θ relax in windows where they are
    fast; without them the result can depend on the order of the start (alanine dipeptide's φ, 72 windows of
    40 ps: ΔF between the φ > 0 and φ < 0 halves 6.4 kT visiting windows upwards, 5.0 kT downwards).
    """
    import openmm
    from openmm import unit

    centres = np.asarray(centres, dtype=np.float64)
    if centres.ndim != 1 or centres.size < 2 or len(atoms) != 4 or not force_constant > 0:
        raise ValueError("need ≥ 2 window centres [K], four torsion atoms and a positive force constant")
    if min(timestep_fs, frame_ps, production_ps) <= 0 or equilibration_ps < 0:
        raise ValueError("timestep_fs, frame_ps and production_ps must be positive, equilibration_ps non-negative")
    if exchange_ps is not None and exchange_ps < frame_ps:
        raise ValueError(f"exchange_ps must be at least frame_ps ({frame_ps}), got {exchange_ps}")
    biased = openmm.XmlSerializer.clone(system)
    bias = openmm.CustomTorsionForce(f"0.5*k_umbrella*d^2; d = dt - 2*pi*floor((dt + pi)/(2*pi)); "
                                     f"dt = theta - theta0_umbrella; pi = {np.pi!r}")
    bias.addGlobalParameter("k_umbrella", 0.0)
    bias.addGlobalParameter("theta0_umbrella", 0.0)
    bias.addTorsion(*(int(i) for i in atoms))
    biased.addForce(bias)
    platform = openmm.Platform.getPlatformByName("CPU")
    contexts = []
    for w, centre in enumerate(centres):
        integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, friction / unit.picosecond,
                                                     timestep_fs * unit.femtosecond)
        integrator.setRandomNumberSeed(seed + 1 + w)
        contexts.append(openmm.Context(biased, integrator, platform, {"Threads": "1"}))
        contexts[-1].setParameter("theta0_umbrella", float(centre))
    contexts[0].setPositions(np.asarray(positions))
    openmm.LocalEnergyMinimizer.minimize(contexts[0], 10.0, 200)
    contexts[0].setVelocitiesToTemperature(temperature * unit.kelvin, seed + 1)
    state = contexts[0].getState(getPositions=True, getVelocities=True)
    for context in contexts:
        context.setParameter("k_umbrella", force_constant)

    def current(context) -> tuple[np.ndarray, float]:
        x = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        return x, float(torsion(x[None], atoms)[0])

    steps = round(equilibration_ps * 1000 / timestep_fs)
    minimised = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    first = int(np.argmin(np.abs(wrapped(centres - torsion(minimised[None], atoms)[0]))))
    for w in tqdm([(first + i) % centres.size for i in range(centres.size)], desc="umbrella windows (start)",
                  disable=not progress):
        contexts[w].setPositions(state.getPositions())
        contexts[w].setVelocities(state.getVelocities())
        contexts[w].getIntegrator().step(steps)
        state = contexts[w].getState(getPositions=True, getVelocities=True)

    frame_steps = max(1, round(frame_ps * 1000 / timestep_fs))
    n_frames = max(1, round(production_ps / frame_ps))
    per_exchange = n_frames if exchange_ps is None else max(1, round(exchange_ps / frame_ps))
    theta = np.empty((centres.size, n_frames))
    frames = np.empty((centres.size, n_frames, system.getNumParticles(), 3), np.float32) if keep_positions else None
    beta_k = force_constant / units.kT(temperature)
    rng = np.random.default_rng(seed)
    accepted = attempted = 0
    for f in tqdm(range(n_frames), desc="umbrella windows (production)", unit="frame", disable=not progress):
        for w, context in enumerate(contexts):
            context.getIntegrator().step(frame_steps)
            x, theta[w, f] = current(context)
            if frames is not None:
                frames[w, f] = x
        if (f + 1) % per_exchange or f + 1 == n_frames:
            continue
        parity = (f + 1) // per_exchange % 2
        for i in range(parity, centres.size - (centres.size % 2 == 1), 2):
            j = (i + 1) % centres.size
            now = 0.5 * beta_k * (wrapped(theta[i, f] - centres[i]) ** 2 + wrapped(theta[j, f] - centres[j]) ** 2)
            swapped = 0.5 * beta_k * (wrapped(theta[j, f] - centres[i]) ** 2 + wrapped(theta[i, f] - centres[j]) ** 2)
            attempted += 1
            if rng.random() < np.exp(min(0.0, now - swapped)):
                accepted += 1
                a, b = (c.getState(getPositions=True, getVelocities=True) for c in (contexts[i], contexts[j]))
                for context, other in ((contexts[i], b), (contexts[j], a)):
                    context.setPositions(other.getPositions())
                    context.setVelocities(other.getVelocities())
    return UmbrellaSamples(theta, centres, float(force_constant), float(temperature), frames,
                           accepted / attempted if attempted else None)


def unbiased_log_weights(theta: np.ndarray, centres, force_constant: float, temperature: float) -> np.ndarray:
    """Normalised log weights ``[K·F]`` of the umbrella frames ``theta`` ``[K, F]`` (rad) in the unbiased ensemble.

    Raises :class:`~molfree.freeenergy.PoorOverlapError` if neighbouring windows do not overlap.
    """
    theta = np.asarray(theta, dtype=np.float64)
    centres = np.asarray(centres, dtype=np.float64)
    if theta.ndim != 2 or theta.shape[0] != centres.size:
        raise ValueError(f"theta must be [K, F] with K = {centres.size} windows, got {theta.shape}")
    u_kn = 0.5 * force_constant * wrapped(theta.reshape(1, -1) - centres[:, None]) ** 2 / units.kT(temperature)
    n_k = np.full(centres.size, theta.shape[1])
    log_w = -logsumexp(mbar(u_kn, n_k).f_k[:, None] - u_kn, b=n_k[:, None], axis=0)
    return log_w - logsumexp(log_w)
