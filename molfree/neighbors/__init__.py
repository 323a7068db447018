"""Neighbor lists and pairwise kernels (one Warp kernel source for CPU and CUDA)."""
from .neighbor_list import NeighborList, neighbor_list
from .pairwise import coulomb_reaction_field, lennard_jones, softcore_lennard_jones

__all__ = [
    "NeighborList",
    "neighbor_list",
    "lennard_jones",
    "softcore_lennard_jones",
    "coulomb_reaction_field",
]
