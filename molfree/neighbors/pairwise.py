"""Pair potentials over a half neighbor list: Lennard-Jones, soft-core LJ, reaction-field Coulomb.

Common conventions of the functions here:

* ``positions``: ``[N, 3]`` or ``[B, N, 3]`` in nm, float32 or float64 (CPU or CUDA).
* ``pairs``: a :class:`~molfree.neighbors.NeighborList` or any ``(i, j, shifts)`` tuple: ``i``,
  ``j`` ``[P]`` integer indices into the flattened ``[B * N]`` atoms (each pair listed once),
  ``shifts`` ``[P, 3]`` integer lattice shifts with ``r_ij = x[j] - x[i] + shifts @ box``.
  Entries with ``i = j = -1`` are padding and ignored; pairs with ``r_ij >= cutoff`` contribute 0.
* ``box``: None, ``[3, 3]`` or ``[B, 3, 3]`` box vectors (rows) in nm, OpenMM's reduced form.
* Per-atom parameters are ``[N]`` and shared by every configuration of the batch.
* Returns energies ``[B]`` in kJ/mol (a 0-d tensor for ``[N, 3]`` positions), differentiable
  with respect to ``positions`` and ``box`` (and ``lambda_sterics`` for the soft-core
  potential); the parameters are constants. Second derivatives are not supported.

Excluded pairs (bonded neighbours) must be left out of the pair list by the caller.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..checks import as_box, as_positions, check_cutoff
from ._warp_pairwise import (
    coulomb_reaction_field_op,
    lennard_jones_op,
    softcore_lennard_jones_op,
)

Tensor = torch.Tensor

__all__ = ["lennard_jones", "softcore_lennard_jones", "coulomb_reaction_field"]


def _prepare(positions, pairs, box) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor], bool]:
    """Validate the inputs shared by every potential.

    Returns ``(positions [B, N, 3], box [B, 3, 3] (zeros without a box), (i, j, shifts), single)``.
    """
    positions, single = as_positions(positions)
    if positions.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"positions must be float32 or float64, got {positions.dtype}")
    batch, n_atoms, _ = positions.shape
    box_tensor = as_box(box, batch, positions)

    overflow = getattr(pairs, "overflow", None)
    if overflow is not None and bool(overflow):
        raise ValueError("the neighbor list overflowed max_pairs: rebuild it with a larger max_pairs")
    i, j, shifts = (pairs.i, pairs.j, pairs.shifts) if hasattr(pairs, "shifts") else pairs
    i, j, shifts = (torch.as_tensor(t, device=positions.device) for t in (i, j, shifts))
    if i.is_floating_point() or j.is_floating_point() or shifts.is_floating_point():
        raise ValueError("pair indices i, j and shifts must be integer tensors")
    i, j, shifts = i.to(torch.int64), j.to(torch.int64), shifts.to(torch.int64)
    if i.ndim != 1 or j.shape != i.shape or shifts.shape != (i.shape[0], 3):
        raise ValueError(
            f"pairs must be i [P], j [P], shifts [P, 3]; got {tuple(i.shape)}, {tuple(j.shape)}, "
            f"{tuple(shifts.shape)}"
        )
    padding = i < 0
    n_total = batch * n_atoms
    if (padding != (j < 0)).any() or (padding & ((i != -1) | (j != -1))).any():
        raise ValueError("padding pairs must have i = j = -1")
    if (i >= n_total).any() or (j >= n_total).any():
        raise ValueError(f"pair indices must be below B * N = {n_total}")
    if (~padding & (i // n_atoms != j // n_atoms)).any():
        raise ValueError("every pair must join two atoms of the same configuration")
    if box_tensor is None:
        if (shifts != 0).any():
            raise ValueError("pairs have nonzero periodic shifts but no box was given")
        box_tensor = positions.new_zeros(batch, 3, 3)
    return positions, box_tensor, (i, j, shifts.contiguous()), single


def _per_atom(name: str, values, positions: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Return a per-atom parameter as a ``[N]`` tensor on the device (and dtype) of ``positions``."""
    if not isinstance(values, Tensor):
        values = torch.as_tensor(np.asarray(values))
    values = values.detach().to(device=positions.device, dtype=dtype or positions.dtype)
    if values.shape != positions.shape[1:2]:
        raise ValueError(f"{name} must have shape [N] = [{positions.shape[1]}], got {tuple(values.shape)}")
    if values.is_floating_point() and not torch.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return values


