"""Invertible transforms that return their log-Jacobian determinant.

Convention: ``forward`` is the generative direction (latent → data). Every transform maps
``x`` to ``(y, log_det)`` with ``log_det [B] = log |det ∂y/∂x|``; ``inverse(y)`` returns
``(x, log |det ∂x/∂y|)``. Vectors are ``[B, D]``; angles are radians on ``[-π, π)``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class Transform(nn.Module):
    """An invertible map with its log-Jacobian determinant (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class SequentialFlow(Transform):
    """Composition ``t_n ∘ … ∘ t_1``: ``forward`` applies the transforms in order."""

    def __init__(self, transforms: Sequence[Transform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x):
        log_det = x.new_zeros(x.shape[0])
        for transform in self.transforms:
            x, ld = transform(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, y):
        log_det = y.new_zeros(y.shape[0])
        for transform in reversed(self.transforms):
            y, ld = transform.inverse(y)
            log_det = log_det + ld
        return y, log_det


class Permutation(Transform):
    """Reorders the coordinates: ``y = x[:, permutation]`` (volume preserving)."""

    def __init__(self, permutation: Sequence[int]):
        super().__init__()
        permutation = torch.as_tensor(permutation, dtype=torch.long)
        if not torch.equal(permutation.sort().values, torch.arange(len(permutation))):
            raise ValueError("permutation must contain each index 0..D-1 exactly once")
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", permutation.argsort())

    def forward(self, x):
        return x[:, self.permutation], x.new_zeros(x.shape[0])

    def inverse(self, y):
        return y[:, self.inverse_permutation], y.new_zeros(y.shape[0])


class Standardize(Transform):
    """Fixed elementwise affine map ``y = mean + std · x`` (``mean``, ``std``: ``[D]``)."""

    def __init__(self, mean, std):
        super().__init__()
        dtype = torch.get_default_dtype()
        mean, std = torch.as_tensor(mean, dtype=dtype), torch.as_tensor(std, dtype=dtype)
        if mean.shape != std.shape or mean.ndim != 1 or not (std > 0).all():
            raise ValueError("mean and std must be [D] vectors with std > 0")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x):
        log_det = self.std.log().sum().to(x).expand(x.shape[0])
        return self.mean.to(x) + self.std.to(x) * x, log_det

    def inverse(self, y):
        log_det = -self.std.log().sum().to(y).expand(y.shape[0])
        return (y - self.mean.to(y)) / self.std.to(y), log_det


class Reshape(Transform):
    """Flat vectors ``[B, N·dim]`` ↔ particle positions ``[B, N, dim]`` (volume preserving)."""

    def __init__(self, n_particles: int, dim: int):
        super().__init__()
        self.n_particles, self.dim = n_particles, dim

    def forward(self, x):
        return x.reshape(x.shape[0], self.n_particles, self.dim), x.new_zeros(x.shape[0])

    def inverse(self, y):
        return y.reshape(y.shape[0], -1), y.new_zeros(y.shape[0])


def wrap_angle(x: torch.Tensor) -> torch.Tensor:
    """Angles (rad) mapped onto ``[-π, π)``."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


def mlp(n_in: int, n_out: int, hidden: int, n_hidden_layers: int = 2) -> nn.Sequential:
    """A SiLU multilayer perceptron whose last layer starts at zero (so couplings start as identities)."""
    sizes = [n_in] + [hidden] * n_hidden_layers
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    last = nn.Linear(sizes[-1], n_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class Coupling(Transform):
    """Coupling layer: coordinates ``transformed`` are changed elementwise with parameters
    predicted from the remaining (conditioning) coordinates, which pass through unchanged.

    Args:
        dim: D.
        transformed: indices of the coordinates this layer changes (the split).
        circular: ``[D]`` bool, True for angles on the torus; conditioning angles enter the
            network as (cos, sin) so the layer respects periodicity.
        n_params: parameters per transformed coordinate.
        hidden: width of the conditioner MLP.
    """

    def __init__(self, dim: int, transformed: Sequence[int], circular, n_params: int, hidden: int):
        super().__init__()
        transformed = torch.as_tensor(sorted(transformed), dtype=torch.long)
        mask = torch.zeros(dim, dtype=torch.bool)
        mask[transformed] = True
        if not 0 < len(transformed) < dim or len(set(transformed.tolist())) != len(transformed):
            raise ValueError("a coupling must transform a non-empty, proper subset of distinct coordinates")
        circular = torch.zeros(dim, dtype=torch.bool) if circular is None else torch.as_tensor(circular).bool()
        if circular.shape != (dim,):
            raise ValueError(f"circular must be a [D={dim}] bool mask")
        conditioning = (~mask).nonzero().flatten()
        self.register_buffer("transformed", transformed)
        self.register_buffer("conditioning", conditioning)
        self.register_buffer("circular", circular[transformed])
        self.register_buffer("conditioning_circular", circular[conditioning])
        n_features = len(conditioning) + int(circular[conditioning].sum())
        self.n_params = n_params
        self.net = mlp(n_features, len(transformed) * n_params, hidden)

    def _params(self, x: torch.Tensor) -> torch.Tensor:
        c = x[:, self.conditioning]
        cc = self.conditioning_circular
        features = torch.cat([torch.where(cc, torch.cos(c), c), torch.sin(c[:, cc])], dim=-1)
        return self.net(features).reshape(x.shape[0], len(self.transformed), self.n_params)

    def _elementwise(self, x: torch.Tensor, params: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Elementwise map of ``x [B, d]`` with ``params [B, d, n_params]``; returns y and log|dy/dx| ``[B, d]``."""
        raise NotImplementedError

    def _couple(self, x: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        y, log_det = self._elementwise(x[:, self.transformed], self._params(x), inverse)
        out = x.clone()
        out[:, self.transformed] = y
        return out, log_det.sum(-1)

    def forward(self, x):
        return self._couple(x, inverse=False)

    def inverse(self, y):
        return self._couple(y, inverse=True)


class AffineCoupling(Coupling):
    """Real-NVP affine coupling ``y = x · exp(s) + t`` with ``s = scale · tanh(·)`` bounded.

    Only for non-circular coordinates (an affine map does not preserve the torus).
    """

    def __init__(self, dim: int, transformed: Sequence[int], circular=None, hidden: int = 64,
                 max_log_scale: float = 3.0):
        super().__init__(dim, transformed, circular, 2, hidden)
        if self.circular.any():
            raise ValueError("AffineCoupling cannot transform circular coordinates; use SplineCoupling")
        self.max_log_scale = max_log_scale

    def _elementwise(self, x, params, inverse):
        log_scale = self.max_log_scale * torch.tanh(params[..., 0] / self.max_log_scale)
        shift = params[..., 1]
        if inverse:
            return (x - shift) * torch.exp(-log_scale), -log_scale
        return x * torch.exp(log_scale) + shift, log_scale


def rational_quadratic_spline(x: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor, derivatives: torch.Tensor,
                              left: torch.Tensor | float, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotone rational-quadratic spline (Gregory & Delbourgo; Durkan et al. 2019) inside its knots.

    Args:
        x: ``[...]`` inputs inside ``[left, left + Σ widths]`` (outputs inside heights when ``inverse``).
        widths, heights: ``[..., K]`` positive bin sizes (the totals must match).
        derivatives: ``[..., K + 1]`` positive slopes at the knots.
        left: lower end of both the input and output interval, broadcastable to ``[..., 1]``.
        inverse: evaluate the inverse map.

    Returns:
        ``(y, log |dy/dx|)`` of the map that was evaluated, both ``[...]``.
    """
    xk = left + torch.cumsum(torch.nn.functional.pad(widths, (1, 0)), -1)
    yk = left + torch.cumsum(torch.nn.functional.pad(heights, (1, 0)), -1)
    knots = yk if inverse else xk
    k = ((x[..., None] >= knots[..., 1:-1]).sum(-1, keepdim=True)).clamp(0, widths.shape[-1] - 1)

    def at(t):
        return t.gather(-1, k)[..., 0]

    x0, y0, w, h = at(xk), at(yk), at(widths), at(heights)
    d0, d1 = at(derivatives), derivatives[..., 1:].gather(-1, k)[..., 0]
    s = h / w
    if inverse:
        dy = x - y0
        a = h * (s - d0) + dy * (d1 + d0 - 2 * s)
        b = h * d0 - dy * (d1 + d0 - 2 * s)
        c = -s * dy
        xi = (2 * c / (-b - torch.sqrt((b * b - 4 * a * c).clamp_min(0)))).clamp(0, 1)
    else:
        xi = ((x - x0) / w).clamp(0, 1)
    t = xi * (1 - xi)
    denominator = s + (d1 + d0 - 2 * s) * t
    log_slope = (2 * torch.log(s) + torch.log(d1 * xi**2 + 2 * s * t + d0 * (1 - xi) ** 2)
                 - 2 * torch.log(denominator))
    if inverse:
        return x0 + xi * w, -log_slope
    return y0 + h * (s * xi**2 + d0 * t) / denominator, log_slope


class SplineCoupling(Coupling):
    """Rational-quadratic spline coupling (neural spline flow) with circular splines for angles.

    Non-circular coordinates: a monotone spline on ``[-bound, bound]`` with unit slope at the
    ends and the identity outside (linear tails). Circular coordinates: a spline on
    ``[-π, π]`` whose end slopes are equal, i.e. a smooth diffeomorphism of the circle
    (Rezende et al. 2020). The layer starts as the identity.

    Args:
        dim, transformed, circular, hidden: as in :class:`Coupling`.
        n_bins: K bins per spline.
        bound: half-width of the non-circular spline interval.
    """

    min_bin = 1e-3
    min_derivative = 1e-3

    def __init__(self, dim: int, transformed: Sequence[int], circular=None, hidden: int = 64, n_bins: int = 8,
                 bound: float = 5.0):
        super().__init__(dim, transformed, circular, 3 * n_bins, hidden)
        self.n_bins, self.bound = n_bins, float(bound)
        # softplus(raw + offset) + min_derivative = 1 at raw = 0: the identity at initialisation
        self.derivative_offset = math.log(math.expm1(1 - self.min_derivative))

    def _elementwise(self, x, params, inverse):
        k = self.n_bins
        circular = self.circular
        half = torch.full(circular.shape, self.bound, dtype=x.dtype, device=x.device).masked_fill(circular, math.pi)
        scale = 2 * half

        def bins(raw):
            return (self.min_bin + (1 - self.min_bin * k) * torch.softmax(raw, -1)) * scale[:, None]

        widths, heights = bins(params[..., :k]), bins(params[..., k:2 * k])
        inner = self.min_derivative + nn.functional.softplus(params[..., 2 * k:3 * k - 1] + self.derivative_offset)
        end = torch.where(circular, self.min_derivative
                          + nn.functional.softplus(params[..., 3 * k - 1] + self.derivative_offset),
                          torch.ones_like(params[..., 0]))
        derivatives = torch.cat([end[..., None], inner, end[..., None]], -1)
        x = torch.where(circular, wrap_angle(x), x)
        inside = circular | (x.abs() < half)
        xin = torch.where(inside, x, torch.zeros_like(x))
        y, log_det = rational_quadratic_spline(xin, widths, heights, derivatives, -half[:, None], inverse)
        return torch.where(inside, y, x), torch.where(inside, log_det, torch.zeros_like(log_det))


def spline_flow(dim: int, circular=None, n_layers: int = 4, hidden: int = 64, n_bins: int = 8, bound: float = 5.0,
                seed: int = 0) -> SequentialFlow:
    """Stack of ``n_layers`` :class:`SplineCoupling` s; each consecutive pair transforms the two halves
    of a fresh (seeded) random split, so every coordinate is changed once per pair."""
    if dim < 2:
        raise ValueError("a coupling flow needs at least 2 dimensions")
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for n in range(n_layers):
        if n % 2 == 0:
            perm = torch.randperm(dim, generator=generator).tolist()
        half = perm[:dim // 2] if n % 2 == 0 else perm[dim // 2:]
        layers.append(SplineCoupling(dim, half, circular, hidden=hidden, n_bins=n_bins, bound=bound))
    return SequentialFlow(layers)
