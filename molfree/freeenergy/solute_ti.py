"""Neural thermodynamic integration for a rigid solute in a periodic solvent (methane or water in TIP3P).

The LJ insertion of :func:`molfree.freeenergy.lj_insertion.neural_ti`, for a molecule with Lennard-Jones and
PME electrostatics taken from an OpenMM System. A coupled frame X (the environment and the solute's internal
geometry, from MD of the solvated system) fixes everything but the solute's rigid-body pose g. With
Δu(X, g) the solute–environment interaction (:class:`~.solute_environment.SoluteEnvironment`) and
z(X) = ⟨e^{−Δu(X, g)}⟩ over uniform poses (translations in the box, rotations), the decoupled and coupled
states satisfy p₁(X) ∝ p₀(X) z(X), hence exactly

    e^{ΔF} = ⟨e^{ΔF(X)}⟩_{X ~ p₁},   ΔF(X) = −ln z(X),   ΔF = F_coupled − F_decoupled (kT).

ΔF(X) is a TI over the solute's six degrees of freedom in the frozen frame along the learned path

    u_θ(X, g, λ) − u₀ = c(X, g, s_θ(λ)) + λ(1 − λ) g_θ(X, g, λ)   (kT),

where the staged coupling c switches the soft-core LJ on over s ∈ [0, ½] and then the charges linearly over
s ∈ [½, 1] (charges at full strength with a soft core would collapse onto the water's), s_θ is the learned
monotone schedule and g_θ a solute–environment pair network, so u_θ equals the physical endpoints at λ = 0
and 1 by construction. u_θ is trained by paired target score matching on the solute's coupled score, with
the solute displaced by a Gaussian blur that shrinks as λ → 1 (:func:`train`); nothing is simulated at
intermediate λ for training. ΔF(X) is then integrated (:func:`per_frame_ti`) with replica exchange of the
rigid solute over the quadrature nodes within each frame (optionally restrained to a ball about the solute,
with test insertions for the rest of the box), the frames are combined one-sided or, with test insertions
into frames of the decoupled state too, by BAR (:func:`estimate`), and
position-independent terms (the dispersion correction and the solute's interaction with its own images) are
added from OpenMM. :func:`system_potential` puts a trained u_θ on a whole System (OpenMM force, ASE
calculator). The gas leg of the
decoupling is exactly zero (:mod:`molfree.freeenergy.alchemy` keeps intra-solute interactions), so
ΔG_hyd = ΔF · kT.

Configurations use one layout, ``[B, n + 1, 3]``: the solute's n atom positions (nm) and, in the last row,
the index of the environment frame (column 0, as a float); :func:`pack` and :func:`unpack` convert.
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
from torch import Tensor, nn

from .. import units
from . import neural_ti as nti
from .estimators import FreeEnergyResult, bar, exp, gauss_legendre_lambdas, quadrature_weights
from .solute_environment import SoluteEnvironment


def pack(frame: Tensor, y: Tensor) -> Tensor:
    """Configurations ``[B, n + 1, 3]`` from frame indices ``[B]`` and solute positions ``[B, n, 3]`` (nm)."""
    row = torch.zeros(y.shape[0], 1, 3, dtype=y.dtype, device=y.device)
    row[:, 0, 0] = frame.to(y.dtype)
    return torch.cat([y, row], 1)


def unpack(x: Tensor) -> tuple[Tensor, Tensor]:
    """(frame indices ``[B]`` long, solute positions ``[B, n, 3]``) of configurations ``[B, n + 1, 3]``."""
    return x[:, -1, 0].detach().round().long(), x[:, :-1]


def _stages(s: Tensor) -> tuple[Tensor, Tensor]:
    """(λ_sterics, λ_electrostatics) of the staged coupling at s ``[B]``."""
    return (2 * s).clamp(0, 1), (2 * s - 1).clamp(0, 1)


class StagedCoupling(nn.Module):
    """c(x, s) (kT): soft-core LJ at λ_sterics = min(2s, 1) plus the Ewald Coulomb times max(2s − 1, 0)."""

    def __init__(self, environment: SoluteEnvironment, temperature: float):
        super().__init__()
        self.environment, self.kt = environment, units.kT(temperature)

    def forward(self, x: Tensor, s) -> Tensor:
        frame, y = unpack(x)
        sterics, electrostatics = _stages(torch.as_tensor(s, dtype=x.dtype).expand(x.shape[0]))
        r2 = self.environment.squared_distances(frame, y)
        energy = (self.environment.lennard_jones(frame, y, sterics, r2)
                  + electrostatics * self.environment.coulomb(frame, y, r2))
        return energy / self.kt


class SolutePairCorrection(nn.Module):
    """g_θ = Σ_{i ∈ solute, j ∈ environment, r_ij < r_c} b·tanh(φ_θ(r_ij/r_c, λ, i, type_j)/b)·(1 − r_ij/r_c)² (kT).

    Environment atoms are typed by their (charge, σ, ε); φ_θ sees one-hot solute-atom and environment types.
    Each pair term is bounded by ``bound`` (kT), so the network can reshape the path but never pull a solute
    into the solvent's repulsive cores (unbounded, the robust score matching let it grow to hundreds of kT
    for a water solute, and the λ ensembles stopped overlapping).
    """

    def __init__(self, environment: SoluteEnvironment, cutoff: float = 0.6, hidden: int = 32, bound: float = 1.0):
        super().__init__()
        if not bound > 0:
            raise ValueError(f"bound must be positive (kT), got {bound!r}")
        self.environment, self.cutoff, self.bound = environment, float(cutoff), float(bound)
        self.n_solute = len(environment.solute_atoms)
        self.n_types = int(environment.environment_type.max()) + 1
        self.phi = nti.mlp(2 + self.n_solute + self.n_types, 1, hidden, 2)

    def forward(self, x: Tensor, lam: Tensor) -> Tensor:
        frame, y = unpack(x)
        r2 = self.environment.squared_distances(frame, y)
        b, i, j = torch.nonzero(r2 < self.cutoff**2, as_tuple=True)
        r = r2[b, i, j].sqrt() / self.cutoff
        lam = torch.as_tensor(lam, dtype=x.dtype).expand(x.shape[0])[b]
        features = torch.cat([r.unsqueeze(-1), lam.unsqueeze(-1),
                              nn.functional.one_hot(i, self.n_solute).to(x.dtype),
                              nn.functional.one_hot(self.environment.environment_type[j], self.n_types).to(x.dtype)], -1)
        pair = self.bound * torch.tanh(self.phi(features).squeeze(-1) / self.bound) * (1 - r) ** 2
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device).index_add(0, b, pair)


def lambda_potential(environment: SoluteEnvironment, temperature: float, hidden: int = 32,
                     degree: int = 6, correction_cutoff: float = 0.6) -> nti.LambdaPotential:
    """u_θ − u₀ = c(x, s_θ(λ)) + λ(1 − λ) g_θ(x, λ) in the configuration layout of this module (u₀ ≡ 0: the
    environment is frozen and the solute rigid, so everything else is a constant); g_θ acts on pairs closer
    than ``correction_cutoff`` (nm; two water shells by default)."""
    coupling = StagedCoupling(environment, temperature)
    schedule = nti.Schedule(degree)
    with torch.no_grad():  # start from s(λ) ≈ λ^degree: the solute should stay soft until the blur is small
        schedule.raw.fill_(-6.0)
        schedule.raw[degree - 1] = 2.0
    correction = SolutePairCorrection(environment, correction_cutoff, hidden)
    return nti.LambdaPotential(nti.zero_potential, lambda x: coupling(x, 1.0), correction, coupling=coupling,
                               schedule=schedule)


class _InSystem(nn.Module):
    """``module`` (:class:`StagedCoupling` or :class:`SolutePairCorrection`) on positions of the whole System
    ``[B, N, 3]`` (nm), its environment taken live from them instead of from the stored frames."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: Tensor, *args) -> Tensor:
        environment = self.module.environment
        view = copy.copy(self.module)
        view._modules = dict(self.module._modules)
        view.environment = environment.with_frames(x[:, environment.environment_atoms])
        return view(pack(torch.arange(x.shape[0]), x[:, environment.solute_atoms]), *args)


