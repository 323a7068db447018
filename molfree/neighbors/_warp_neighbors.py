"""Warp cell-list neighbor search, exposed as the custom op ``molfree::neighbor_pairs``.

One kernel source serves CPU and CUDA (Warp picks the device of the input tensors).
The search works in fractional coordinates of the reduced box: atoms are wrapped into
the box along periodic directions, binned into cells whose width normal to each pair of
box vectors is at least the cutoff divided by ``refine`` and sorted by cell (counting
sort). Each atom then scans a half stencil of cell offsets (lexicographically >= 0), so
every unordered pair is found exactly once; offsets beyond one box length become extra
periodic images, which makes cutoffs larger than the box work. Along the fastest cell
axis, consecutive cells of a stencil row are contiguous in memory and scanned as one range.
The brute-force method is the same search with one cell per configuration.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ._warp import wp

wp.set_module_options({"enable_backward": False})

#: Relative enlargement of the cutoff used to size cells, guarding rounding at cell edges.
_GRID_PAD = 1e-5
#: At most this many cells per atom (plus a constant) in one configuration.
_MAX_CELLS_PER_ATOM = 2
#: Atoms per cutoff cube above which cells of half the cutoff pay off (measured on CPU).
_REFINE_THRESHOLD = 40.0


@wp.func
def _floor_div(u: int, n: int):
    q = u / n
    if q * n > u:
        q = q - 1
    return q


@wp.kernel
def _assign_cells(
    positions: wp.array(dtype=Any),
    inv_box_t: wp.array(dtype=Any),
    box_t: wp.array(dtype=Any),
    origin: wp.array(dtype=Any),
    cells_per_frac: wp.array(dtype=Any),
    n_cells: wp.array(dtype=wp.vec3i),
    cell_base: wp.array(dtype=wp.int32),
    pbc: wp.vec3i,
    n_atoms: int,
    wrapped: wp.array(dtype=Any),
    wraps: wp.array(dtype=wp.vec3i),
    cell_of: wp.array(dtype=wp.int32),
    rank: wp.array(dtype=wp.int32),
    cell_count: wp.array(dtype=wp.int32),
):
    """Wrap atom ``a`` into the box, find its cell and its rank inside the cell."""
    a = wp.tid()
    b = a / n_atoms
    x = positions[a]
    s = inv_box_t[b] * x
    n = n_cells[b]
    k = wp.vec3i(0, 0, 0)
    c = wp.vec3i(0, 0, 0)
    for d in range(3):
        if pbc[d] != 0:
            k[d] = int(wp.floor(s[d]))
            s[d] = s[d] - type(s[d])(k[d])
        c[d] = wp.clamp(int((s[d] - origin[b][d]) * cells_per_frac[b][d]), 0, n[d] - 1)
    kf = type(x)(type(x[0])(k[0]), type(x[0])(k[1]), type(x[0])(k[2]))
    wrapped[a] = x - box_t[b] * kf
    wraps[a] = k
    cell = cell_base[b] + (c[0] * n[1] + c[1]) * n[2] + c[2]
    cell_of[a] = cell
    rank[a] = wp.atomic_add(cell_count, cell, 1)


@wp.kernel
def _sort_by_cell(
    wrapped: wp.array(dtype=Any),
    wraps: wp.array(dtype=wp.vec3i),
    cell_of: wp.array(dtype=wp.int32),
    rank: wp.array(dtype=wp.int32),
    cell_start: wp.array(dtype=wp.int32),
    sorted_pos: wp.array(dtype=Any),
    sorted_wraps: wp.array(dtype=wp.vec3i),
    sorted_atom: wp.array(dtype=wp.int32),
    sorted_cell: wp.array(dtype=wp.int32),
):
    """Scatter atom ``a`` to its slot in cell order (counting sort, second pass)."""
    a = wp.tid()
    cell = cell_of[a]
    p = cell_start[cell] + rank[a]
    sorted_pos[p] = wrapped[a]
    sorted_wraps[p] = wraps[a]
    sorted_atom[p] = a
    sorted_cell[p] = cell


@wp.kernel
def _find_pairs(
    sorted_pos: wp.array(dtype=Any),
    sorted_wraps: wp.array(dtype=wp.vec3i),
    sorted_atom: wp.array(dtype=wp.int32),
    sorted_cell: wp.array(dtype=wp.int32),
    cell_start: wp.array(dtype=wp.int32),
    cell_count: wp.array(dtype=wp.int32),
    box_t: wp.array(dtype=Any),
    n_cells: wp.array(dtype=wp.vec3i),
    reach: wp.array(dtype=wp.vec3i),
    cell_base: wp.array(dtype=wp.int32),
    pbc: wp.vec3i,
    n_atoms: int,
    cutoff2: Any,
    both_ways: int,
    capacity: int,
    counter: wp.array(dtype=wp.int64),
    out_i: wp.array(dtype=wp.int64),
    out_j: wp.array(dtype=wp.int64),
    out_shift: wp.array2d(dtype=wp.int64),
):
    """Scan the half stencil of the atom at sorted slot ``p`` and write its pairs."""
    p = wp.tid()
    atom_i = sorted_atom[p]
    b = atom_i / n_atoms
    xi = sorted_pos[p]
    wrap_i = sorted_wraps[p]
    n = n_cells[b]
    m = reach[b]
    base = cell_base[b]
    local = sorted_cell[p] - base
    c2 = local % n[2]
    c1 = (local / n[2]) % n[1]
    c0 = local / (n[1] * n[2])
    h = wp.transpose(box_t[b])  # rows a, b, c
    for o0 in range(m[0] + 1):
        u0 = c0 + o0
        s0 = int(0)
        if pbc[0] != 0:
            s0 = _floor_div(u0, n[0])
        elif u0 >= n[0]:
            continue
        w0 = u0 - s0 * n[0]
        lo1 = -m[1]
        if o0 == 0:
            lo1 = 0
        for o1 in range(lo1, m[1] + 1):
            u1 = c1 + o1
            s1 = int(0)
            if pbc[1] != 0:
                s1 = _floor_div(u1, n[1])
            elif u1 < 0 or u1 >= n[1]:
                continue
            w1 = u1 - s1 * n[1]
            row = base + (w0 * n[1] + w1) * n[2]
            row_shift = type(cutoff2)(s0) * h[0] + type(cutoff2)(s1) * h[1]
            center_row = o0 == 0 and o1 == 0
            lo2 = c2 - m[2]
            if center_row:
                lo2 = c2
            hi2 = c2 + m[2]
            if pbc[2] == 0:
                lo2 = wp.max(lo2, 0)
                hi2 = wp.min(hi2, n[2] - 1)
            u2 = lo2
            while u2 <= hi2:
                s2 = int(0)
                if pbc[2] != 0:
                    s2 = _floor_div(u2, n[2])
                w2 = u2 - s2 * n[2]
                last = wp.min(hi2 - u2, n[2] - 1 - w2) + w2
                q_begin = cell_start[row + w2]
                if center_row and u2 == c2:
                    q_begin = p + 1
                q_end = cell_start[row + last] + cell_count[row + last]
                shift = row_shift + type(cutoff2)(s2) * h[2]
                for q in range(q_begin, q_end):
                    r = (sorted_pos[q] - xi) + shift
                    if wp.dot(r, r) < cutoff2:
                        s = wp.vec3i(s0, s1, s2) + wrap_i - sorted_wraps[q]
                        atom_j = sorted_atom[q]
                        slot = wp.atomic_add(counter, 0, wp.int64(1 + both_ways))
                        if slot < wp.int64(capacity):
                            out_i[slot] = wp.int64(atom_i)
                            out_j[slot] = wp.int64(atom_j)
                            for d in range(3):
                                out_shift[slot, d] = wp.int64(s[d])
                        if both_ways != 0 and slot + wp.int64(1) < wp.int64(capacity):
                            out_i[slot + wp.int64(1)] = wp.int64(atom_j)
                            out_j[slot + wp.int64(1)] = wp.int64(atom_i)
                            for d in range(3):
                                out_shift[slot + wp.int64(1), d] = -wp.int64(s[d])
                u2 = u2 + last - w2 + 1


@wp.kernel
def _pad_tail(
    counter: wp.array(dtype=wp.int64),
    out_i: wp.array(dtype=wp.int64),
    out_j: wp.array(dtype=wp.int64),
    out_shift: wp.array2d(dtype=wp.int64),
):
    """Mark slots past the number of found pairs as padding (-1 indices, zero shifts)."""
    slot = wp.tid()
    if wp.int64(slot) >= counter[0]:
        out_i[slot] = wp.int64(-1)
        out_j[slot] = wp.int64(-1)
        for d in range(3):
            out_shift[slot, d] = wp.int64(0)


def _overloads(vec, mat, scalar) -> tuple[wp.Kernel, wp.Kernel, wp.Kernel]:
    """Concrete kernels for one precision (both precisions compile into one module)."""
    vec_array, mat_array = wp.array(dtype=vec), wp.array(dtype=mat)
    return (
        wp.overload(_assign_cells, {
            "positions": vec_array, "inv_box_t": mat_array, "box_t": mat_array, "origin": vec_array,
            "cells_per_frac": vec_array, "wrapped": vec_array,
        }),
        wp.overload(_sort_by_cell, {"wrapped": vec_array, "sorted_pos": vec_array}),
        wp.overload(_find_pairs, {"sorted_pos": vec_array, "box_t": mat_array, "cutoff2": scalar}),
    )


#: Per positions dtype: Warp vector, matrix and scalar types, and the kernels (assign, sort, find).
_WARP_TYPES = {
    torch.float32: (wp.vec3f, wp.mat33f, wp.float32, _overloads(wp.vec3f, wp.mat33f, wp.float32)),
    torch.float64: (wp.vec3d, wp.mat33d, wp.float64, _overloads(wp.vec3d, wp.mat33d, wp.float64)),
}


def _cell_grid(
    positions: torch.Tensor, box: np.ndarray, inv: np.ndarray, pbc: list[bool], cutoff: float, brute: bool
) -> tuple[np.ndarray, ...]:
    """Cell grid of every configuration for boxes ``box [B, 3, 3]`` with inverses ``inv`` (float64).

    Returns ``(origin [B,3], cells_per_frac [B,3], n_cells [B,3], reach [B,3], cell_base [B], total)``:
    fractional origin and inverse cell width, cell counts, stencil half-widths (cells) and the
    index of each configuration's first cell.
    """
    batch, n_atoms = positions.shape[:2]
    spacing = 1.0 / np.linalg.norm(inv, axis=1)  # distance between lattice planes [B, 3]
    periodic = np.asarray(pbc, dtype=bool)
    search = cutoff * (1.0 + _GRID_PAD)
    origin = np.zeros((batch, 3))
    extent = np.ones((batch, 3))
    if not periodic.all():
        frac = positions.detach() @ torch.as_tensor(inv, dtype=positions.dtype, device=positions.device)
        lo, hi = frac.amin(dim=1).to(torch.float64).cpu().numpy(), frac.amax(dim=1).to(torch.float64).cpu().numpy()
        origin[:, ~periodic] = lo[:, ~periodic]
        extent[:, ~periodic] = (hi - lo)[:, ~periodic]
    length = extent * spacing  # extent of the occupied region normal to each plane (nm)
    if brute:
        n_cells = np.ones((batch, 3), dtype=np.int64)
    else:
        atoms_per_cube = n_atoms * cutoff**3 / np.maximum(length, cutoff).prod(axis=1).min()
        refine = 2 if atoms_per_cube > _REFINE_THRESHOLD else 1
        n_cells = np.maximum(np.floor(length * refine / search), 1).astype(np.int64)
        limit = _MAX_CELLS_PER_ATOM * n_atoms + 64
        for b in np.nonzero(n_cells.prod(axis=1) > limit)[0]:
            while n_cells[b].prod() > limit:
                n_cells[b] = np.maximum(n_cells[b] // 2, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        reach = np.ceil(search * n_cells / length)
        cells_per_frac = np.where(extent > 0, n_cells / extent, 0.0)
    # Open directions need no cells beyond the occupied ones.
    reach = np.where(periodic, reach, np.minimum(np.nan_to_num(reach, posinf=0.0), n_cells - 1))
    counts = n_cells.prod(axis=1)
    cell_base = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return origin, cells_per_frac, n_cells, reach.astype(np.int64), cell_base, int(counts.sum())


def _warp(t: torch.Tensor, dtype) -> Any:
    return wp.from_torch(t, dtype=dtype, return_ctype=True)


def neighbor_pairs(
    positions: torch.Tensor,
    box: torch.Tensor,
    pbc: list[bool],
    cutoff: float,
    half: bool,
    capacity: int,
    brute: bool,
    pad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed-capacity neighbor pairs of ``positions [B, N, 3]`` (nm) in boxes ``box [B, 3, 3]``.

    ``box`` rows are reduced box vectors; along directions where ``pbc`` is False they only
    define the fractional frame (use the identity for open systems). Returns
    ``(i [capacity], j [capacity], shifts [capacity, 3], count [])``: int64 atom indices into
    the flattened ``[B*N]`` atoms, integer cell shifts with ``r_ij = x[j] - x[i] + shifts @ box``,
    and the number of pairs found (may exceed ``capacity``). Slots past the found pairs hold
    -1 (indices) and 0 (shifts) if ``pad``, else are left uninitialised for callers that cut them off.
    """
    device = positions.device
    batch, n_atoms = positions.shape[:2]
    n_total = batch * n_atoms
    vec, mat, scalar, (assign_cells, sort_by_cell, find_pairs) = _WARP_TYPES[positions.dtype]
    box64 = box.detach().to(torch.float64).cpu().numpy()
    inv = np.linalg.inv(box64)
    grid_host = _cell_grid(positions, box64, inv, pbc, cutoff, brute)
    origin, cells_per_frac, n_cells, reach, cell_base, total_cells = grid_host
    frame = torch.as_tensor(np.stack([box64, inv]).transpose(0, 1, 3, 2).copy(), dtype=positions.dtype, device=device)
    grid = torch.as_tensor(np.stack([origin, cells_per_frac]), dtype=positions.dtype, device=device)
    cells = torch.as_tensor(np.stack([n_cells, reach]).astype(np.int32), device=device)
    int_args = dict(dtype=torch.int32, device=device)
    per_atom = torch.empty((2, n_total, 3), dtype=positions.dtype, device=device)  # wrapped, sorted positions
    per_atom_wraps = torch.empty((2, n_total, 3), **int_args)  # wraps, sorted wraps
    per_atom_index = torch.empty((4, n_total), **int_args)  # cell, rank, sorted atom, sorted cell
    cell_count = torch.zeros(total_cells, **int_args)
    counter = torch.zeros(1, dtype=torch.int64, device=device)
    out_i = torch.empty(capacity, dtype=torch.int64, device=device)
    out_j = torch.empty(capacity, dtype=torch.int64, device=device)
    out_shift = torch.empty((capacity, 3), dtype=torch.int64, device=device)

    box_t, inv_box_t = _warp(frame[0], mat), _warp(frame[1], mat)
    n_cells_w, reach_w = _warp(cells[0], wp.vec3i), _warp(cells[1], wp.vec3i)
    cell_base_w = _warp(torch.as_tensor(cell_base.astype(np.int32), device=device), wp.int32)
    wrapped, sorted_pos = _warp(per_atom[0], vec), _warp(per_atom[1], vec)
    wraps, sorted_wraps = _warp(per_atom_wraps[0], wp.vec3i), _warp(per_atom_wraps[1], wp.vec3i)
    cell_of, rank, sorted_atom, sorted_cell = (_warp(t, wp.int32) for t in per_atom_index)
    cell_count_w = _warp(cell_count, wp.int32)
    outputs = [_warp(counter, wp.int64), _warp(out_i, wp.int64), _warp(out_j, wp.int64), _warp(out_shift, wp.int64)]
    pbc_vec = wp.vec3i(*(int(p) for p in pbc))
    wp_device = wp.device_from_torch(device)

    flat = positions.detach().reshape(n_total, 3).contiguous()
    wp.launch(assign_cells, dim=n_total, device=wp_device, inputs=[
        _warp(flat, vec), inv_box_t, box_t, _warp(grid[0], vec), _warp(grid[1], vec), n_cells_w, cell_base_w,
        pbc_vec, n_atoms, wrapped, wraps, cell_of, rank, cell_count_w,
    ])
    cell_start = torch.cumsum(cell_count, 0, dtype=torch.int32) - cell_count
    cell_start_w = _warp(cell_start, wp.int32)
    wp.launch(sort_by_cell, dim=n_total, device=wp_device, inputs=[
        wrapped, wraps, cell_of, rank, cell_start_w, sorted_pos, sorted_wraps, sorted_atom, sorted_cell,
    ])
    wp.launch(find_pairs, dim=n_total, device=wp_device, inputs=[
        sorted_pos, sorted_wraps, sorted_atom, sorted_cell, cell_start_w, cell_count_w, box_t, n_cells_w, reach_w,
        cell_base_w, pbc_vec, n_atoms, scalar(cutoff * cutoff), int(not half), capacity, *outputs,
    ])
    if pad and device.type == "cpu":  # the count is on the host: fill only the tail
        found = int(counter)
        out_i[found:] = -1
        out_j[found:] = -1
        out_shift[found:] = 0
    elif pad and capacity > 0:
        wp.launch(_pad_tail, dim=capacity, inputs=outputs, device=wp_device)
    return out_i, out_j, out_shift, counter[0].clone()


