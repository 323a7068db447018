"""Boltzmann generators: invertible flows, internal coordinates, priors, training and metrics."""
from .distributions import Distribution, NormalDistribution, ProductDistribution, UniformTorus, VonMisesTorus
from .generator import BoltzmannGenerator
from .internal import Chirality, InternalCoordinates, build_zmatrix
from .metrics import (CountedEnergy, basin_free_energy, fraction_below, fraction_finite, kish_ess, kl_divergence,
                      log_mean_exp, wasserstein2_torus)
from .training import Stage, Trainer, load_checkpoint, regularized_energy
from .transforms import (AffineCoupling, Permutation, Reshape, SequentialFlow, SplineCoupling, Standardize,
                         Transform, spline_flow)

__all__ = ["Transform", "SequentialFlow", "Permutation", "Standardize", "Reshape", "AffineCoupling",
           "SplineCoupling", "spline_flow", "Distribution", "NormalDistribution", "UniformTorus", "VonMisesTorus",
           "ProductDistribution", "InternalCoordinates", "Chirality", "build_zmatrix", "BoltzmannGenerator",
           "Stage", "Trainer", "load_checkpoint", "regularized_energy", "CountedEnergy", "kish_ess",
           "log_mean_exp", "fraction_finite", "fraction_below", "kl_divergence", "wasserstein2_torus",
           "basin_free_energy"]
