"""FEAT: free-energy estimators with adaptive transport (escorted Jarzynski, controlled Crooks).

A stochastic interpolant I_t = (1 − t) x₀ + t x₁ + γ t(1 − t) z of independent endpoint samples defines
a transport; its velocity field b_θ(x, t) ≈ E[x₁ − x₀ + γ(1 − 2t) z | I_t = x] is learned by regression
and its energy u_θ(x, t) is a :class:`~molfree.freeenergy.neural_ti.LambdaPotential` (exact endpoints),
trained by target score matching. Escorted dynamics

    dX = (b_θ − ε ∇u_θ) dt + √(2ε) dW

carry samples of state 0 towards state 1 (forward) or back (reverse, b → −b along t = 1 → 0). The work
W = ∫ [∂ₜu_θ + ∇u_θ · b_θ − ∇·b_θ] dt (kT) satisfies Jarzynski's equality; for ε = 0 it reduces to
W = u₁(X₁) − u₀(X₀) − ∫∇·b_θ dt. ΔF = −ln⟨e^{−W_F}⟩ (escorted Jarzynski), BAR on (W_F, W_R)
(controlled Crooks), with the variational bounds ⟨W_F⟩ ≥ ΔF ≥ −⟨W_R⟩ in ``details``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .estimators import FreeEnergyResult, bar, jarzynski
from .neural_ti import LambdaPotential, check_lambda, interpolate, mlp
from .neural_ti import train as train_energy


class VelocityField(nn.Module):
    """b_θ(x, t): an MLP of flattened ``[B, *event]`` x and t, returning ``[B, *event]``."""

    def __init__(self, dim: int, hidden: int = 64, layers: int = 3):
        super().__init__()
        self.net = mlp(dim + 1, dim, hidden, layers)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        t = check_lambda(t, x).expand(flat.shape[0]).unsqueeze(-1)
        return self.net(torch.cat([flat, t], -1)).reshape(x.shape)


class Transport(nn.Module):
    """A learned stochastic interpolant: velocity field ``velocity`` and energy ``energy`` (kT)."""

    def __init__(self, velocity: VelocityField, energy: LambdaPotential, gamma: float = 0.5):
        super().__init__()
        self.velocity, self.energy, self.gamma = velocity, energy, float(gamma)

    def fit(self, x0: Tensor, x1: Tensor, *, steps: int = 2000, energy_steps: int = 0, batch_size: int = 256,
            lr: float = 3e-3, progress: bool = True, seed: int = 0) -> list[float]:
        """Regress b_θ on the interpolant velocity (and, with ``energy_steps``, train u_θ by TSM).

        Returns the velocity loss history. ``x0``, ``x1``: ``[N, *event]`` endpoint samples.
        """
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(self.velocity.parameters(), lr=lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        losses = []
        for _ in tqdm(range(steps), desc="train FEAT velocity", unit="step", disable=not progress):
            i = torch.randint(x0.shape[0], (batch_size,), generator=generator)
            j = torch.randint(x1.shape[0], (batch_size,), generator=generator)
            t = torch.rand(batch_size, generator=generator, dtype=x0.dtype)
            z = torch.randn(x0[i].shape, generator=generator, dtype=x0.dtype)
            x = interpolate(x0[i], x1[j], t, gamma=self.gamma, noise=z)
            target = x1[j] - x0[i] + self.gamma * (1 - 2 * t).reshape((-1,) + (1,) * (z.ndim - 1)) * z
            loss = ((self.velocity(x, t) - target) ** 2).flatten(1).sum(-1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        if energy_steps:
            train_energy(self.energy, x0, x1, steps=energy_steps, batch_size=batch_size, lr=lr, progress=progress,
                         seed=seed + 1)
        return losses

    def _divergence(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(b ``[B, *event]``, exact ∇·b ``[B]``) by one autograd pass per coordinate."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            b = self.velocity(x, t)
            flat = b.reshape(b.shape[0], -1)
            div = sum(torch.autograd.grad(flat[:, k].sum(), x, retain_graph=True)[0].reshape(b.shape[0], -1)[:, k]
                      for k in range(flat.shape[1]))
        return b.detach(), div.detach()

    def _work_rate(self, x: Tensor, t: float) -> tuple[Tensor, Tensor, Tensor]:
        """(b, −∇u, dW/dt ``[B]``) at time t."""
        tt = torch.full((x.shape[0],), t, dtype=x.dtype)
        b, div = self._divergence(x, tt)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            tg = tt.clone().requires_grad_(True)
            u = self.energy(xg, tg)
            grad_x, grad_t = torch.autograd.grad(u.sum(), (xg, tg))
        rate = grad_t + (grad_x * b).flatten(1).sum(-1) - div
        return b, -grad_x, rate.detach()

    def work(self, x: Tensor, n_steps: int = 50, epsilon: float = 0.0, reverse: bool = False,
             seed: int = 0) -> Tensor:
        """Works ``[B]`` (kT) of escorted trajectories from ``x`` (state 0, or state 1 if ``reverse``).

        Integrates the escorted SDE with Heun's method for ε = 0 and Euler–Maruyama otherwise. The
        reverse process runs t from 1 to 0; its work is the forward work of the time-reversed protocol.
        """
        if n_steps < 1 or epsilon < 0:
            raise ValueError("need n_steps >= 1 and epsilon >= 0")
        generator = torch.Generator().manual_seed(seed)
        times = torch.linspace(1.0, 0.0, n_steps + 1) if reverse else torch.linspace(0.0, 1.0, n_steps + 1)
        total = torch.zeros(x.shape[0], dtype=x.dtype)
        x = x.detach()
        for t, t_next in zip(times[:-1].tolist(), times[1:].tolist()):
            dt = t_next - t
            b, force, rate = self._work_rate(x, t)
            if epsilon == 0:
                y = x + dt * b
                b_next, _, rate_next = self._work_rate(y, t_next)
                x, total = x + 0.5 * dt * (b + b_next), total + 0.5 * dt * (rate + rate_next)
            else:
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
                x = x + dt * b + abs(dt) * epsilon * force + (2 * epsilon * abs(dt)) ** 0.5 * noise
                total = total + dt * rate
        if not torch.isfinite(total).all():
            raise ValueError("escorted trajectories produced NaN or infinite work")
        return total


def escorted_jarzynski(transport: Transport, x0: Tensor, n_steps: int = 50, epsilon: float = 0.0,
                       seed: int = 0) -> FreeEnergyResult:
    """ΔF = F₁ − F₀ (kT) = −ln⟨e^{−W_F}⟩ over escorted trajectories from ``x0`` ``[B, *event]`` ~ state 0."""
    w_f = transport.work(x0, n_steps, epsilon, seed=seed).cpu().numpy()
    result = jarzynski(w_f)
    return FreeEnergyResult(result.delta_f, result.error, "feat-escorted-jarzynski", result.n_samples,
                            {"upper_bound": float(w_f.mean()), "work_forward": w_f})


def controlled_crooks(transport: Transport, x0: Tensor, x1: Tensor, n_steps: int = 50, epsilon: float = 0.0,
                      seed: int = 0) -> FreeEnergyResult:
    """ΔF (kT) by BAR on forward works (from ``x0`` ~ state 0) and reverse works (from ``x1`` ~ state 1).

    ``details``: ``upper_bound`` = ⟨W_F⟩ ≥ ΔF and ``lower_bound`` = −⟨W_R⟩ ≤ ΔF.
    """
    w_f = transport.work(x0, n_steps, epsilon, seed=seed).cpu().numpy()
    w_r = transport.work(x1, n_steps, epsilon, reverse=True, seed=seed + 1).cpu().numpy()
    result = bar(w_f, w_r)
    return FreeEnergyResult(result.delta_f, result.error, "feat-controlled-crooks", result.n_samples,
                            {"upper_bound": float(w_f.mean()), "lower_bound": float(-w_r.mean()),
                             "work_forward": w_f, "work_reverse": w_r})
