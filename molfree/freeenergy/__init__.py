"""Free-energy estimators (EXP, BAR, MBAR, TI, Jarzynski) and time-series tools, all in units of kT."""
from .estimators import (FreeEnergyResult, MBARResult, PoorOverlapError, bar, exp, gauss_legendre_lambdas,
                         jarzynski, mbar, quadrature_weights, ti)
from .timeseries import convergence, decorrelate, detect_equilibration

__all__ = ["FreeEnergyResult", "MBARResult", "PoorOverlapError", "bar", "exp", "jarzynski", "mbar", "ti",
           "quadrature_weights", "gauss_legendre_lambdas", "detect_equilibration", "decorrelate", "convergence"]
