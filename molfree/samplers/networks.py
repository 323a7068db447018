"""Drift networks ``v(x [B, N, dim], t [B]) -> [B, N, dim]`` for the adjoint sampler.

``v`` is the control divided by σ(t) (see :mod:`molfree.samplers.sde`), in 1/length (1/nm).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class TimeFeatures(nn.Module):
    """Sinusoidal features of t ∈ [0, 1]: ``[B] -> [B, n_features]`` (n_features even)."""

    def __init__(self, n_features: int = 16):
        super().__init__()
        if n_features < 2 or n_features % 2:
            raise ValueError(f"n_features must be even and >= 2, got {n_features}")
        self.register_buffer("freqs", math.pi * torch.arange(1, n_features // 2 + 1, dtype=torch.float32))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t[:, None].to(self.freqs) * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def mlp(n_in: int, n_hidden: int, n_out: int, n_layers: int = 2) -> nn.Sequential:
    """SiLU perceptron with ``n_layers`` hidden layers of width ``n_hidden``."""
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(n_layers):
        layers += [nn.Linear(width, n_hidden), nn.SiLU()]
        width = n_hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class MLPDrift(nn.Module):
    """Plain perceptron drift for non-particle targets (e.g. the 2D Gaussian mixture).

    Args:
        n_particles, dim: the target's particle shape (flattened internally).
        hidden, n_layers: width and depth; length_scale: typical extent of the target (nm), inputs are divided by it.
    """

    def __init__(self, n_particles: int, dim: int, hidden: int = 128, n_layers: int = 3, length_scale: float = 1.0,
                 n_time_features: int = 16):
        super().__init__()
        self.shape = (n_particles, dim)
        self.length_scale = float(length_scale)
        self.time = TimeFeatures(n_time_features)
        self.net = mlp(n_particles * dim + n_time_features, hidden, n_particles * dim, n_layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1) / self.length_scale
        return self.net(torch.cat([flat, self.time(t)], dim=-1)).reshape(x.shape)


class GaussianDistances(nn.Module):
    """Gaussian expansion of a reduced distance r/ℓ, ``[...] -> [..., n]``: ``n`` centres evenly on
    [0, ``reduced_max``], each as wide as their spacing."""

    def __init__(self, n: int, reduced_max: float):
        super().__init__()
        if n < 2 or not reduced_max > 0:
            raise ValueError(f"need n >= 2 Gaussians and reduced_max > 0, got {n} and {reduced_max}")
        self.register_buffer("centres", torch.linspace(0.0, reduced_max, n))
        self.inverse_width = (n - 1) / reduced_max

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        exponent = -0.5 * ((r[..., None] - self.centres) * self.inverse_width).pow(2)
        # floored at e^-60 (< 1e-26): exp's underflow path on CPU is ~25x slower than its normal one
        return torch.exp(exponent.clamp_min(-60.0))


class EGNNLayer(nn.Module):
    """One E(n)-equivariant message-passing layer (Satorras et al. 2021) on the complete graph.

    ``bounded`` passes the coordinate weights through tanh, so the layer moves a particle by at
    most ``length_scale`` (keeps stacked layers stable). ``n_rbf`` > 0 feeds the edges a Gaussian
    expansion of r/ℓ (on [0, ``rbf_max``]) besides d², so narrow features in the pair distance are
    resolved.
    """

    def __init__(self, hidden: int, length_scale: float, bounded: bool, n_rbf: int = 0, rbf_max: float = 3.0):
        super().__init__()
        self.length_scale = length_scale
        self.bounded = bounded
        # first edge layer W [h_i, h_j, d², rbf(d)] split per node, so it costs O(N) not O(N²) matmuls
        self.edge_i = nn.Linear(hidden, hidden)
        self.edge_j = nn.Linear(hidden, hidden, bias=False)
        self.edge_d = nn.Linear(1 + n_rbf, hidden, bias=False)
        self.rbf = GaussianDistances(n_rbf, rbf_max) if n_rbf else None
        self.edge = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.coord = mlp(hidden, hidden, 1, 1)
        self.node = mlp(2 * hidden, hidden, hidden, 1)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[1]
        diff = (x[:, :, None] - x[:, None, :]) / self.length_scale  # [B, N, N, dim]
        d2 = diff.pow(2).sum(-1, keepdim=True)
        # d² + ε under the root: the diagonal's zero distance must not give an infinite gradient
        r = (d2 + 1e-12).sqrt()
        edge_features = d2 if self.rbf is None else torch.cat([d2, self.rbf(r[..., 0])], -1)
        pre = self.edge_i(h)[:, :, None] + self.edge_j(h)[:, None, :] + self.edge_d(edge_features)
        off_diagonal = 1.0 - torch.eye(n, dtype=x.dtype, device=x.device)[None, :, :, None]
        m = self.edge(pre) * off_diagonal
        weights = self.coord(m)
        weights = (torch.tanh(weights) if self.bounded else weights) * off_diagonal / (n - 1)
        x = x + self.length_scale * (diff / (r + 1.0) * weights).sum(2)
        h = h + self.node(torch.cat([h, m.sum(2) / (n - 1)], -1))
        return h, x


class EGNNDrift(nn.Module):
    """E(n)- and permutation-equivariant drift with centre-of-mass-free output for identical particles.

    The output is the total displacement of the coordinates through the layers, minus its
    mean over particles: it rotates with the input, permutes with it, ignores translations
    and sums to zero over particles. Works in any spatial dimension. Inner layers move
    coordinates by bounded amounts; the last one is unbounded (the drift's magnitude).

    Args:
        hidden: feature width; n_layers: message-passing layers;
        length_scale: typical interparticle distance (nm) used to normalise distances;
        n_rbf, rbf_max: Gaussian distance features on [0, rbf_max] in units of length_scale (0: d² only).
    """

    def __init__(self, hidden: int = 64, n_layers: int = 4, length_scale: float = 1.0, n_time_features: int = 16,
                 n_rbf: int = 0, rbf_max: float = 3.0):
        super().__init__()
        self.time = TimeFeatures(n_time_features)
        self.embed = mlp(n_time_features, hidden, hidden, 1)
        self.layers = nn.ModuleList(EGNNLayer(hidden, float(length_scale), bounded=i < n_layers - 1, n_rbf=n_rbf,
                                              rbf_max=rbf_max) for i in range(n_layers))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.shape[1] < 2:
            raise ValueError("EGNNDrift needs at least 2 particles")
        h = self.embed(self.time(t))[:, None, :].expand(-1, x.shape[1], -1)
        y = x
        for layer in self.layers:
            h, y = layer(h, y)
        out = y - x
        return out - out.mean(dim=1, keepdim=True)