def _lj_parameters(sigma, epsilon, positions: Tensor) -> tuple[Tensor, Tensor]:
    sigma = _per_atom("sigma", sigma, positions)
    epsilon = _per_atom("epsilon", epsilon, positions)
    if (sigma < 0).any() or (epsilon < 0).any():
        raise ValueError("sigma (nm) and epsilon (kJ/mol) must be non-negative")
    return sigma, epsilon


def _unbatch(energies: Tensor, single: bool) -> Tensor:
    return energies[0] if single else energies


def lennard_jones(
    positions: Any,
    pairs: Any,
    sigma: Any,
    epsilon: Any,
    cutoff: float,
    box: Any = None,
    switch_distance: float | None = None,
) -> Tensor:
    """Truncated Lennard-Jones energy ``sum 4 eps_ij [(sig_ij/r)^12 - (sig_ij/r)^6]`` in kJ/mol.

    Args:
        positions: ``[N, 3]`` or ``[B, N, 3]`` nm.
        pairs: half neighbor list (see module docstring).
        sigma: ``[N]`` nm; mixed as ``sig_ij = (sig_i + sig_j) / 2``.
        epsilon: ``[N]`` kJ/mol; mixed as ``eps_ij = sqrt(eps_i eps_j)``.
        cutoff: nm; pairs at ``r >= cutoff`` contribute nothing (no shift, no tail correction).
        box: None, ``[3, 3]`` or ``[B, 3, 3]`` nm.
        switch_distance: nm, ``0 <= switch_distance < cutoff``: multiply by OpenMM's switching
            function ``1 - 10 t^3 + 15 t^4 - 6 t^5``, ``t = (r - switch) / (cutoff - switch)``,
            as NonbondedForce's ``useSwitchingFunction``. None: plain truncation.

    Returns:
        Energies ``[B]`` (0-d for ``[N, 3]`` positions), kJ/mol.
    """
    cutoff = check_cutoff(cutoff)
    if switch_distance is None:
        switch_distance = cutoff
    elif not 0 <= switch_distance < cutoff:
        raise ValueError(f"switch_distance must satisfy 0 <= switch_distance < cutoff = {cutoff}, "
                         f"got {switch_distance!r}")
    positions, box, (i, j, shifts), single = _prepare(positions, pairs, box)
    sigma, epsilon = _lj_parameters(sigma, epsilon, positions)
    energies = lennard_jones_op(positions, box, i, j, shifts, sigma, epsilon, cutoff, float(switch_distance))[0]
    return _unbatch(energies, single)


