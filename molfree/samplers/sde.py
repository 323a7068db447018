"""The memoryless reference SDE of adjoint sampling, its discretisation and path weights.

Process (t ∈ [0, 1], X₀ = 0):  dX = σ(t)² v(X, t) dt + σ(t) dW,  i.e. the control of the paper is
``u = σ(t) v``; drift networks in molfree output ``v`` (units of 1/length, like a score).
The geometric schedule σ(t) = σ_min (σ_max/σ_min)^(1−t) √(2 ln(σ_max/σ_min)) decreases in t and
has the exact variance ν(t) = ∫₀ᵗ σ² = σ_max² (1 − (σ_min/σ_max)^(2t)), so the
uncontrolled terminal marginal is N(0, ν(1) I).

Steps use exact increments of the reference process: ``X_{k+1} = X_k + s_k² v + s_k ξ`` with
``s_k² = ν(t_{k+1}) − ν(t_k)``, so the discrete reference chain has exactly the Gaussian marginals
ν(t_k) and the Brownian bridges of the continuous process, and the Radon–Nikodym derivative
of a generated path against the reference chain is exact in discrete time.

Particle systems with ``com_free=True`` live in the centre-of-mass-free subspace (noise,
drift and Gaussians are projected; densities are w.r.t. Lebesgue measure on the subspace).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Drift = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _device_of(generator: torch.Generator | None) -> torch.device | None:
    return None if generator is None else generator.device


def remove_com(x: torch.Tensor) -> torch.Tensor:
    """Subtract the centroid over particles: ``[B, N, dim] -> [B, N, dim]``."""
    return x - x.mean(dim=1, keepdim=True)


@dataclass(frozen=True)
class GeometricSchedule:
    """σ(t) = σ_min (σ_max/σ_min)^(1−t) √(2 ln(σ_max/σ_min)), lengths in the target's unit (nm)."""

    sigma_min: float = 0.01
    sigma_max: float = 3.0

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Diffusion coefficient σ(t) (nm per √time), same shape as ``t``."""
        return self.sigma_min * torch.exp((1 - t) * self._log_ratio) * math.sqrt(2 * self._log_ratio)

    def variance(self, t: torch.Tensor) -> torch.Tensor:
        """Reference variance ν(t) = ∫₀ᵗ σ(s)² ds (nm²), same shape as ``t``."""
        return -self.sigma_max**2 * torch.expm1(-2 * t * self._log_ratio)

    def time_of_variance(self, nu: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`variance`: the time t at which ν(t) = ``nu`` (0 ≤ nu ≤ ν(1))."""
        return -torch.log1p(-nu / self.sigma_max**2) / (2 * self._log_ratio)


