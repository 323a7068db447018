"""Neural thermodynamic integration (after Máté, Fleuret & Bereau, "Solvation free energies from neural TI").

A λ-dependent reduced potential (kT)

    u_θ(x, λ) = (1 − s_θ(λ)) u₀(x) + s_θ(λ) u₁(x) + λ(1 − λ) g_θ(x, λ)

equals the physical endpoints u₀ and u₁ at λ = 0 and λ = 1 exactly by construction (s_θ is a learned
monotone schedule with s(0) = 0 and s(1) = 1). For insertion/decoupling, where linear coupling makes ∂u/∂λ
singular at λ → 0 (overlapping particles), a *coupling* c(x, s) (e.g. Beutler soft-core solute–environment
Lennard-Jones, :class:`molfree.freeenergy.lj_insertion.SoftcoreLJCoupling`) replaces the linear mixing:

    u_θ(x, λ) = u₀(x) + c(x, s_θ(λ)) + λ(1 − λ) g_θ(x, λ),   c(x, 0) = 0,  c(x, 1) = u₁(x) − u₀(x),

so the learned schedule drives the soft-core λ and the endpoints stay exact. It is trained by *target score
matching* on the linear interpolant x_λ = (1 − λ) x₀ + λ x₁ (+ γ(λ) z) of independent endpoint samples
x₀ ~ e^{−u₀}, x₁ ~ e^{−u₁}: for independent summands the interpolant's score is E[(a ∇log p₀(x₀) + b ∇log p₁(x₁)) / (a² + b²) | x_λ]
with a = 1 − λ, b = λ, so −∇ₓu_θ is regressed on that target; nothing is simulated at intermediate λ.
For an insertion the pairs may instead share the solvent and the loss be restricted to the solute
(``train(..., paired=True, score_mask=...)``; see :func:`molfree.freeenergy.lj_insertion.neural_ti`).

ΔF = ∫₀¹ ⟨∂u_θ/∂λ⟩_λ dλ by Gauss–Legendre quadrature (:func:`molfree.freeenergy.ti`). The samples at each
node are drawn from the interpolant, as in the paper, and optionally refined by Metropolis-adjusted
Langevin steps on u_θ(·, λ) itself, which removes the bias left by an imperfect fit.

Shapes: samples are ``[B, *event]`` tensors (``[B, d]`` vectors or ``[B, N, 3]`` particles); potentials
map them to ``[B]`` reduced energies (kT).
"""
from __future__ import annotations

import io as _io
import math
import os
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .. import units
from ..energy import Energy
from ..io import atomic_write_bytes
from .estimators import FreeEnergyResult, gauss_legendre_lambdas, ti

Reduced = Callable[[Tensor], Tensor]


def zero_potential(x: Tensor) -> Tensor:
    """0 (kT) for every configuration, ``[B]``, differentiable in x: the u₀ of a frozen environment."""
    return (0 * x).flatten(1).sum(-1)


def check_lambda(lam, like: Tensor) -> Tensor:
    """λ as a tensor on ``like``'s dtype/device, broadcastable to ``[B]``; ValueError outside [0, 1] or NaN."""
    lam = torch.as_tensor(lam, dtype=like.dtype, device=like.device)
    if not torch.isfinite(lam).all() or (lam < 0).any() or (lam > 1).any():
        raise ValueError(f"λ must lie in [0, 1], got {lam.detach().cpu().numpy().tolist()}")
    return lam


def _finite(u: Tensor, name: str) -> Tensor:
    if not torch.isfinite(u).all():
        raise ValueError(f"{name} returned NaN or infinite energies ({int((~torch.isfinite(u)).sum())} of {u.numel()})")
    return u


class Schedule(nn.Module):
    """Learned monotone coupling schedule s(λ) = f(λ)/f(1), f a positive mixture of monotone bases.

    Bases λ, λ², …, λ^degree, 1 − (1 − λ)², …, 1 − (1 − λ)^degree all vanish at 0, so s(0) = 0 and s(1) = 1
    exactly; a higher ``degree`` allows schedules that stay near 0 longer (insertion).
    """

    def __init__(self, degree: int = 3):
        super().__init__()
        if degree < 2:
            raise ValueError(f"degree must be >= 2, got {degree}")
        self.degree = degree
        self.raw = nn.Parameter(torch.zeros(2 * degree - 1, dtype=torch.float64))

    def _f(self, lam: Tensor) -> Tensor:
        lam = lam.unsqueeze(-1)
        powers = torch.arange(1, self.degree + 1, dtype=lam.dtype, device=lam.device)
        basis = torch.cat([lam**powers, 1 - (1 - lam) ** powers[1:]], -1)
        return basis @ nn.functional.softplus(self.raw).to(lam.dtype)

    def forward(self, lam: Tensor) -> Tensor:
        return self._f(lam) / self._f(torch.ones_like(lam))