def softcore_lennard_jones(
    positions: Any,
    pairs: Any,
    sigma: Any,
    epsilon: Any,
    cutoff: float,
    lambda_sterics: float | Tensor,
    alchemical: Any,
    box: Any = None,
    alpha: float = 0.5,
) -> Tensor:
    """Lennard-Jones with Beutler soft-core decoupling of an alchemical region, in kJ/mol.

    Pairs with exactly one atom in ``alchemical`` interact through
    ``lambda * 4 eps_ij [1/q^2 - 1/q]``, ``q = alpha (1 - lambda) + (r / sig_ij)^6``
    (the openmmtools / OpenFE form); all other pairs, alchemical-alchemical included, through
    plain Lennard-Jones. Everything is truncated at ``cutoff`` without switching.

    Args:
        positions, pairs, sigma, epsilon, cutoff, box: as in :func:`lennard_jones`.
        lambda_sterics: float or 0-d tensor in [0, 1] (1: fully coupled, 0: decoupled). A
            tensor that requires grad receives ``dE/dlambda``.
        alchemical: bool ``[N]``, True for the atoms being decoupled.
        alpha: soft-core parameter (dimensionless, >= 0).

    Returns:
        Energies ``[B]`` (0-d for ``[N, 3]`` positions), kJ/mol.
    """
    cutoff = check_cutoff(cutoff)
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a non-negative number, got {alpha!r}")
    if isinstance(lambda_sterics, Tensor):
        if lambda_sterics.numel() != 1:
            raise ValueError(f"lambda_sterics must be a scalar, got shape {tuple(lambda_sterics.shape)}")
        lambda_value = float(lambda_sterics.detach())
    else:
        lambda_value = float(lambda_sterics)
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_sterics must lie in [0, 1], got {lambda_value!r}")
    positions, box, (i, j, shifts), single = _prepare(positions, pairs, box)
    sigma, epsilon = _lj_parameters(sigma, epsilon, positions)
    if not isinstance(alchemical, Tensor):
        alchemical = torch.as_tensor(np.asarray(alchemical))
    if alchemical.dtype != torch.bool:
        raise ValueError(f"alchemical must be a bool mask [N], got dtype {alchemical.dtype}")
    alchemical = _per_atom("alchemical", alchemical, positions, dtype=torch.bool)
    if isinstance(lambda_sterics, Tensor):
        lam = lambda_sterics.to(device=positions.device, dtype=positions.dtype).reshape(())
    else:
        lam = torch.tensor(lambda_value, device=positions.device, dtype=positions.dtype)
    energies = softcore_lennard_jones_op(positions, box, lam, i, j, shifts, sigma, epsilon, alchemical,
                                         cutoff, float(alpha))[0]
    return _unbatch(energies, single)


def coulomb_reaction_field(
    positions: Any,
    pairs: Any,
    charges: Any,
    cutoff: float,
    box: Any = None,
    epsilon_solvent: float = 78.3,
) -> Tensor:
    """Cutoff Coulomb energy with a reaction field, as OpenMM's NonbondedForce Cutoff(Non)Periodic.

    ``E = ONE_4PI_EPS0 sum q_i q_j (1/r + k_rf r^2 - c_rf)`` for ``r < cutoff``, with
    ``k_rf = (eps - 1) / ((2 eps + 1) r_c^3)`` and ``c_rf = 1/r_c + k_rf r_c^2`` (so each pair
    energy vanishes at the cutoff). ``epsilon_solvent=1`` gives the plain shifted Coulomb
    ``1/r - 1/r_c``; ``epsilon_solvent=float('inf')`` the conducting-boundary limit
    ``k_rf = 1 / (2 r_c^3)``.

    Args:
        positions, pairs, cutoff, box: as in :func:`lennard_jones`.
        charges: ``[N]`` elementary charges.
        epsilon_solvent: dielectric constant beyond the cutoff, >= 1 (may be ``inf``).

    Returns:
        Energies ``[B]`` (0-d for ``[N, 3]`` positions), kJ/mol.
    """
    cutoff = check_cutoff(cutoff)
    epsilon_solvent = float(epsilon_solvent)
    if not epsilon_solvent >= 1.0:
        raise ValueError(f"epsilon_solvent must be >= 1 (inf allowed), got {epsilon_solvent!r}")
    ratio = 0.5 if math.isinf(epsilon_solvent) else (epsilon_solvent - 1) / (2 * epsilon_solvent + 1)
    k_rf = ratio / cutoff**3
    c_rf = 1 / cutoff + k_rf * cutoff**2
    positions, box, (i, j, shifts), single = _prepare(positions, pairs, box)
    charges = _per_atom("charges", charges, positions)
    energies = coulomb_reaction_field_op(positions, box, i, j, shifts, charges, cutoff, k_rf, c_rf)[0]
    return _unbatch(energies, single)