class MemorylessSDE:
    """The reference process from the point mass at 0 and its controlled version.

    Args:
        schedule: the noise schedule.
        com_free: project onto the centre-of-mass-free subspace (particle systems).
        n_steps: default number of Euler–Maruyama steps.
    """

    def __init__(self, schedule: GeometricSchedule | None = None, com_free: bool = False, n_steps: int = 100):
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        self.schedule = schedule or GeometricSchedule()
        self.com_free = com_free
        self.n_steps = n_steps

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Projection onto the sampled subspace, ``[B, N, dim]``."""
        return remove_com(x) if self.com_free else x

    def n_dof(self, shape: torch.Size | tuple[int, ...]) -> int:
        """Dimension of the sampled subspace for particle shape ``(N, dim)``."""
        n, dim = shape[-2], shape[-1]
        return (n - 1) * dim if self.com_free else n * dim

    def terminal_variance(self) -> float:
        """ν(1) (nm²): the reference terminal marginal is N(0, ν(1) I) on the subspace."""
        return float(self.schedule.variance(torch.tensor(1.0, dtype=torch.float64)))

    def reference_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """ln N(x; 0, ν(1) I) on the subspace, ``[B, N, dim] -> [B]`` (x must lie in the subspace)."""
        var = self.terminal_variance()
        d = self.n_dof(x.shape)
        return -0.5 * x.pow(2).sum((-1, -2)) / var - 0.5 * d * math.log(2 * math.pi * var)

    def reference_score(self, x: torch.Tensor) -> torch.Tensor:
        """∇ ln p_ref(x) = −x/ν(1), ``[B, N, dim]`` (x must lie in the subspace)."""
        return -x / self.terminal_variance()

    def sample_reference(self, n: int, shape: tuple[int, int], generator=None, dtype=torch.float32) -> torch.Tensor:
        """Exact samples ``[n, N, dim]`` of the uncontrolled terminal marginal, on the device of ``generator``
        (the CPU without one)."""
        noise = torch.randn((n, *shape), generator=generator, dtype=dtype, device=_device_of(generator))
        return self.project(noise) * math.sqrt(self.terminal_variance())

    def bridge(self, x1: torch.Tensor, t: torch.Tensor, generator=None) -> torch.Tensor:
        """Sample X_t of the reference bridge from 0 to ``x1`` ``[B, N, dim]`` at times ``t`` ``[B]``.

        X_t ~ N((ν_t/ν_1) x₁, ν_t (ν_1 − ν_t)/ν_1 I).
        """
        nu_t = self.schedule.variance(t.to(torch.float64)).to(x1.dtype)[:, None, None]
        nu_1 = self.terminal_variance()
        noise = self.project(torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device))
        return nu_t / nu_1 * x1 + (nu_t * (nu_1 - nu_t) / nu_1).clamp_min(0).sqrt() * noise

    def bridge_log_kernel(self, xt: torch.Tensor, t: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """ln N(x_t; (ν_t/ν_1) x₁, ν_t (ν_1 − ν_t)/ν_1 I) of each ``xt`` ``[B, N, dim]`` at its time ``t`` ``[B]``
        under each end point ``x1`` ``[M, N, dim]``, ``[B, M]`` float64, up to a term constant along each row
        (softmax over a row gives the bridge posterior of the end points given x_t)."""
        nu_t = self.schedule.variance(t.to(torch.float64))[:, None]
        remaining = (self.terminal_variance() - nu_t).clamp_min(1e-300)
        x, ends = xt.double().flatten(1), x1.double().flatten(1)
        return (x @ ends.T - 0.5 * nu_t / self.terminal_variance() * ends.pow(2).sum(1)) / remaining

    def time_grid(self, n_steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Step start times ``t_k`` ``[K]`` and exact step variances ``s_k² = ν(t_{k+1}) − ν(t_k)`` ``[K]``."""
        k = n_steps or self.n_steps
        if k < 1:
            raise ValueError(f"n_steps must be >= 1, got {k}")
        t = torch.linspace(0, 1, k + 1, dtype=torch.float64)
        return t[:-1], self.schedule.variance(t).diff()

    def simulate(self, drift: Drift | None, n: int, shape: tuple[int, int], n_steps: int | None = None,
                 generator=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Euler–Maruyama (exact-increment) samples of the controlled process.

        Args:
            drift: ``v(x [B, N, dim], t [B]) -> [B, N, dim]`` or None for the reference process.
            n: number of paths B; shape: particle shape ``(N, dim)``.
            generator: its device is where the paths are simulated (the CPU without one).
        Returns:
            terminal points ``[n, N, dim]`` and the path log-ratio ``ln dP_ref/dQ_v`` ``[n]``
            (= −Σ_k [s_k v·ξ_k + ½ s_k² ‖v‖²]), both detached.
        """
        times, step_var = self.time_grid(n_steps)
        device = _device_of(generator)
        x = torch.zeros((n, *shape), dtype=dtype, device=device)
        log_ratio = torch.zeros(n, dtype=torch.float64, device=device)
        with torch.no_grad():
            for t, var in zip(times.tolist(), step_var.tolist()):
                s = math.sqrt(var)
                noise = self.project(torch.randn(x.shape, generator=generator, dtype=dtype, device=device))
                if drift is not None:
                    v = self.project(drift(x, torch.full((n,), t, dtype=dtype, device=device)))
                    log_ratio -= (s * (v * noise).sum((-1, -2)) + 0.5 * var * v.pow(2).sum((-1, -2))).double()
                    x = x + var * v
                x = x + s * noise
        return x, log_ratio

    def log_weights(self, x1: torch.Tensor, log_ratio: torch.Tensor, reduced_energy: torch.Tensor) -> torch.Tensor:
        """Importance log-weights ``ln w = −E(x₁)/kT − ln p_ref(x₁) + ln dP_ref/dQ`` ``[B]``.

        E[w] = Z (the target's partition function on the subspace) and E[ln w] ≤ ln Z. Paths with
        infinite energy or non-finite values get ln w = −∞.
        """
        log_w = -reduced_energy.double() - self.reference_log_prob(x1.double()) + log_ratio
        return torch.where(torch.isnan(log_w), -math.inf, log_w)