def mlp(n_in: int, n_out: int, hidden: int, layers: int) -> nn.Sequential:
    """A float64 SiLU multilayer perceptron with ``layers`` hidden layers of width ``hidden``."""
    sizes = [n_in] + [hidden] * layers
    modules: list[nn.Module] = []
    for a, b in pairwise(sizes):
        modules += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*modules, nn.Linear(hidden, n_out)).double()


class MLPCorrection(nn.Module):
    """g_θ(x, λ) for flat ``[B, d]`` (or any ``[B, *event]``, flattened) inputs: an MLP of (x, λ)."""

    def __init__(self, dim: int, hidden: int = 64, layers: int = 3):
        super().__init__()
        self.net = mlp(dim + 1, 1, hidden, layers)

    def forward(self, x: Tensor, lam: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        return self.net(torch.cat([flat, lam.expand(flat.shape[0]).unsqueeze(-1).to(flat.dtype)], -1)).squeeze(-1)


class PairCorrection(nn.Module):
    """Permutation-invariant g_θ = Σ_pairs φ_θ(r_ij, λ)·(1 − r_ij/r_c)² over minimum-image distances.

    Positions ``[B, N, 3]`` (nm) in an orthorhombic ``box`` (``[3]`` edge lengths, nm, or None);
    ``solute`` restricts the sum to solute–other pairs (None: all pairs i < j).
    """

    def __init__(self, cutoff: float, box=None, solute: list[int] | None = None, hidden: int = 32):
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("box", None if box is None else torch.as_tensor(box, dtype=torch.float64))
        self.solute = solute
        self.phi = mlp(2, 1, hidden, 2)

    def forward(self, x: Tensor, lam: Tensor) -> Tensor:
        n = x.shape[1]
        if self.solute is None:
            i, j = torch.triu_indices(n, n, 1, device=x.device)
        else:
            others = torch.tensor([k for k in range(n) if k not in set(self.solute)], device=x.device)
            i = torch.tensor(self.solute, device=x.device).repeat_interleave(others.numel())
            j = others.repeat(len(self.solute))
        d = x[:, j] - x[:, i]
        if self.box is not None:
            d = d - self.box.to(d.dtype) * torch.round(d / self.box.to(d.dtype))
        r = d.norm(dim=-1)
        features = torch.stack([r / self.cutoff, lam.reshape(-1, 1).expand_as(r).to(r.dtype)], -1)
        envelope = torch.clamp(1 - r / self.cutoff, min=0) ** 2
        return (self.phi(features).squeeze(-1) * envelope).sum(-1)


class LambdaPotential(nn.Module):
    """u_θ(x, λ) = u₀(x) + Δ_θ(x, λ) in kT, with the λ-dependent part Δ_θ (:meth:`excess`)

    * linear mixing (``coupling=None``): Δ_θ = s(λ) (u₁ − u₀) + λ(1 − λ) g_θ(x, λ);
    * coupling: Δ_θ = c(x, s(λ)) + λ(1 − λ) g_θ(x, λ), for a ``c`` with c(x, 0) = 0 and c(x, 1) = u₁ − u₀.

    Args:
        u0, u1: endpoint reduced potentials, ``[B, *event] -> [B]`` (kT), differentiable in x.
        correction: the network g_θ (:class:`MLPCorrection`, :class:`PairCorrection`, …).
        coupling: optional ``c(x [B, *event], s [B]) -> [B]`` (kT), twice differentiable (TSM needs ∂²c/∂x∂s).
        schedule: the learned s(λ) (None: ``Schedule()``).
    """

    def __init__(self, u0: Reduced, u1: Reduced, correction: nn.Module,
                 coupling: Callable[[Tensor, Tensor], Tensor] | None = None, schedule: Schedule | None = None):
        super().__init__()
        self.u0, self.u1, self.coupling = u0, u1, coupling
        self.schedule = schedule or Schedule()
        self.correction = correction

    def excess(self, x: Tensor, lam) -> Tensor:
        """The λ-dependent part u_θ(x, λ) − u₀(x), ``[B]`` (kT); zero at λ = 0."""
        lam = check_lambda(lam, x)
        s = self.schedule(lam)
        if self.coupling is None:
            mixing = s * (_finite(self.u1(x), "u1") - _finite(self.u0(x), "u0"))
        else:
            mixing = _finite(self.coupling(x, s.expand(x.shape[0])), "coupling")
        return mixing + lam * (1 - lam) * self.correction(x, lam)

    def forward(self, x: Tensor, lam) -> Tensor:
        """Reduced energies ``[B]`` (kT) of ``x`` ``[B, *event]`` at λ (scalar or ``[B]``)."""
        lam = check_lambda(lam, x)
        if self.coupling is None:
            s = self.schedule(lam)
            u0 = _finite(self.u0(x), "u0")
            u1 = _finite(self.u1(x), "u1")
            return (1 - s) * u0 + s * u1 + lam * (1 - lam) * self.correction(x, lam)
        return _finite(self.u0(x), "u0") + self.excess(x, lam)

    def dudl(self, x: Tensor, lam: float) -> Tensor:
        """∂u_θ/∂λ ``[B]`` (kT) at fixed x, by autograd (of :meth:`excess`: u₀ does not depend on λ)."""
        with torch.enable_grad():
            lam_t = check_lambda(lam, x).detach().expand(x.shape[0]).clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.excess(x.detach(), lam_t).sum(), lam_t)
        return grad

    def score(self, x: Tensor, lam, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """(u_θ ``[B]``, −∇ₓu_θ ``[B, *event]``) at λ."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            u = self(x, lam)
            (grad,) = torch.autograd.grad(u.sum(), x, create_graph=create_graph)
        return (u, -grad) if create_graph else (u.detach(), -grad)

    def at(self, lam: float, temperature: float, dim: int = 3) -> LambdaEnergy:
        """This potential at fixed λ as a :class:`molfree.Energy` (kJ/mol) at ``temperature`` (K)."""
        return LambdaEnergy(self, lam, temperature, dim)


class LambdaEnergy(Energy):
    """A :class:`LambdaPotential` at fixed λ as an Energy: ``[B, N, dim]`` positions (nm) → kJ/mol.

    The potential sees positions reshaped to ``[B, N·dim]`` when ``dim == 1`` (vector models) and as
    ``[B, N, dim]`` otherwise; any box is the one the potential's network was built with.
    """

    def __init__(self, potential: LambdaPotential, lam: float, temperature: float, dim: int = 3):
        super().__init__()
        self.potential, self.dim, self.kt = potential, dim, units.kT(temperature)
        self.lam = float(check_lambda(lam, torch.zeros((), dtype=torch.float64)))

    def energy(self, positions: Tensor, box: Tensor | None) -> Tensor:
        x = positions.reshape(positions.shape[0], -1) if self.dim == 1 else positions
        return self.kt * self.potential(x, self.lam)


def endpoint_score(u: Reduced, x: Tensor, chunk: int = 256) -> Tensor:
    """−∇ₓu ``[B, *event]`` of a reduced potential, by autograd, ``chunk`` configurations at a time."""
    scores = []
    with torch.enable_grad():
        for part in x.detach().split(chunk):
            part = part.requires_grad_(True)
            (grad,) = torch.autograd.grad(_finite(u(part), "endpoint potential").sum(), part)
            scores.append(-grad)
    return torch.cat(scores)


def interpolate(x0: Tensor, x1: Tensor, lam: Tensor, box: Tensor | None = None, gamma: float = 0.0,
                noise: Tensor | None = None) -> Tensor:
    """x_λ = (1 − λ) x₀ + λ x₁ + γ λ(1 − λ) z for ``[B]`` λ; periodic-aware for an orthorhombic ``box``.

    With a box, x₁ is first replaced by its image closest to x₀ and the result is wrapped into the box.
    """
    shape = (-1,) + (1,) * (x0.ndim - 1)
    t = lam.reshape(shape)
    if box is not None:
        x1 = x0 + (x1 - x0) - box * torch.round((x1 - x0) / box)
    x = (1 - t) * x0 + t * x1
    if gamma and noise is not None:
        x = x + gamma * t * (1 - t) * noise
    return x - box * torch.floor(x / box) if box is not None else x


def _tsm_target(s0: Tensor, s1: Tensor, lam: Tensor) -> Tensor:
    shape = (-1,) + (1,) * (s0.ndim - 1)
    a, b = (1 - lam).reshape(shape), lam.reshape(shape)
    return (a * s0 + b * s1) / (a**2 + b**2)


def _save(path: Path, state: dict) -> None:
    buffer = _io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def train(potential: LambdaPotential, x0: Tensor, x1: Tensor, *, steps: int = 2000, batch_size: int = 256,
          lr: float = 3e-3, box=None, score_mask: Tensor | None = None, paired: bool = False,
          checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 200,
          progress: bool = True, seed: int = 0, robust: bool = False) -> list[float]:
    """Train u_θ by target score matching on interpolants of ``[N₀, *event]`` / ``[N₁, *event]`` endpoint samples.

    Endpoint scores are computed once; each step draws λ ~ U(0, 1) and independent x₀, x₁ pairs.
    ``score_mask``: bool, broadcastable to the event shape (e.g. ``[N, 1]`` for particles): only these score
    components enter the loss (partial score matching, e.g. the solute of an insertion: interpolants of independent
    liquid configurations push solvent molecules through each other, and no λ-dependent term can fit their
    solvent score); u₀'s share of the predicted score is then not differentiated further. None: the full score.
    ``paired``: x₀[i] goes with x₁[i]; they share every coordinate outside ``score_mask`` and are independent given
    them (an insertion: x₀ is x₁ with the decoupled solute displaced by noise δ independent of x₁). The interpolant
    is then x_λ = x₁ + (1 − λ)δ, p₁ smoothed by the law of (1 − λ)δ, and the exact target is the one-sided
    E[s₁ | x_λ] (s₀ is not used).
    ``robust``: each configuration's squared error e enters the loss as log(1 + e), so interpolants that push
    particles through each other (errors of 10³⁰ under full Lennard-Jones) cannot swamp the fit; u_θ is then a
    path shaped by the data rather than the exact score regression (TI along it stays exact).
    ``checkpoint``: file written atomically every ``checkpoint_every`` steps and at the end; an existing
    one is resumed from. Returns the loss history of the steps run in this call.
    """
    if x0.ndim < 2 or x0.shape[1:] != x1.shape[1:]:
        raise ValueError(f"endpoint samples must be [N, *event] with equal event shapes, got {x0.shape}, {x1.shape}")
    if paired and x0.shape != x1.shape:
        raise ValueError(f"paired endpoint samples must have equal shapes, got {x0.shape}, {x1.shape}")
    box_t = None if box is None else torch.as_tensor(box, dtype=x0.dtype)
    if score_mask is None:
        s0, s1 = endpoint_score(potential.u0, x0), endpoint_score(potential.u1, x1)
    else:
        mask = torch.as_tensor(score_mask, dtype=torch.bool).expand(x0.shape[1:])
        s0, s1 = (endpoint_score(u, x)[:, mask] for u, x in ((potential.u0, x0), (potential.u1, x1)))
    optimizer = torch.optim.Adam(potential.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    start, path = 0, None if checkpoint is None else Path(checkpoint)
    if path is not None and path.is_file():
        state = torch.load(path, weights_only=True)
        potential.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        start = int(state["step"])
    losses = []
    for step in tqdm(range(start, steps), desc="train neural TI", unit="step", disable=not progress,
                     initial=start, total=steps):
        i = torch.randint(x0.shape[0], (batch_size,), generator=generator)
        j = i if paired else torch.randint(x1.shape[0], (batch_size,), generator=generator)
        lam = torch.rand(batch_size, generator=generator, dtype=x0.dtype)
        x = interpolate(x0[i], x1[j], lam, box_t)
        if score_mask is None:
            _, predicted = potential.score(x, lam, create_graph=True)
        else:
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(potential.excess(x, lam).sum(), x, create_graph=True)
            predicted = endpoint_score(potential.u0, x)[:, mask] - grad[:, mask]
        target = s1[j] if paired else _tsm_target(s0[i], s1[j], lam)
        error = ((predicted - target) ** 2).flatten(1).sum(-1)
        loss = (torch.log1p(error) if robust else error).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if path is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            _save(path, {"model": potential.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "step": step + 1})
    return losses


def mala(potential: LambdaPotential, x: Tensor, lam: float, steps: int, step_size: float = 1e-2,
         box=None, seed: int = 0) -> tuple[Tensor, float]:
    """Metropolis-adjusted Langevin on e^{−u_θ(·, λ)} from ``x`` ``[B, *event]``; returns (samples, acceptance).

    The step size adapts towards 57 % acceptance during the first half of the steps and is then frozen.
    With an orthorhombic ``box`` positions are wrapped (valid for steps much smaller than the box).
    """
    generator = torch.Generator().manual_seed(seed)
    box_t = None if box is None else torch.as_tensor(box, dtype=x.dtype)
    h, accepted = step_size, 0.0
    u, f = potential.score(x, lam)
    shape = (-1,) + (1,) * (x.ndim - 1)
    for step in range(steps):
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        y = x + h * f + math.sqrt(2 * h) * noise
        if box_t is not None:
            y = y - box_t * torch.floor(y / box_t)
        u_y, f_y = potential.score(y, lam)
        back = x - y - h * f_y
        fwd = y - x - h * f
        if box_t is not None:
            back, fwd = (v - box_t * torch.round(v / box_t) for v in (back, fwd))
        log_q = (-(back**2).flatten(1).sum(-1) + (fwd**2).flatten(1).sum(-1)) / (4 * h)
        accept = torch.log(torch.rand(x.shape[0], generator=generator, dtype=x.dtype)) < u - u_y + log_q
        x = torch.where(accept.reshape(shape), y, x)
        u = torch.where(accept, u_y, u)
        f = torch.where(accept.reshape(shape), f_y, f)
        rate = float(accept.double().mean())
        if step < steps // 2:
            h *= 1.05 if rate > 0.57 else 0.95
        else:
            accepted += rate / (steps - steps // 2)
    return x.detach(), accepted


def estimate(potential: LambdaPotential, x0: Tensor, x1: Tensor, *, n_lambdas: int = 12, n_samples: int = 1000,
             langevin_steps: int = 0, step_size: float = 1e-2, box=None, seed: int = 0) -> FreeEnergyResult:
    """ΔF = F₁ − F₀ (kT) = ∫⟨∂u_θ/∂λ⟩ dλ with Gauss–Legendre quadrature over ``n_lambdas`` nodes.

    At each node ``n_samples`` interpolant samples of independent endpoint pairs are drawn and, if
    ``langevin_steps`` > 0, refined by :func:`mala` on u_θ(·, λ). ``details`` records the λ nodes,
    per-node means and errors, MALA acceptance and the number of u_θ evaluations.
    """
    lambdas = gauss_legendre_lambdas(n_lambdas)
    generator = torch.Generator().manual_seed(seed)
    box_t = None if box is None else torch.as_tensor(box, dtype=x0.dtype)
    samples, acceptance = [], []
    for k, lam in enumerate(lambdas):
        i = torch.randint(x0.shape[0], (n_samples,), generator=generator)
        j = torch.randint(x1.shape[0], (n_samples,), generator=generator)
        x = interpolate(x0[i], x1[j], torch.full((n_samples,), float(lam), dtype=x0.dtype), box_t)
        if langevin_steps:
            x, rate = mala(potential, x, float(lam), langevin_steps, step_size, box, seed=seed + k + 1)
            acceptance.append(rate)
        samples.append(potential.dudl(x, float(lam)).detach().cpu().numpy())
    result = ti(lambdas, samples, method="gauss-legendre", decorrelate=False)
    evaluations = n_lambdas * n_samples * (langevin_steps + 2)
    return FreeEnergyResult(result.delta_f, result.error, "neural-ti", result.n_samples,
                            {**result.details, "lambdas": lambdas.tolist(), "acceptance": acceptance,
                             "sampling": f"interpolant + {langevin_steps} MALA steps" if langevin_steps else "interpolant",
                             "energy_evaluations": evaluations})
