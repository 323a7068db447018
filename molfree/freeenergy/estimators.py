"""Free-energy estimators on reduced quantities (units of kT); each returns ΔF with a statistical error.

Conventions: ΔF = F₁ − F₀ in kT. A forward work sample is w_F = u₁(x) − u₀(x) for x ~ p₀;
a reverse one is w_R = u₀(x) − u₁(x) for x ~ p₁ (equilibrium perturbations), or the
accumulated nonequilibrium work of a switching protocol (Jarzynski).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from ._pymbar import pymbar


@dataclass(frozen=True)
class FreeEnergyResult:
    """ΔF = F₁ − F₀ and its one-standard-error uncertainty, both in kT."""

    delta_f: float
    error: float
    method: str
    n_samples: int
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MBARResult:
    """MBAR estimates for K states: ``delta_f[i, j] = F_j − F_i`` and ``error[i, j]`` (kT), ``overlap`` [K, K]."""

    delta_f: np.ndarray
    error: np.ndarray
    overlap: np.ndarray
    f_k: np.ndarray
    n_k: np.ndarray

    @property
    def total(self) -> FreeEnergyResult:
        """ΔF between the first and last state."""
        return FreeEnergyResult(float(self.delta_f[0, -1]), float(self.error[0, -1]), "mbar", int(self.n_k.sum()))

    def neighbour_overlap(self) -> np.ndarray:
        """Overlap O[k, k+1] between consecutive states, ``[K-1]``."""
        return np.diagonal(self.overlap, offset=1).copy()


class PoorOverlapError(ValueError):
    """States do not overlap enough for a trustworthy estimate; carries the overlap matrix."""

    def __init__(self, message: str, overlap: np.ndarray):
        super().__init__(message)
        self.overlap = overlap


def _as_samples(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"{name} must be a 1-D array with at least 2 samples, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values ({int(np.sum(~np.isfinite(arr)))} of {arr.size})")
    return arr


def _exponential_average(w: np.ndarray) -> tuple[float, float]:
    """−ln⟨e^{−w}⟩ and its delta-method standard error, computed in log space."""
    n = w.size
    log_mean = logsumexp(-w) - np.log(n)
    # relative variance of e^{-w}: ⟨e^{-2w}⟩/⟨e^{-w}⟩² − 1
    log_second = logsumexp(-2 * w) - np.log(n)
    rel_var = max(np.exp(log_second - 2 * log_mean) - 1.0, 0.0)
    return float(-log_mean), float(np.sqrt(rel_var / (n - 1)))


def exp(work, direction: str = "forward") -> FreeEnergyResult:
    """Zwanzig's exponential averaging (free-energy perturbation).

    Args:
        work: ``[N]`` reduced work (kT): w_F = u₁ − u₀ on samples of state 0 (``direction="forward"``),
            or w_R = u₀ − u₁ on samples of state 1 (``direction="reverse"``).
    Returns:
        ΔF = F₁ − F₀ (kT) with the delta-method standard error.
    """
    w = _as_samples(work, "work")
    value, error = _exponential_average(w)
    if direction == "forward":
        return FreeEnergyResult(value, error, "exp-forward", w.size)
    if direction == "reverse":
        return FreeEnergyResult(-value, error, "exp-reverse", w.size)
    raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")


def jarzynski(work) -> FreeEnergyResult:
    """Jarzynski's equality ΔF = −ln⟨e^{−W}⟩ over ``[N]`` nonequilibrium forward works (kT).

    The error is the delta-method standard error; ``details`` holds the mean work,
    an upper bound on ΔF (⟨W⟩ ≥ ΔF).
    """
    w = _as_samples(work, "work")
    value, error = _exponential_average(w)
    return FreeEnergyResult(value, error, "jarzynski", w.size, {"mean_work": float(w.mean())})


def bar(work_forward, work_reverse) -> FreeEnergyResult:
    """Bennett's acceptance ratio (pymbar) from ``[N_F]`` forward and ``[N_R]`` reverse works (kT)."""
    w_f = _as_samples(work_forward, "work_forward")
    w_r = _as_samples(work_reverse, "work_reverse")
    result = pymbar().other_estimators.bar(w_f, w_r, compute_uncertainty=True)
    return FreeEnergyResult(float(result["Delta_f"]), float(result["dDelta_f"]), "bar", w_f.size + w_r.size)


