"""Sampling-quality metrics for importance-weighted samples, all dimensionless (kT, rad) unless stated.

Log weights ``log_w [B]`` may contain −inf (rejected samples); they count as zero weight.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..energy import Energy


class CountedEnergy(Energy):
    """Wraps an :class:`~molfree.Energy` and counts the configurations it evaluates (``count``)."""

    def __init__(self, energy: Energy):
        super().__init__(n_atoms=energy.n_atoms)
        self.inner = energy
        self.dim, self.periodic = energy.dim, energy.periodic
        self.count = 0

    def energy(self, positions, box):
        self.count += positions.shape[0]
        return self.inner(positions, box)


def _as_tensor(log_w) -> torch.Tensor:
    if isinstance(log_w, torch.Tensor):
        return log_w.detach().double()
    return torch.as_tensor(np.asarray(log_w, dtype=np.float64))


def log_mean_exp(values) -> float:
    """``ln (1/B Σ exp(values))`` computed stably; −inf if every value is −inf."""
    v = _as_tensor(values)
    return float(torch.logsumexp(v, 0) - math.log(v.shape[0]))


def normalized_weights(log_w) -> np.ndarray:
    """Self-normalised importance weights ``[B]`` summing to 1."""
    v = _as_tensor(log_w)
    if not torch.isfinite(v).any():
        raise ValueError("no sample has a finite log weight")
    return torch.softmax(v, 0).numpy()


def kish_ess(log_w) -> float:
    """Normalised Kish effective sample size ``(Σw)² / (B Σw²)`` in [1/B, 1]; 0 if no weight is finite."""
    v = _as_tensor(log_w)
    if not torch.isfinite(v).any():
        return 0.0
    return float(torch.exp(2 * torch.logsumexp(v, 0) - torch.logsumexp(2 * v, 0)) / v.shape[0])


def fraction_finite(log_w) -> float:
    """Fraction of samples with a finite log weight (finite energy, valid geometry)."""
    return float(torch.isfinite(_as_tensor(log_w)).double().mean())


def fraction_below(reduced_energies, threshold: float) -> float:
    """Fraction of samples whose reduced energy (kT) is finite and below ``threshold``."""
    u = _as_tensor(reduced_energies)
    return float((torch.isfinite(u) & (u < threshold)).double().mean())


def _histogram(samples: np.ndarray, weights: np.ndarray, bins: int) -> np.ndarray:
    """Normalised histogram of angles ``[B, d]`` on ``[-π, π)^d`` (d = 1 or 2)."""
    hist, _ = np.histogramdd(samples, bins=[bins] * samples.shape[1], range=[(-np.pi, np.pi)] * samples.shape[1],
                             weights=weights)
    return hist / hist.sum()


def _weights(n: int, log_w) -> np.ndarray:
    return np.full(n, 1.0 / n) if log_w is None else normalized_weights(log_w)


def kl_divergence(reference: np.ndarray, samples: np.ndarray, log_w=None, bins: int = 50,
                  reference_log_w=None, eps: float = 1e-10) -> float:
    """Histogram KL(reference ‖ samples) of angles ``[B]`` or ``[B, d]`` (rad) on the torus, each set
    reweighted by its log weights if given. ``eps`` keeps empty model bins finite.
    """
    ref = np.asarray(reference).reshape(len(reference), -1)
    x = np.asarray(samples).reshape(len(samples), -1)
    p = _histogram(ref, _weights(len(ref), reference_log_w), bins)
    q = _histogram(x, _weights(len(x), log_w), bins) + eps
    q /= q.sum()
    mask = p > 0
    return float((p[mask] * np.log(p[mask] / q[mask])).sum())


def _draw(points: np.ndarray, log_w, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points: a uniform subsample (unweighted) or a resample by importance weights."""
    if log_w is None:
        return points[rng.choice(len(points), n, replace=len(points) < n)]
    return points[rng.choice(len(points), n, p=normalized_weights(log_w))]


def wasserstein2_torus(reference: np.ndarray, samples: np.ndarray, log_w=None, n: int = 1000,
                       seed: int = 0, reference_log_w=None) -> float:
    """W2 distance (rad) between angle sets ``[B, d]`` on the torus, exact for ``n`` points each.

    Each set is subsampled uniformly, or resampled by its importance weights if given; the
    optimal assignment under the periodic squared distance gives W2.
    """
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(seed)
    a = _draw(np.asarray(reference).reshape(len(reference), -1), reference_log_w, n, rng)
    b = _draw(np.asarray(samples).reshape(len(samples), -1), log_w, n, rng)
    d = np.abs(a[:, None] - b[None])
    cost = (np.minimum(d, 2 * np.pi - d) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


def basin_free_energy(phi: np.ndarray, log_w=None) -> tuple[float, float]:
    """ΔF = −ln(P(φ > 0) / P(φ < 0)) in kT with its standard error (delta method, independent samples).

    Returns ``(inf, nan)`` if the φ > 0 basin has no weight.
    """
    phi = np.asarray(phi)
    w = _weights(len(phi), log_w)
    plus = phi > 0
    p = float(w[plus].sum())
    if p <= 0 or p >= 1:
        return (math.inf if p <= 0 else -math.inf), math.nan
    var = float((w**2 * (plus - p) ** 2).sum())
    return -math.log(p / (1 - p)), math.sqrt(var) / (p * (1 - p))
