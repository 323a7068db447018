"""Neighbor lists: all pairs within a cutoff, with periodic image shifts.

The fast path is the Warp cell list of :mod:`molfree.neighbors._warp_neighbors` (CPU and CUDA);
a pure-torch O(N^2) search serves as reference and as fallback when Warp is unavailable.

Conventions (shared with ASE and vesin): a pair ``(i, j, S)`` has the vector
``r_ij = x[j] - x[i] + S @ box`` with integer cell shifts ``S`` and box rows a, b, c, and
``|r_ij| < cutoff``. Periodic images of an atom itself (``i == j``, ``S != 0``) are pairs too;
cutoffs larger than the box are handled by scanning as many images as needed.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import torch

from ..checks import as_box, as_positions, check_cutoff

try:
    from ._warp_neighbors import expected_pairs, neighbor_pairs, neighbor_pairs_op
except ImportError:  # pragma: no cover - exercised only without warp-lang
    neighbor_pairs = neighbor_pairs_op = None

__all__ = ["NeighborList", "neighbor_list"]

_METHODS = ("auto", "brute", "cell", "torch")
#: Atoms per configuration up to which "auto" scans all pairs instead of building cells (measured on CPU).
_BRUTE_MAX_ATOMS = 128


class NeighborList(NamedTuple):
    """Pairs within the cutoff; ``P`` is the number of pairs or the fixed capacity.

    Attributes:
        i: ``[P]`` int64 first atom (index into the flattened ``[B*N]`` atoms), -1 in padding.
        j: ``[P]`` int64 second atom, -1 in padding.
        shifts: ``[P, 3]`` int64 cell shifts ``S`` with ``r_ij = x[j] - x[i] + S @ box``, 0 in padding.
        overflow: 0-d bool, True if more pairs exist than ``max_pairs``.
    """

    i: torch.Tensor
    j: torch.Tensor
    shifts: torch.Tensor
    overflow: torch.Tensor


def neighbor_list(
    positions,
    cutoff: float,
    box=None,
    pbc=None,
    half: bool = True,
    max_pairs: int | None = None,
    method: str = "auto",
) -> NeighborList:
    """All pairs of atoms closer than ``cutoff``.

    Args:
        positions: ``[N, 3]`` or ``[B, N, 3]`` (nm), float32/float64 tensor (CPU or CUDA) or array.
            For ``[B, N, 3]`` the indices refer to the flattened ``[B*N]`` atoms and pairs never
            connect different configurations.
        cutoff: distance cutoff (nm), pairs with ``|r_ij| < cutoff``.
        box: None (open system) or reduced box vectors ``[3, 3]`` / ``[B, 3, 3]`` (nm, rows a, b, c).
            Positions outside the box are allowed; the shifts refer to the positions as given.
        pbc: periodicity per box vector: None (periodic in all directions iff a box is given),
            a bool, or three bools. Along a non-periodic direction there are no images and atoms
            are not wrapped; the box still fixes the frame (a, b, c), so a box is required as soon
            as any direction is periodic.
        half: True for every unordered pair once, False for both ``(i, j, S)`` and ``(j, i, -S)``.
        max_pairs: None for exact-size output; an int for fixed-size output padded with -1 (total
            over the batch), with ``overflow`` set when more pairs exist (the first ones found are kept).
        method: "auto", "brute" (all pairs, Warp), "cell" (cell list, Warp) or "torch" (reference).

    Returns:
        :class:`NeighborList` on the device of ``positions``; no gradients flow through it.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    cutoff = check_cutoff(cutoff)
    if max_pairs is not None and (isinstance(max_pairs, bool) or int(max_pairs) != max_pairs or max_pairs < 0):
        raise ValueError(f"max_pairs must be None or a non-negative int, got {max_pairs!r}")
    pos, _ = as_positions(positions)
    if pos.dtype not in (torch.float32, torch.float64):
        pos = pos.to(torch.float32)
    pos = pos.detach()
    periodic = _as_pbc(pbc, box is not None)
    batch, n_atoms = pos.shape[:2]
    cell = as_box(box, batch, like=pos)
    if cell is None:
        cell = torch.eye(3, dtype=pos.dtype, device=pos.device).expand(batch, 3, 3)
    if method == "auto":
        method = "brute" if n_atoms <= _BRUTE_MAX_ATOMS else "cell"
    if method != "torch" and neighbor_pairs is None:
        warnings.warn("warp-lang is not available: using the slow pure-torch neighbor search", stacklevel=2)
        method = "torch"
    if method == "torch":
        i, j, shifts = _torch_pairs(pos, cell, periodic, cutoff, half)
        return _fit(i, j, shifts, max_pairs)
    brute = method == "brute"
    periodic = list(periodic)
    if max_pairs is not None:
        pairs = neighbor_pairs_op if torch.compiler.is_compiling() else neighbor_pairs
        i, j, shifts, count = pairs(pos, cell, periodic, cutoff, half, int(max_pairs), brute)
        return NeighborList(i, j, shifts, count > max_pairs)
    capacity = expected_pairs(pos, cell, periodic, cutoff, half)
    i, j, shifts, count = neighbor_pairs(pos, cell, periodic, cutoff, half, capacity, brute, pad=False)
    n_pairs = int(count)
    if n_pairs > capacity:
        i, j, shifts, _ = neighbor_pairs(pos, cell, periodic, cutoff, half, n_pairs, brute, pad=False)
    no_overflow = torch.zeros((), dtype=torch.bool, device=pos.device)
    return NeighborList(i[:n_pairs], j[:n_pairs], shifts[:n_pairs], no_overflow)


