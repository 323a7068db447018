"""Time-series tools around pymbar's: equilibration detection, decorrelation, convergence over time."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ._pymbar import pymbar


def detect_equilibration(series) -> tuple[int, float, float]:
    """``(t0, g, n_eff)``: equilibration start index, statistical inefficiency and effective samples after t0."""
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ValueError("series must be a finite 1-D array")
    t0, g, n_eff = pymbar().timeseries.detect_equilibration(x)
    return int(t0), float(g), float(n_eff)


def decorrelate(series) -> np.ndarray:
    """Indices of an uncorrelated subsample of a stationary ``[T]`` time series."""
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ValueError("series must be a finite 1-D array")
    if np.ptp(x) == 0:  # constant (e.g. a rigid solute's gas leg): nothing correlated to thin out
        return np.arange(x.size)
    return np.asarray(pymbar().timeseries.subsample_correlated_data(x), dtype=np.int64)


def convergence(estimate: Callable[[float], tuple[float, float]], fractions=(0.1, 0.2, 0.4, 0.6, 0.8, 1.0)):
    """Estimates over growing fractions of the data: ``estimate(fraction) -> (ΔF, error)``; returns ``[F, 3]``."""
    rows = [(f, *estimate(f)) for f in fractions]
    return np.array(rows, dtype=np.float64)