def system_potential(potential: nti.LambdaPotential) -> nti.LambdaPotential:
    """A trained solute u_θ − u₀ on positions of the whole System ``[B, N, 3]`` (nm, System order), sharing its
    parameters, with the environment live and differentiable: added as :class:`molfree.openmm.NeuralTIForce` to
    :func:`~molfree.freeenergy.hydration_neural_ti.decoupled_system`, it gives MD of the learned path at any
    ``lambda`` (at 1, the coupled System less the constants of
    :meth:`~molfree.freeenergy.solute_environment.SoluteEnvironment.openmm_constants`).
    """
    coupling, correction = _InSystem(potential.coupling), _InSystem(potential.correction)
    return nti.LambdaPotential(nti.zero_potential, lambda x: coupling(x, 1.0), correction, coupling=coupling,
                               schedule=potential.schedule)


def _displaced(x: Tensor, width: float, generator: torch.Generator) -> Tensor:
    """``x`` with the whole solute translated by ``width``·z (nm), z ~ N(0, 1)³."""
    shift = width * torch.randn(x.shape[0], 1, 3, generator=generator, dtype=x.dtype)
    return torch.cat([x[:, :-1] + shift, x[:, -1:]], 1)


def _rotations(n: int, max_angle: float, generator: torch.Generator, dtype) -> Tensor:
    """``[n, 3, 3]`` rotations about uniform random axes by angles uniform in [−max_angle, max_angle]."""
    axis = torch.randn(n, 3, generator=generator, dtype=dtype)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angle = max_angle * (2 * torch.rand(n, 1, 1, generator=generator, dtype=dtype) - 1)
    k = torch.zeros(n, 3, 3, dtype=dtype)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    return torch.eye(3, dtype=dtype) + torch.sin(angle) * k + (1 - torch.cos(angle)) * (k @ k)


