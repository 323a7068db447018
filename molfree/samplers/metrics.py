"""Sample-quality metrics of the sampling literature and importance-weight summaries.

Conventions: positions ``[B, N, dim]`` (nm); energies ``[B]`` in whatever unit is passed
(the benchmarks use reduced energies E/kT). Wasserstein distances between 1D empirical
distributions are exact (quantile functions); the aligned W2 uses the Euclidean norm of the
full configuration after centring, best rotation and particle permutation.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def log_mean_exp(log_w: torch.Tensor) -> torch.Tensor:
    """ln mean exp(log_w) of ``[B]`` (stable)."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def normalised_ess(log_w: torch.Tensor) -> torch.Tensor:
    """Kish effective sample size divided by the sample count, in (0, 1]."""
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)) / log_w.shape[0]


def reweighted_mean(values: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
    """Self-normalised importance-sampling mean of ``values`` ``[B, ...]`` with log-weights ``[B]``."""
    w = torch.softmax(log_w.double(), 0)
    return (w.reshape(-1, *([1] * (values.ndim - 1))) * values.double()).sum(0)


def importance_resample(log_w: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices ``[n]`` drawn with replacement ∝ exp(log_w) (self-normalised importance resampling of ``[B]``)."""
    return torch.multinomial(torch.softmax(log_w.double(), 0), n, replacement=True, generator=generator)


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def wasserstein_1d(u, v, p: int = 2) -> float:
    """Exact W_p between the empirical distributions of 1D samples ``u`` and ``v``."""
    u, v = np.sort(_as_numpy(u).ravel()), np.sort(_as_numpy(v).ravel())
    if u.size == 0 or v.size == 0:
        raise ValueError("wasserstein_1d needs non-empty samples")
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    q = np.union1d(np.arange(1, u.size) / u.size, np.arange(1, v.size) / v.size)
    edges = np.concatenate([[0.0], q, [1.0]])
    mid = 0.5 * (edges[1:] + edges[:-1])
    du = u[np.minimum((mid * u.size).astype(int), u.size - 1)]
    dv = v[np.minimum((mid * v.size).astype(int), v.size - 1)]
    return float((np.diff(edges) * np.abs(du - dv) ** p).sum() ** (1 / p))


def energy_w1(e_model, e_reference) -> float:
    """W1 between energy distributions ``[B]`` (energy unit)."""
    return wasserstein_1d(e_model, e_reference, p=1)


def energy_w2(e_model, e_reference) -> float:
    """W2 between energy distributions ``[B]`` (energy unit)."""
    return wasserstein_1d(e_model, e_reference, p=2)


def interatomic_distances(x: torch.Tensor) -> torch.Tensor:
    """All unordered pair distances ``[B, N, dim] -> [B, N(N-1)/2]`` (nm)."""
    i, j = torch.triu_indices(x.shape[1], x.shape[1], offset=1)
    return (x[:, j] - x[:, i]).norm(dim=-1)


def distance_w2(x_model: torch.Tensor, x_reference: torch.Tensor) -> float:
    """W2 (nm) between the pooled interatomic-distance distributions of two sample sets."""
    return wasserstein_1d(interatomic_distances(x_model), interatomic_distances(x_reference), p=2)


def _kabsch(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Proper rotation R ``[dim, dim]`` minimising ‖x − y Rᵀ‖ for centred ``[N, dim]`` point sets."""
    u, _, vt = np.linalg.svd(y.T @ x)
    d = np.ones(x.shape[1])
    d[-1] = np.sign(np.linalg.det(u @ vt)) or 1.0
    return (u * d) @ vt


def aligned_distance(x: np.ndarray, y: np.ndarray, n_rounds: int = 3) -> float:
    """‖x − align(y)‖ (nm) over rotations and permutations of ``y`` ``[N, dim]`` (heuristic, an upper bound).

    Starts from the permutation matching distances to the centroid, then alternates
    Kabsch rotations and Hungarian permutations.
    """
    x, y = x - x.mean(0), y - y.mean(0)
    _, perm = linear_sum_assignment(np.subtract.outer(np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)) ** 2)
    best = math.inf
    for _ in range(n_rounds):
        rot = _kabsch(x, y[perm])
        y_rot = y @ rot
        cost = ((x[:, None] - y_rot[None]) ** 2).sum(-1)
        _, perm = linear_sum_assignment(cost)
        best = min(best, float(cost[np.arange(len(x)), perm].sum()))
    return math.sqrt(best)


def aligned_w2(x_model: torch.Tensor, x_reference: torch.Tensor) -> float:
    """W2 (nm) between sample sets under the rotation- and permutation-aligned Euclidean cost.

    Optimal transport of the two empirical sets (equal sizes: an assignment problem) on the
    cost :func:`aligned_distance`². Cost O(B²) alignments: use a few hundred samples. It has a
    noise floor: two independent sets from the same distribution are at a positive distance
    set by thermal fluctuations and the sample size, so compare against that floor
    (e.g. reference vs reference).
    """
    a, b = _as_numpy(x_model), _as_numpy(x_reference)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"aligned_w2 needs equal sample counts, got {a.shape[0]} and {b.shape[0]}")
    cost = np.array([[aligned_distance(xa, xb) ** 2 for xb in b] for xa in a])
    rows, cols = linear_sum_assignment(cost)
    return float(math.sqrt(cost[rows, cols].mean()))
