"""Diffusion samplers of Boltzmann densities: Adjoint Sampling (Cartesian and torsional), its SDE, networks, metrics
and an MCMC baseline."""
from .adjoint import (
                      AdjointConfig,
                      AdjointSampler,
                      LogZEstimate,
                      SampleResult,
                      TrainResult,
)
from .mcmc import (
                      MCMCResult,
                      equal_budget_hmc,
                      equal_budget_metropolis,
                      hamiltonian_monte_carlo,
                      lattice_start,
                      metropolis,
)
from .metrics import (
                      aligned_w2,
                      distance_w2,
                      energy_w1,
                      energy_w2,
                      log_mean_exp,
                      normalised_ess,
                      reweighted_mean,
                      wasserstein_1d,
)
from .networks import EGNNDrift, MLPDrift
from .probability_flow import ProbabilityFlow
from .sde import GeometricSchedule, MemorylessSDE
from .torsional import (
                      RotatableTorsions,
                      TorsionalAdjointSampler,
                      TorsionalEnergy,
                      TorusDrift,
                      WrappedSDE,
                      farthest_point_subset,
)

__all__ = [
                      "AdjointConfig",
                      "AdjointSampler",
                      "EGNNDrift",
                      "GeometricSchedule",
                      "LogZEstimate",
                      "MCMCResult",
                      "MLPDrift",
                      "MemorylessSDE",
                      "ProbabilityFlow",
                      "RotatableTorsions",
                      "SampleResult",
                      "TorsionalAdjointSampler",
                      "TorsionalEnergy",
                      "TorusDrift",
                      "TrainResult",
                      "WrappedSDE",
                      "aligned_w2",
                      "distance_w2",
                      "energy_w1",
                      "energy_w2",
                      "equal_budget_hmc",
                      "equal_budget_metropolis",
                      "farthest_point_subset",
                      "hamiltonian_monte_carlo",
                      "lattice_start",
                      "log_mean_exp",
                      "metropolis",
                      "normalised_ess",
                      "reweighted_mean",
                      "wasserstein_1d",
]