def uniform_poses(x: Tensor, edge: float, generator: torch.Generator) -> Tensor:
    """``x`` ``[B, n + 1, 3]`` with each solute moved, rigidly, to a centroid uniform in the box of ``edge`` (nm)
    and a Haar-random orientation (a uniform unit quaternion)."""
    quaternion = torch.randn(x.shape[0], 4, generator=generator, dtype=x.dtype)
    w, i, j, k = (quaternion / quaternion.norm(dim=1, keepdim=True)).T
    rotation = torch.stack([torch.stack([1 - 2 * (j * j + k * k), 2 * (i * j - k * w), 2 * (i * k + j * w)], -1),
                            torch.stack([2 * (i * j + k * w), 1 - 2 * (i * i + k * k), 2 * (j * k - i * w)], -1),
                            torch.stack([2 * (i * k - j * w), 2 * (j * k + i * w), 1 - 2 * (i * i + j * j)], -1)], 1)
    body = x[:, :-1] - x[:, :-1].mean(1, keepdim=True)
    centre = edge * torch.rand(x.shape[0], 1, 3, generator=generator, dtype=x.dtype)
    return torch.cat([body @ rotation.transpose(1, 2) + centre, x[:, -1:]], 1)


# e^{−Δu} of a pose whose LJ alone exceeds this (kT) is below e^{−750} for any solute whose Coulomb energy with the
# environment stays above −250 kT, zero in double precision: its Coulomb term is not computed
_HOPELESS_LJ_KT = 1000.0


