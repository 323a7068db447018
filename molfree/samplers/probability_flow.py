"""The probability-flow ODE of a memoryless controlled SDE: a deterministic generator with an exact density.

For the optimal drift v of :mod:`molfree.samplers.adjoint` the controlled process is the reference process
tilted by h_t (v = ∇ ln h_t), so its marginals have the score ∇ ln p_t = −x/ν(t) + v and are transported by

    dx/dt = ½ σ(t)² (v(x, t) + x/ν(t)).

In whitened coordinates y = x/√ν(t) the reference part drops out:

    dy/dt = ½ σ(t)² v(√ν(t) y, t)/√ν(t),      d ln q/dt = −½ σ(t)² tr ∂v/∂x,

with y ~ N(0, I) at t = 0. For any drift, trained or not, this ODE is a flow, and the density of what it
generates is exact up to the integration error; how close it is to the target depends on the drift. That is
what an independence Metropolis–Hastings move needs (``molfree.openmm.GeneratorMove``), while the SDE's own
terminal density is intractable (it has path weights only).

Integration: classical Runge–Kutta on s ∈ [s₀, 1] with t = sin²(πs/2), which makes the t^(−1/2) growth of
dy/dt at t → 0 regular (and a (1 − t)^(−1/2) one at t → 1, should the drift contract there). The trace is
exact: one forward and one backward pass over D = N·dim copies of the batch, so the drift network must treat
batch entries independently (no batch normalisation).
"""
from __future__ import annotations

import itertools
import math

import torch

from .sde import Drift, MemorylessSDE

START = 1e-4  # s₀: t₀ ≈ 2.5e-8, where y is still N(0, I) to within the tilt h_t₀ (and the flow is defined from there)