#: ``neighbor_pairs`` as the custom op ``molfree::neighbor_pairs`` (traceable by ``torch.compile``);
#: eager callers may call ``neighbor_pairs`` directly and skip the dispatcher.
neighbor_pairs_op = torch.library.custom_op("molfree::neighbor_pairs", neighbor_pairs, mutates_args=())


@neighbor_pairs_op.register_fake
def _(positions, box, pbc, cutoff, half, capacity, brute, pad=True):
    index = positions.new_empty(capacity, dtype=torch.int64)
    return index, torch.empty_like(index), positions.new_empty((capacity, 3), dtype=torch.int64), \
        positions.new_empty((), dtype=torch.int64)


def expected_pairs(positions: torch.Tensor, box: torch.Tensor, pbc: list[bool], cutoff: float, half: bool) -> int:
    """Generous estimate of the number of pairs, used to size exact-size outputs before counting."""
    batch, n_atoms = positions.shape[:2]
    if all(pbc):
        volume = float(np.abs(np.linalg.det(box.detach().to(torch.float64).cpu().numpy())).min())
    else:
        extent = positions.detach().amax(dim=1) - positions.detach().amin(dim=1)
        volume = float(extent.clamp_min(cutoff).prod(dim=1).min())
    per_atom = n_atoms * 4.0 / 3.0 * math.pi * cutoff**3 / volume
    return int(batch * n_atoms * per_atom * (0.5 if half else 1.0) * 1.2) + 64