def _as_pbc(pbc, has_box: bool) -> tuple[bool, bool, bool]:
    """Validate ``pbc`` (None, bool or three bools) and return three bools."""
    if pbc is None:
        return (has_box,) * 3
    if isinstance(pbc, bool):
        pbc = (pbc,) * 3
    flags = np.asarray(pbc)
    if flags.shape != (3,) or flags.dtype.kind not in "bui" or not np.isin(flags, (0, 1)).all():
        raise ValueError(f"pbc must be None, a bool or three bools, got {pbc!r}")
    flags = tuple(bool(f) for f in flags)
    if any(flags) and not has_box:
        raise ValueError("pbc has periodic directions but no box was given")
    return flags


def _fit(i: torch.Tensor, j: torch.Tensor, shifts: torch.Tensor, max_pairs: int | None) -> NeighborList:
    """Exact-size pairs as a :class:`NeighborList`, cut or padded with -1 to ``max_pairs``."""
    n_pairs = i.shape[0]
    overflow = torch.tensor(max_pairs is not None and n_pairs > max_pairs, device=i.device)
    if max_pairs is None or n_pairs == max_pairs:
        return NeighborList(i, j, shifts, overflow)
    if n_pairs > max_pairs:
        return NeighborList(i[:max_pairs], j[:max_pairs], shifts[:max_pairs], overflow)
    pad = max_pairs - n_pairs
    return NeighborList(
        torch.cat([i, i.new_full((pad,), -1)]),
        torch.cat([j, j.new_full((pad,), -1)]),
        torch.cat([shifts, shifts.new_zeros((pad, 3))]),
        overflow,
    )


def _torch_pairs(
    positions: torch.Tensor, box: torch.Tensor, periodic: tuple[bool, bool, bool], cutoff: float, half: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference search over all pairs and periodic images, in float64.

    Args:
        positions: ``[B, N, 3]`` nm.
        box: ``[B, 3, 3]`` reduced box rows (nm); only the frame matters along open directions.

    Returns:
        ``(i [P], j [P], shifts [P, 3])`` int64 over the flattened atoms.
    """
    batch, n_atoms = positions.shape[:2]
    device = positions.device
    idx = torch.arange(n_atoms, device=device)
    later = (idx[None, :] > idx[:, None])[..., None]  # [N, N, 1]: j > i
    same = (idx[None, :] == idx[:, None])[..., None]
    out_i, out_j, out_s = [], [], []
    for b in range(batch):
        h = box[b].to(torch.float64)
        inv = torch.linalg.inv(h)
        x = positions[b].to(torch.float64)
        wraps = torch.floor(x @ inv) * torch.tensor(periodic, device=device)
        x = x - wraps @ h
        images = torch.ceil(cutoff * inv.norm(dim=0)).long().tolist()
        shifts = torch.cartesian_prod(*(
            torch.arange(-m if p else 0, (m if p else 0) + 1, device=device) for m, p in zip(images, periodic)
        ))
        # sign of the first non-zero component: +1 for shifts that come "forward" in a half list
        order = shifts.gather(1, (shifts != 0).int().argmax(dim=1, keepdim=True))[:, 0].sign()
        chunk = max(1, 2**21 // max(n_atoms * n_atoms, 1))
        for start in range(0, len(shifts), chunk):
            s = shifts[start:start + chunk]
            d = x[None, :, None, :] - x[:, None, None, :] + (s.to(torch.float64) @ h)[None, None]
            close = (d * d).sum(-1) < cutoff * cutoff  # [N, N, K]
            forward = order[start:start + chunk] > 0
            close &= (later | (same & forward)) if half else ~(same & (order[start:start + chunk] == 0))
            i, j, k = close.nonzero(as_tuple=True)
            out_i.append(i + b * n_atoms)
            out_j.append(j + b * n_atoms)
            out_s.append(s[k] + (wraps[i] - wraps[j]).long())
    return torch.cat(out_i), torch.cat(out_j), torch.cat(out_s).reshape(-1, 3)