class ProbabilityFlow:
    """Generator ``x = Φ(y)``, ``y ~ N(0, I)``, with ``propose(n)`` and ``log_prob(x)`` (positions in nm).

    Args:
        sde: the memoryless reference SDE (noise schedule, centre-of-mass projection).
        drift: ``v(x [B, N, dim], t [B]) -> [B, N, dim]`` (1/nm), already projected when ``sde.com_free``.
        shape: particle shape ``(N, dim)``.
        temperature: K, the temperature of the target the drift was trained for.
        n_steps: Runge–Kutta steps (4 drift evaluations each, on D = N·dim copies of the batch).
        dtype, device: those of the drift network.
        generator: random generator of the base samples (on ``device``).
        batch_size: samples per integration (memory grows as ``batch_size`` · D).

    With ``sde.com_free`` the density is on the centre-of-mass-free subspace: ``log_prob`` removes the
    centroid of its input, so moves built on it must keep the centroid (``GeneratorMove(...,
    randomOrientation=True)``, for targets invariant under rigid-body motion).
    """

    def __init__(self, sde: MemorylessSDE, drift: Drift, shape: tuple[int, int], temperature: float,
                 n_steps: int = 100, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None, batch_size: int = 256):
        if n_steps < 1 or batch_size < 1:
            raise ValueError(f"n_steps and batch_size must be >= 1, got {n_steps} and {batch_size}")
        self.sde, self.drift, self.shape = sde, drift, tuple(shape)
        self.temperature = float(temperature)
        self.n_steps, self.batch_size = n_steps, batch_size
        self.dtype, self.device = dtype, torch.device(device)
        self.generator = generator
        self.grid = torch.linspace(START, 1.0, n_steps + 1, dtype=torch.float64).tolist()
        self.n_dof = sde.n_dof(self.shape)

    # -- the ODE ------------------------------------------------------------------------------------------

    def _velocity(self, y: torch.Tensor, s: float) -> tuple[torch.Tensor, torch.Tensor]:
        """dy/ds ``[B, N, dim]`` and d ln q/ds ``[B]`` (float64) at flow time s."""
        t = torch.tensor(math.sin(0.5 * math.pi * s) ** 2, dtype=torch.float64)
        dt_ds = 0.5 * math.pi * math.sin(math.pi * s)
        nu = float(self.sde.schedule.variance(t))
        sigma2 = float(self.sde.schedule.sigma(t)) ** 2
        v, trace = self._drift_and_trace(math.sqrt(nu) * y, float(t))
        return 0.5 * sigma2 * dt_ds / math.sqrt(nu) * v, -0.5 * sigma2 * dt_ds * trace

    def _drift_and_trace(self, x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """v(x, t) ``[B, N, dim]`` and tr ∂v/∂x ``[B]`` (float64): copy d of the batch carries the derivative
        of output coordinate d with respect to input coordinate d."""
        b, d = x.shape[0], x[0].numel()
        eye = torch.eye(d, dtype=x.dtype, device=x.device)[:, None, :]  # [D, 1, D]
        with torch.enable_grad():
            copies = x.detach().unsqueeze(0).expand(d, *x.shape).reshape(d * b, *x.shape[1:]).requires_grad_(True)
            v = self.drift(copies, torch.full((d * b,), t, dtype=x.dtype, device=x.device)).reshape(d, b, d)
            (grad,) = torch.autograd.grad((v * eye).sum(), copies)
        trace = (grad.reshape(d, b, d) * eye).sum((0, 2))
        return v[0].detach().reshape(x.shape), trace.double()

    def _integrate(self, y: torch.Tensor, forward: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Runge–Kutta from s₀ to 1 (``forward``) or back; returns the end point and ∫ d ln q/ds ds (signed)."""
        grid = self.grid if forward else self.grid[::-1]
        change = torch.zeros(y.shape[0], dtype=torch.float64, device=y.device)
        for s0, s1 in itertools.pairwise(grid):
            h = s1 - s0
            k1, l1 = self._velocity(y, s0)
            k2, l2 = self._velocity(y + 0.5 * h * k1, s0 + 0.5 * h)
            k3, l3 = self._velocity(y + 0.5 * h * k2, s0 + 0.5 * h)
            k4, l4 = self._velocity(y + h * k3, s1)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            change = change + h / 6 * (l1 + 2 * l2 + 2 * l3 + l4)
        return y, change

    def _base_log_prob(self, y: torch.Tensor) -> torch.Tensor:
        return -0.5 * y.double().pow(2).sum((-1, -2)) - 0.5 * self.n_dof * math.log(2 * math.pi)

    def _terminal_log_scale(self) -> float:
        """ln |det ∂x/∂y| at t = 1 on the subspace: x = √ν(1) y."""
        return 0.5 * self.n_dof * math.log(self.sde.terminal_variance())

    # -- generator interface ------------------------------------------------------------------------------

    def propose(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples ``[n, N, dim]`` (nm) and their log-densities ln q ``[n]`` (float64, on the subspace)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        xs, log_qs = [], []
        for i in range(0, n, self.batch_size):
            y0 = self.sde.project(torch.randn((min(self.batch_size, n - i), *self.shape), generator=self.generator,
                                              dtype=self.dtype, device=self.device))
            y1, change = self._integrate(y0, forward=True)
            xs.append(math.sqrt(self.sde.terminal_variance()) * y1)
            log_qs.append(self._base_log_prob(y0) + change - self._terminal_log_scale())
        return torch.cat(xs), torch.cat(log_qs)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """ln q(x) ``[B]`` (float64) of positions ``[B, N, dim]`` (nm), by integrating the flow backwards."""
        x = torch.as_tensor(x)
        if x.ndim != 3 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have shape [B, {self.shape[0]}, {self.shape[1]}], got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("x holds non-finite coordinates")
        x = self.sde.project(x.to(self.device, self.dtype))
        out = []
        for i in range(0, x.shape[0], self.batch_size):
            y1 = x[i:i + self.batch_size] / math.sqrt(self.sde.terminal_variance())
            y0, change = self._integrate(y1, forward=False)
            out.append(self._base_log_prob(y0) - change - self._terminal_log_scale())
        return torch.cat(out)
