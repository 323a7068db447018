"""Input validation shared by every layer: positions, boxes, cutoffs.

Each check raises a ``ValueError`` that names the offending argument.
"""
from __future__ import annotations

import numpy as np
import torch


def as_positions(positions, dim: int = 3, n_atoms: int | None = None) -> tuple[torch.Tensor, bool]:
    """Validate positions and return them batched.

    Args:
        positions: ``[N, dim]`` or ``[B, N, dim]`` array-like, nm.
        dim: spatial dimension expected in the last axis.
        n_atoms: number of particles expected, if fixed.

    Returns:
        ``(positions [B, N, dim], was_single)``; ``was_single`` is True for ``[N, dim]`` input.
    """
    if not isinstance(positions, torch.Tensor):
        positions = torch.as_tensor(np.asarray(positions, dtype=np.float64))
    if not positions.is_floating_point():
        raise ValueError(f"positions must be floating point, got dtype {positions.dtype}")
    if positions.ndim not in (2, 3) or positions.shape[-1] != dim:
        raise ValueError(
            f"positions must have shape [N, {dim}] or [B, N, {dim}], got {tuple(positions.shape)}"
        )
    single = positions.ndim == 2
    if single:
        positions = positions.unsqueeze(0)
    if n_atoms is not None and positions.shape[1] != n_atoms:
        raise ValueError(f"positions have {positions.shape[1]} particles, expected {n_atoms}")
    if not torch.isfinite(positions).all():
        raise ValueError("positions contain NaN or infinite values")
    return positions, single


def as_box(box, batch_size: int, like: torch.Tensor) -> torch.Tensor | None:
    """Validate periodic box vectors in OpenMM's reduced form and return them batched.

    Args:
        box: None, ``[3, 3]`` or ``[B, 3, 3]`` array-like, rows are box vectors a, b, c in nm.
        batch_size: B of the positions the box belongs to.
        like: tensor whose dtype and device the box takes.

    Returns:
        ``[B, 3, 3]`` tensor or None.

    The reduced form (OpenMM's requirement) is a = (ax, 0, 0), b = (bx, by, 0),
    c = (cx, cy, cz) with ax, by, cz > 0, |bx| <= ax/2, |cx| <= ax/2, |cy| <= by/2.
    """
    if box is None:
        return None
    box = torch.as_tensor(box).to(dtype=like.dtype, device=like.device)
    if box.ndim == 2:
        box = box.unsqueeze(0)
    if box.ndim != 3 or box.shape[1:] != (3, 3):
        raise ValueError(f"box must have shape [3, 3] or [B, 3, 3], got {tuple(box.shape)}")
    if box.shape[0] == 1 and batch_size > 1:
        box = box.expand(batch_size, 3, 3)
    if box.shape[0] != batch_size:
        raise ValueError(f"box batch size {box.shape[0]} does not match positions batch size {batch_size}")
    if not torch.isfinite(box).all():
        raise ValueError("box contains NaN or infinite values")
    check_reduced_box(box)
    return box


def check_reduced_box(box: torch.Tensor) -> None:
    """Raise ``ValueError`` unless every ``[3, 3]`` box in ``box [B, 3, 3]`` is in reduced form."""
    b = box.detach().to(torch.float64).cpu()
    tol = 1e-6 * b.abs().amax().clamp_min(1.0)
    upper = torch.stack([b[:, 0, 1], b[:, 0, 2], b[:, 1, 2]], dim=-1)
    if (upper.abs() > tol).any():
        raise ValueError("box is not in reduced form: a must lie along x and b in the xy plane (upper triangle must be 0)")
    ax, by, cz = b[:, 0, 0], b[:, 1, 1], b[:, 2, 2]
    if (ax <= 0).any() or (by <= 0).any() or (cz <= 0).any():
        raise ValueError("box is not in reduced form: diagonal elements must be positive")
    if ((b[:, 1, 0].abs() > 0.5 * ax + tol) | (b[:, 2, 0].abs() > 0.5 * ax + tol)
            | (b[:, 2, 1].abs() > 0.5 * by + tol)).any():
        raise ValueError(
            "box is not in reduced form: need |bx| <= ax/2, |cx| <= ax/2, |cy| <= by/2 "
            "(reduce it as OpenMM does, e.g. with molfree.checks.reduce_box)"
        )


def reduce_box(box) -> np.ndarray:
    """Return an equivalent lattice ``[3, 3]`` (nm) in OpenMM's reduced form.

    Accepts any right-handed lattice (rows a, b, c); the result spans the same lattice,
    rotated so that a lies along x and b in the xy plane, then reduced by lattice vector sums.
    """
    cell = np.asarray(box, dtype=np.float64)
    if cell.shape != (3, 3):
        raise ValueError(f"box must have shape [3, 3], got {cell.shape}")
    if np.linalg.det(cell) <= 0:
        raise ValueError("box vectors must be linearly independent and right-handed")
    lengths = np.linalg.norm(cell, axis=1)
    a, b, c = lengths
    alpha = np.arccos(np.dot(cell[1], cell[2]) / (b * c))
    beta_ = np.arccos(np.dot(cell[0], cell[2]) / (a * c))
    gamma = np.arccos(np.dot(cell[0], cell[1]) / (a * b))
    ax = a
    bx, by = b * np.cos(gamma), b * np.sin(gamma)
    cx = c * np.cos(beta_)
    cy = c * (np.cos(alpha) - np.cos(beta_) * np.cos(gamma)) / np.sin(gamma)
    cz = np.sqrt(max(c * c - cx * cx - cy * cy, 0.0))
    v = np.array([[ax, 0, 0], [bx, by, 0], [cx, cy, cz]])
    v[2] -= v[1] * np.round(v[2, 1] / v[1, 1])
    v[2] -= v[0] * np.round(v[2, 0] / v[0, 0])
    v[1] -= v[0] * np.round(v[1, 0] / v[0, 0])
    return v


def check_cutoff(cutoff: float) -> float:
    """Return ``cutoff`` (nm) as float or raise ``ValueError`` if it is not positive and finite."""
    cutoff = float(cutoff)
    if not np.isfinite(cutoff) or cutoff <= 0:
        raise ValueError(f"cutoff must be a positive distance in nm, got {cutoff!r}")
    return cutoff