def insertion_log_means(potential: nti.LambdaPotential, configurations: Tensor, n: int, *,
                        radius: float | None = None, seed: int = 0, chunk: int = 2000,
                        progress: bool = False) -> np.ndarray:
    """ln[(1/V) ∫ e^{−Δu(X, g)} dg] (kT) for every configuration ``[F, n_atoms + 1, 3]`` by ``n`` test insertions.

    Each insertion places the configuration's solute (its own internal geometry) at a uniform centroid with a
    Haar-random orientation (:func:`uniform_poses`) in the frozen frame X, and Δu is the full coupling c(X, g, 1)
    (LJ and Ewald Coulomb). With ``radius`` (nm), the ball about the configuration's own centroid is left out of
    the integral (insertions there count zero): the rest of the box, which complements a restrained
    :func:`per_frame_ti`. The estimate of the integral is unbiased; its logarithm is noisy when few insertions
    land in favourable spots (Widom's test-particle insertion).
    """
    from tqdm import tqdm

    if n < 1:
        raise ValueError(f"need at least one insertion per frame, got {n}")
    environment, kt = potential.coupling.environment, potential.coupling.kt
    edge = environment.box_length
    generator = torch.Generator().manual_seed(seed)
    result = np.empty(configurations.shape[0])
    for f in tqdm(range(configurations.shape[0]), desc="test insertions", unit="frame", disable=not progress):
        log_weights = []
        for size in [chunk] * (n // chunk) + ([n % chunk] if n % chunk else []):
            x = uniform_poses(configurations[f:f + 1].expand(size, -1, -1), edge, generator)
            frame, y = unpack(x)
            with torch.no_grad():
                r2 = environment.squared_distances(frame, y)
                lj = environment.lennard_jones(frame, y, 1.0, r2) / kt
                keep = lj < _HOPELESS_LJ_KT
                if radius is not None:
                    offset = y.mean(1) - configurations[f, :-1].mean(0)
                    keep &= (offset - edge * torch.round(offset / edge)).norm(dim=-1) > radius
                log_weight = torch.full_like(lj, -math.inf)
                log_weight[keep] = -lj[keep] - environment.coulomb(frame[keep], y[keep], r2[keep]) / kt
            log_weights.append(log_weight)
        result[f] = float(torch.logsumexp(torch.cat(log_weights), 0)) - math.log(n)
    return result


def _excess(potential: nti.LambdaPotential, x: Tensor, lam: float, chunk: int = 1024) -> Tensor:
    with torch.no_grad():
        return torch.cat([potential.excess(part, lam) for part in x.split(chunk)])


def rigid_body_move(potential: nti.LambdaPotential, x: Tensor, u: Tensor, lam: float, translation: float,
                    angle: float, generator: torch.Generator, anchor: Tensor | None = None,
                    radius: float | None = None) -> tuple[Tensor, Tensor, float]:
    """One Metropolis move of every solute on e^{−u_θ(·, λ)} in its frozen frame: (x, u_θ − u₀, acceptance).

    The move rotates the solute about its centroid (random axis, angle uniform in ±``angle``) and translates
    it (uniform in ±``translation`` nm per axis); the proposal is symmetric with respect to the uniform
    measure on poses. With ``anchor`` ``[B, 3]`` and ``radius`` (nm), moves that take the centroid farther than
    ``radius`` from its anchor are rejected (a flat-bottom restraint; positions are never wrapped, so the
    distance needs no periodic image).
    """
    y = x[:, :-1]
    centre = y.mean(1, keepdim=True)
    rotation = _rotations(x.shape[0], angle, generator, x.dtype)
    shift = translation * (2 * torch.rand(x.shape[0], 1, 3, generator=generator, dtype=x.dtype) - 1)
    trial = torch.cat([(y - centre) @ rotation.transpose(1, 2) + centre + shift, x[:, -1:]], 1)
    u_trial = _excess(potential, trial, lam)
    accept = torch.rand(x.shape[0], generator=generator, dtype=x.dtype).log() < u - u_trial
    if radius is not None:
        accept &= (centre[:, 0] + shift[:, 0] - anchor).norm(dim=-1) <= radius
    return (torch.where(accept.view(-1, 1, 1), trial, x), torch.where(accept, u_trial, u),
            float(accept.double().mean()))


def inverse_schedule(potential: nti.LambdaPotential, s: float, tolerance: float = 1e-12) -> float:
    """The λ at which the learned schedule reaches ``s`` (bisection; s_θ is monotone)."""
    low, high = 0.0, 1.0
    with torch.no_grad():
        while high - low > tolerance:
            middle = 0.5 * (low + high)
            value = float(potential.schedule(torch.tensor(middle, dtype=torch.float64)))
            low, high = (middle, high) if value < s else (low, middle)
    return 0.5 * (low + high)


def _gauss_legendre(low: float, high: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` Gauss–Legendre nodes and weights on [low, high]."""
    nodes = gauss_legendre_lambdas(n)
    return low + (high - low) * nodes, (high - low) * quadrature_weights(nodes, "gauss-legendre")


def _coupling_derivative(potential: nti.LambdaPotential, x: Tensor, s: float) -> Tensor:
    """∂c/∂s ``[B]`` (kT) at ``s``."""
    with torch.enable_grad():
        s_t = torch.full((x.shape[0],), s, dtype=x.dtype, requires_grad=True)
        return torch.autograd.grad(potential.coupling(x.detach(), s_t).sum(), s_t)[0]


def _correction_derivative(potential: nti.LambdaPotential, x: Tensor, lam: float) -> Tensor:
    """∂[λ(1 − λ) g_θ]/∂λ ``[B]`` (kT) at ``lam``."""
    with torch.enable_grad():
        lam_t = torch.full((x.shape[0],), lam, dtype=x.dtype, requires_grad=True)
        return torch.autograd.grad((lam_t * (1 - lam_t) * potential.correction(x.detach(), lam_t)).sum(), lam_t)[0]


def per_frame_ti(potential: nti.LambdaPotential, coupled: Tensor, edge: float, *, n_coupling: int = 8,
                 n_correction: int = 8, poses: int = 8, sweeps: int = 40, burn_in: int = 20,
                 moves_per_sweep: int = 4, radius: float | None = None,
                 seed: int = 0, progress: bool = False) -> tuple[np.ndarray, dict]:
    """ΔF(X) (kT) for every configuration ``[F, n + 1, 3]`` and the details of the quadrature.

    ΔF(X) = ∫₀¹ ⟨∂c/∂s⟩_{λ(s)} ds + ∫₀¹ ⟨∂[λ(1 − λ) g_θ]/∂λ⟩_λ dλ, both averages under u_θ(·, λ) in the frame:
    the coupling term is integrated in s (``n_coupling`` Gauss–Legendre nodes on each stage, s ∈ [0, ½] and,
    if anything is charged, [½, 1], mapped to λ by :func:`inverse_schedule`), where it is the smooth soft-core
    integrand whatever the learned schedule, and the correction term in λ (``n_correction`` nodes).

    The averages come from Hamiltonian replica exchange over all nodes at once, within each frame: ``poses``
    walkers per frame and node, each sweep ``moves_per_sweep`` :func:`rigid_body_move` per walker and then
    Metropolis swaps between neighbouring nodes (even and odd pairs in turn), so a solute that left the
    frame's cavity at weak coupling can come back (a one-way chain through λ cannot). Every walker starts at
    the coupled pose: at weak coupling the moves spread it over the box within a few sweeps, and other sites
    are reached through the exchanges. (Walkers started at uniform poses at strong coupling stay trapped in
    the frozen solvent's repulsive cores for the whole run: with half of them started so, methane's coupling
    integrand reached hundreds of kT and ΔG_hyd came out at 37.6 instead of ~2.4 kcal/mol.) The first
    ``burn_in`` sweeps adapt the step sizes (towards 40 % acceptance) and are discarded; ``sweeps`` more are
    averaged.

    ``radius`` (nm): the solute's centroid is kept within this distance of its position a in the configuration
    at every node, a flat-bottom restraint, and the result is the ball's share of ΔF(X),
    w(X, a) = −ln[(1/V) ∫_{ball(a)} e^{−Δu(X, g)} dg] = ln(V/V_R) − ln⟨e^{−Δu}⟩_{ball(a)} (V the box, V_R the ball).
    The rest of the box is not small in a frozen solvent (other transient cavities): :func:`estimate` adds it
    by test insertions. Without a restraint, the solute must localise from the whole
    box into its cavity along the path, a binding transition the exchanges cross slowly (walkers started in the
    cavity stay there at intermediate coupling, which biased methane's ΔF(X) low by about 1.5 kT).
    """
    from tqdm import tqdm

    if min(poses, sweeps, moves_per_sweep) < 1 or burn_in < 0:
        raise ValueError("poses, sweeps and moves_per_sweep must be >= 1 and burn_in >= 0")
    if radius is not None and not 0 < radius < edge / 2:
        raise ValueError(f"radius must lie in (0, {edge / 2:g}) nm, got {radius!r}")
    generator = torch.Generator().manual_seed(seed)
    # the charging stage is skipped for an uncharged environment, where ∂c/∂s = 0 on it
    stages = ((0.0, 0.5), (0.5, 1.0)) if potential.coupling.environment.charged else ((0.0, 0.5),)
    s_nodes, s_weights = map(np.concatenate, zip(*(_gauss_legendre(low, high, n_coupling) for low, high in stages)))
    lam_nodes, lam_weights = _gauss_legendre(0.0, 1.0, n_correction)
    nodes = sorted([(inverse_schedule(potential, float(s)), "coupling", k) for k, s in enumerate(s_nodes)]
                   + [(float(lam), "correction", k) for k, lam in enumerate(lam_nodes)])
    lams = [lam for lam, _, _ in nodes]
    start = coupled.repeat_interleave(poses, 0)
    anchor = coupled[:, :-1].mean(1).repeat_interleave(poses, 0)
    x = [start.clone() for _ in nodes]
    u = [_excess(potential, walkers, lam) for walkers, lam in zip(x, lams)]
    translation, angle = [0.1] * len(nodes), [0.5] * len(nodes)
    move_rate, swap_rate = np.zeros(len(nodes)), np.zeros(len(nodes) - 1)
    coupling_sums = np.zeros((s_nodes.size, coupled.shape[0]))
    correction_sums = np.zeros((lam_nodes.size, coupled.shape[0]))
    for sweep in tqdm(range(burn_in + sweeps), desc="neural TI sweeps", unit="sweep", disable=not progress):
        production = sweep >= burn_in
        for i, lam in enumerate(lams):
            for _ in range(moves_per_sweep):
                x[i], u[i], rate = rigid_body_move(potential, x[i], u[i], lam, translation[i], angle[i], generator,
                                                   anchor, radius)
                if production:
                    move_rate[i] += rate / (sweeps * moves_per_sweep)
                else:
                    factor = 1.1 if rate > 0.4 else 0.9
                    translation[i], angle[i] = min(translation[i] * factor, edge / 2), min(angle[i] * factor, math.pi)
        for i in range(sweep % 2, len(nodes) - 1, 2):
            u_i_at_next, u_next_at_i = _excess(potential, x[i + 1], lams[i]), _excess(potential, x[i], lams[i + 1])
            log_ratio = u[i] + u[i + 1] - u_i_at_next - u_next_at_i
            swap = torch.rand(log_ratio.shape[0], generator=generator, dtype=log_ratio.dtype).log() < log_ratio
            view = swap.view(-1, 1, 1)
            x[i], x[i + 1] = torch.where(view, x[i + 1], x[i]), torch.where(view, x[i], x[i + 1])
            u[i], u[i + 1] = torch.where(swap, u_i_at_next, u[i]), torch.where(swap, u_next_at_i, u[i + 1])
            if production:
                swap_rate[i] += float(swap.double().mean()) / math.ceil(sweeps / 2)
        if production:
            for (lam, kind, k), walkers in zip(nodes, x):
                value = torch.cat([_coupling_derivative(potential, part, float(s_nodes[k])) if kind == "coupling"
                                   else _correction_derivative(potential, part, lam) for part in walkers.split(1024)])
                frame_means = value.reshape(coupled.shape[0], poses).mean(1).detach().numpy() / sweeps
                (coupling_sums if kind == "coupling" else correction_sums)[k] += frame_means
    details = {"s_nodes": s_nodes.tolist(), "coupling_lambdas": [inverse_schedule(potential, float(s))
                                                                 for s in s_nodes],
               "mean_dc_ds": coupling_sums.mean(1).tolist(), "correction_lambdas": lam_nodes.tolist(),
               "mean_dcorrection_dlambda": correction_sums.mean(1).tolist(),
               "coupling_part": float((s_weights @ coupling_sums).mean()),
               "correction_part": float((lam_weights @ correction_sums).mean()),
               "stage_boundary": inverse_schedule(potential, 0.5), "node_lambdas": lams,
               "move_acceptance": move_rate.tolist(), "swap_acceptance": swap_rate.tolist(),
               "n_nodes": len(nodes), "sweeps": sweeps, "burn_in": burn_in}
    restraint = 0.0 if radius is None else math.log(edge**3 / (4 / 3 * math.pi * radius**3))
    details.update({"restraint_radius": radius, "restraint_kT": restraint})
    return s_weights @ coupling_sums + lam_weights @ correction_sums + restraint, details


def estimate(potential: nti.LambdaPotential, coupled: Tensor, edge: float, constants_kt: float, *,
             decoupled: Tensor | None = None, insertions: int = 0, n_coupling: int = 8, n_correction: int = 8,
             poses: int = 8, sweeps: int = 40, burn_in: int = 20, moves_per_sweep: int = 4,
             radius: float | None = None, seed: int = 0, progress: bool = False) -> FreeEnergyResult:
    """ΔF = F_coupled − F_decoupled (kT), with its error over frames, plus ``constants_kt``.

    Every frame X enters through w(X) = −ln z(X), z(X) = (1/V) ∫ e^{−Δu(X, g)} dg over the solute's rigid-body
    poses g in the whole box, since p₁(X) ∝ p₀(X) z(X). For coupled frames ``[F, n + 1, 3]`` w comes from
    :func:`per_frame_ti`, which integrates over the solute's own cavity, where test insertions would almost never
    land. With a ``radius`` (nm) the TI covers the ball about the solute's centroid and ``insertions`` test
    insertions (:func:`insertion_log_means`) the rest of the box, whose share is not small: in a frozen frame
    of water the other transient cavities hold about as much of z(X) as the solute's own (leaving them out
    raised methane's ΔG_hyd by 0.8–1 kcal/mol). For decoupled frames (``decoupled`` ``[F₀, n + 1, 3]``,
    frames of MD with the solute decoupled), z(X) is the test-insertion average over the whole box.

    One-sided (no ``decoupled``): ΔF = ln⟨e^{w}⟩ over the coupled frames, delta-method error. Two-sided: BAR
    between the decoupled frames' w (forward) and the coupled frames' (reverse); if the two sets do not
    overlap at all (``details["works_overlap"]`` False), the error is infinite: BAR then only extrapolates.

    ``details`` holds the per-frame w (and, with a radius, the ball's and the insertions' parts), the one-sided
    estimates, the quadrature, acceptance rates and evaluation counts.
    """
    if (radius is not None or decoupled is not None) and insertions < 1:
        raise ValueError("a restraint radius (for the rest of the box) and decoupled frames need insertions >= 1")
    start = time.perf_counter()
    per_frame, details = per_frame_ti(potential, coupled, edge, n_coupling=n_coupling, n_correction=n_correction,
                                      poses=poses, sweeps=sweeps, burn_in=burn_in, moves_per_sweep=moves_per_sweep,
                                      radius=radius, seed=seed, progress=progress)
    n_inserted = 0
    if radius is not None:
        outside = insertion_log_means(potential, coupled, insertions, radius=radius, seed=seed + 1,
                                      progress=progress)
        details.update({"per_frame_ball": per_frame.tolist(), "per_frame_outside_log_mean": outside.tolist()})
        per_frame = -np.logaddexp(-per_frame, outside)
        n_inserted += insertions * coupled.shape[0]
    one_sided = exp(-per_frame, "reverse")
    details = {**details, "per_frame": per_frame.tolist(), "exp_coupled_kT": one_sided.delta_f + constants_kt,
               "constants_kT": constants_kt}
    combined = one_sided
    if decoupled is not None:
        forward = -insertion_log_means(potential, decoupled, insertions, seed=seed + 2, progress=progress)
        n_inserted += insertions * decoupled.shape[0]
        combined = bar(forward, -per_frame)
        # BAR between works that do not overlap extrapolates (pymbar's error is then NaN): say so, never a number
        overlap = bool(forward.min() <= per_frame.max())
        if not overlap or not math.isfinite(combined.error):
            combined = FreeEnergyResult(combined.delta_f, math.inf, combined.method, combined.n_samples)
        details.update({"per_frame_decoupled": forward.tolist(), "works_overlap": overlap,
                        "exp_decoupled_kT": exp(forward).delta_f + constants_kt, "n_decoupled": int(forward.size)})
    # per sweep and walker: the moves, ~1 exchange evaluation, and (in production) one derivative (a forward and
    # a backward pass, counted as 2)
    evaluations = details["n_nodes"] * coupled.shape[0] * poses * (
        (burn_in + sweeps) * (moves_per_sweep + 1) + 2 * sweeps)
    return FreeEnergyResult(combined.delta_f + constants_kt, combined.error, "neural-ti", int(combined.n_samples),
                            {**details, "insertions": insertions, "insertion_evaluations": n_inserted,
                             "solute_energy_evaluations": evaluations + n_inserted,
                             "wall_seconds": time.perf_counter() - start})


def train(potential: nti.LambdaPotential, coupled: Tensor, *, blur: float = 0.25, redraws: int = 8,
          steps: int = 400, batch_size: int = 128, seed: int = 0, checkpoint=None,
          progress: bool = False) -> list[float]:
    """Paired target score matching of u_θ on the solute's coupled score, ``coupled`` ``[F, n + 1, 3]``.

    Each frame is used ``redraws`` times with the solute displaced by independent ``blur``·z (nm), so the
    interpolant at λ is the coupled density blurred by (1 − λ)·blur: a path from a smeared solute to the
    coupled one. (The endpoints of u_θ are exact whatever the blur; a blur of the box length would make the
    λ = 0 end uniform, but then nearly every interpolant overlaps the solvent and the path is squeezed
    into λ ≈ 1.) The frame row is masked out of the loss, which is robust
    (:func:`molfree.freeenergy.neural_ti.train`). Returns the loss history.
    """
    if not blur > 0:
        raise ValueError(f"blur must be positive (nm), got {blur!r}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x1 = coupled.repeat(redraws, 1, 1)
    mask = torch.ones(coupled.shape[1], 1, dtype=torch.bool)
    mask[-1] = False
    return nti.train(potential, _displaced(x1, blur, generator), x1, steps=steps, batch_size=batch_size,
                     score_mask=mask, paired=True, checkpoint=checkpoint, progress=progress, seed=seed, robust=True)