def mbar(u_kn, n_k, min_overlap: float = 0.03, maximum_iterations: int = 10000) -> MBARResult:
    """Multistate Bennett acceptance ratio (pymbar 4, robust solver).

    Args:
        u_kn: ``[K, N]`` reduced potentials (kT) of every sample n in every state k; samples are
            grouped by the state they were drawn from, ``n_k[k]`` of them from state k in order.
        n_k: ``[K]`` sample counts.
        min_overlap: smallest acceptable overlap O[k, k+1] between consecutive states; below it
            :class:`PoorOverlapError` is raised instead of returning a number (pass 0 to disable).

    Raises:
        ValueError for bad shapes or non-finite energies; :class:`PoorOverlapError` for poor overlap;
        RuntimeError if the solver does not converge.
    """
    u = np.asarray(u_kn, dtype=np.float64)
    n = np.asarray(n_k, dtype=np.int64)
    if u.ndim != 2 or n.ndim != 1 or u.shape[0] != n.size or u.shape[1] != n.sum():
        raise ValueError(f"u_kn must be [K, N] with K = len(n_k) and N = sum(n_k); got {u.shape} and n_k={n.tolist()}")
    if not np.all(np.isfinite(u)):
        raise ValueError(f"u_kn contains NaN or infinite values ({int(np.sum(~np.isfinite(u)))} entries)")
    try:
        solver = pymbar().MBAR(u, n, solver_protocol="robust", maximum_iterations=maximum_iterations)
    except Exception as exc:  # pymbar raises ParameterError/BoundsError/… on failure
        raise RuntimeError(f"MBAR failed to converge: {exc}") from exc
    results = solver.compute_free_energy_differences(compute_uncertainty=True)
    overlap = np.asarray(solver.compute_overlap()["matrix"])
    out = MBARResult(np.asarray(results["Delta_f"]), np.asarray(results["dDelta_f"]), overlap,
                     np.asarray(solver.f_k), n)
    neighbours = out.neighbour_overlap()
    if min_overlap > 0 and neighbours.size and neighbours.min() < min_overlap:
        worst = int(np.argmin(neighbours))
        raise PoorOverlapError(
            f"poor overlap between states {worst} and {worst + 1}: O = {neighbours[worst]:.3g} < {min_overlap} "
            "(add intermediate states or sample longer)", overlap)
    return out


def quadrature_weights(lambdas, method: str) -> np.ndarray:
    """Weights w_k such that ∫₀¹ f(λ) dλ ≈ Σ w_k f(λ_k) for the given ``[K]`` λ points."""
    lam = np.asarray(lambdas, dtype=np.float64)
    if lam.ndim != 1 or lam.size < 2:
        raise ValueError("lambdas must be a 1-D array of at least 2 points")
    if np.any(lam < 0) or np.any(lam > 1) or not np.all(np.isfinite(lam)):
        raise ValueError(f"lambdas must lie in [0, 1], got {lam.tolist()}")
    if np.any(np.diff(lam) <= 0):
        raise ValueError("lambdas must be strictly increasing")
    if method == "trapezoid":
        if lam[0] != 0 or lam[-1] != 1:
            raise ValueError("trapezoid quadrature needs λ = 0 and λ = 1 as end points")
        return np.array([np.trapezoid(np.eye(lam.size)[k], lam) for k in range(lam.size)])
    if method == "simpson":
        from scipy.integrate import simpson

        if lam[0] != 0 or lam[-1] != 1:
            raise ValueError("Simpson quadrature needs λ = 0 and λ = 1 as end points")
        return np.array([simpson(np.eye(lam.size)[k], x=lam) for k in range(lam.size)])
    if method == "gauss-legendre":
        nodes, weights = np.polynomial.legendre.leggauss(lam.size)
        if not np.allclose(lam, (nodes + 1) / 2, atol=1e-8):
            raise ValueError(f"Gauss-Legendre quadrature needs λ = gauss_legendre_lambdas({lam.size})")
        return weights / 2
    raise ValueError(f"unknown quadrature {method!r}: use 'trapezoid', 'simpson' or 'gauss-legendre'")


def gauss_legendre_lambdas(n: int) -> np.ndarray:
    """The ``n`` Gauss–Legendre nodes mapped to (0, 1)."""
    return (np.polynomial.legendre.leggauss(n)[0] + 1) / 2


def ti(lambdas, dudl_samples, method: str = "trapezoid", decorrelate: bool = True) -> FreeEnergyResult:
    """Thermodynamic integration ΔF = ∫₀¹ ⟨∂u/∂λ⟩_λ dλ.

    Args:
        lambdas: ``[K]`` λ points in [0, 1], strictly increasing.
        dudl_samples: K arrays of ∂u/∂λ samples (kT), one per λ (time series allowed).
        method: 'trapezoid', 'simpson' or 'gauss-legendre' (λ must then be the GL nodes).
        decorrelate: scale each window's standard error by its statistical inefficiency (pymbar).
    """
    weights = quadrature_weights(lambdas, method)
    if len(dudl_samples) != weights.size:
        raise ValueError(f"got {len(dudl_samples)} sample arrays for {weights.size} λ points")
    means, sems = [], []
    for k, samples in enumerate(dudl_samples):
        x = _as_samples(samples, f"dudl_samples[{k}]")
        g = pymbar().timeseries.statistical_inefficiency(x) if decorrelate and x.std() > 0 else 1.0
        means.append(x.mean())
        sems.append(x.std(ddof=1) * np.sqrt(g / x.size))
    means, sems = np.array(means), np.array(sems)
    return FreeEnergyResult(float(weights @ means), float(np.sqrt(np.sum((weights * sems) ** 2))), f"ti-{method}",
                            sum(len(s) for s in dudl_samples), {"means": means.tolist(), "errors": sems.tolist()})
