"""Internal coordinates: a Z-matrix built from the bond graph, Cartesian ↔ (bonds, angles, torsions).

Layout of the internal-coordinate vector ``[B, 3N − 6]``: ``N − 1`` bond lengths (nm), then
``N − 2`` bond angles (rad, in (0, π)), then ``N − 3`` torsions (rad, [-π, π)). The first two
bonds and the first angle belong to the three anchor atoms, which also fix the rigid-body
frame (6 DoF): generated configurations are in the canonical frame (anchor 0 at the origin,
anchor 1 on +x, anchor 2 in the xy plane, y > 0); :meth:`InternalCoordinates.frame` and
:meth:`InternalCoordinates.place` move between that frame and any other.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import torch

from .transforms import Transform


def _graph(topology) -> tuple[int, list[tuple[int, int]], list[bool]]:
    """Atom count, bonds and hydrogen flags of an OpenMM or mdtraj topology."""
    if callable(getattr(topology, "atoms", None)):  # openmm.app.Topology
        atoms = list(topology.atoms())
        bonds = [(b[0].index, b[1].index) for b in topology.bonds()]
    else:  # mdtraj.Topology
        atoms = list(topology.atoms)
        bonds = [(a.index, b.index) for a, b in topology.bonds]
    hydrogen = [a.element is not None and a.element.symbol == "H" for a in atoms]
    return len(atoms), bonds, hydrogen


def _neighbours(n: int, bonds, hydrogen) -> list[list[int]]:
    """Bonded neighbours of every atom, heavy atoms first, then by index."""
    nbrs: list[set[int]] = [set() for _ in range(n)]
    for i, j in bonds:
        if i != j:
            nbrs[i].add(j)
            nbrs[j].add(i)
    return [sorted(s, key=lambda a: (hydrogen[a], a)) for s in nbrs]


def _distances_from(root: int, nbrs) -> list[int]:
    """Graph distances from ``root`` (−1: unreachable)."""
    dist = [-1] * len(nbrs)
    dist[root] = 0
    queue = deque([root])
    while queue:
        a = queue.popleft()
        for b in nbrs[a]:
            if dist[b] < 0:
                dist[b] = dist[a] + 1
                queue.append(b)
    return dist


def build_zmatrix(topology) -> tuple[tuple[int, int, int], np.ndarray]:
    """Z-matrix of a single bonded molecule.

    The root is the most central atom with at least two bonds (minimum graph eccentricity,
    heavy atoms preferred); atoms are placed in breadth-first order. Every non-anchor atom i
    gets its bonded parent j, j's parent k (angle i-j-k) and a torsion reference l: for a
    hydrogen, an already placed sibling on j (a nearly rigid improper-like torsion); otherwise
    an atom bonded to k (a proper torsion, so backbone φ/ψ appear as coordinates).

    Returns:
        ``(anchors, rows)``: the anchor atoms (root, first and second neighbour of the root)
        and ``rows [N − 3, 4]`` of ``(i, j, k, l)`` in placement order (torsion i-j-k-l).

    Raises:
        ValueError: fewer than 3 atoms, or a bond graph that is not one connected molecule.
    """
    n, bonds, hydrogen = _graph(topology)
    if n < 3:
        raise ValueError(f"internal coordinates need at least 3 atoms, the topology has {n}")
    nbrs = _neighbours(n, bonds, hydrogen)
    dist0 = _distances_from(0, nbrs)
    if min(dist0) < 0:
        unreachable = dist0.count(-1)
        raise ValueError(f"the topology's bond graph is not connected ({unreachable} of {n} atoms are not bonded "
                         "to atom 0); internal coordinates need one bonded molecule (remove ions/waters, or "
                         "check that the topology has bonds)")
    candidates = [a for a in range(n) if len(nbrs[a]) >= 2]
    root = min(candidates, key=lambda a: (max(_distances_from(a, nbrs)), hydrogen[a], -len(nbrs[a]), a))
    r1, r2 = nbrs[root][0], nbrs[root][1]
    parent = {root: -1, r1: root, r2: root}
    placed = [root, r1, r2]
    queue = deque([root, r1, r2])
    rows = []
    while queue:
        j = queue.popleft()
        for i in nbrs[j]:
            if i in parent:
                continue
            parent[i] = j
            k = r1 if j == root else parent[j]
            done = set(placed)
            siblings = [a for a in nbrs[j] if a in done and a not in (k, i)]
            proper = [a for a in nbrs[k] if a in done and a not in (j, i)]
            t = siblings[0] if hydrogen[i] and siblings else (proper or siblings)[0]
            rows.append((i, j, k, t))
            placed.append(i)
            queue.append(i)
    return (root, r1, r2), np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def bond_angle(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Angle a-b-c (rad) of points ``[..., 3]``."""
    u, v = a - b, c - b
    return torch.atan2(torch.cross(u, v, dim=-1).norm(dim=-1), (u * v).sum(-1))


def dihedral(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """IUPAC dihedral a-b-c-d (rad, [-π, π]) of points ``[..., 3]``, the convention of mdtraj's φ/ψ."""
    b1, b2, b3 = b - a, c - b, d - c
    n1, n2 = torch.cross(b1, b2, dim=-1), torch.cross(b2, b3, dim=-1)
    y = b2.norm(dim=-1) * (b1 * n2).sum(-1)
    return torch.atan2(y, (n1 * n2).sum(-1))


def _place(j: torch.Tensor, k: torch.Tensor, t: torch.Tensor, bond, angle, torsion) -> torch.Tensor:
    """Position of atom i with |i−j| = bond, angle i-j-k and dihedral i-j-k-t (NeRF), ``[B, 3]``."""
    e = _normalize(j - k)
    n = _normalize(torch.cross(k - t, e, dim=-1))
    m = torch.cross(n, e, dim=-1)
    local = torch.stack([-torch.cos(angle), torch.sin(angle) * torch.cos(torsion),
                         torch.sin(angle) * torch.sin(torsion)], -1)
    return j + bond[:, None] * (local[:, :1] * e + local[:, 1:2] * m + local[:, 2:3] * n)


class InternalCoordinates(Transform):
    """Bijection internal coordinates ``[B, 3N − 6]`` → canonical-frame Cartesian positions ``[B, N, 3]`` (nm).

    ``log_det`` of ``forward`` is ``Σ (2 ln r + ln sin θ)`` over the placed atoms plus
    ``2 ln d₁ + 2 ln d₂ + ln sin θ₂`` for the anchors: the Jacobian of ``R^{3N}`` onto
    (internal coordinates × rigid motions) with the rigid-motion (Haar × translation) measure
    factored out. So ``exp(−u(x))`` on Cartesian space has the internal-coordinate marginal
    ``exp(−u) · exp(log_det)`` up to the constant 8π²V, and importance weights are exact.

    Args:
        topology: OpenMM or mdtraj topology of one bonded molecule (see :func:`build_zmatrix`).
    """

    def __init__(self, topology):
        super().__init__()
        anchors, rows = build_zmatrix(topology)
        self.n_atoms = len(rows) + 3
        self.dim = 3 * self.n_atoms - 6
        self.register_buffer("anchors", torch.as_tensor(anchors, dtype=torch.long))
        self.register_buffer("rows", torch.as_tensor(rows, dtype=torch.long))

    @property
    def circular(self) -> torch.Tensor:
        """``[3N − 6]`` bool mask, True for the torsions (the last ``N − 3`` coordinates)."""
        mask = torch.zeros(self.dim, dtype=torch.bool)
        mask[2 * self.n_atoms - 3:] = True
        return mask

    def split(self, ic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(bonds [B, N−1], angles [B, N−2], torsions [B, N−3])`` of ``ic [B, 3N−6]``."""
        n = self.n_atoms
        return ic[:, :n - 1], ic[:, n - 1:2 * n - 3], ic[:, 2 * n - 3:]

    def _log_det(self, bonds: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        return 2 * torch.log(bonds).sum(-1) + torch.log(torch.sin(angles)).sum(-1)

    def forward(self, ic):
        bonds, angles, torsions = self.split(ic)
        batch = ic.shape[0]
        zero = ic.new_zeros(batch)
        x: list[torch.Tensor | None] = [None] * self.n_atoms
        a0, a1, a2 = self.anchors.tolist()
        x[a0] = ic.new_zeros(batch, 3)
        x[a1] = torch.stack([bonds[:, 0], zero, zero], -1)
        x[a2] = torch.stack([bonds[:, 1] * torch.cos(angles[:, 0]), bonds[:, 1] * torch.sin(angles[:, 0]), zero], -1)
        for m, (i, j, k, t) in enumerate(self.rows.tolist()):
            x[i] = _place(x[j], x[k], x[t], bonds[:, m + 2], angles[:, m + 1], torsions[:, m])
        return torch.stack(x, 1), self._log_det(bonds, angles)

    def inverse(self, y):
        a0, a1, a2 = self.anchors.tolist()
        i, j, k, t = self.rows.T
        bonds = torch.cat([(y[:, [a1, a2]] - y[:, [a0]]).norm(dim=-1), (y[:, i] - y[:, j]).norm(dim=-1)], -1)
        angles = torch.cat([bond_angle(y[:, a2], y[:, a0], y[:, a1])[:, None],
                            bond_angle(y[:, i], y[:, j], y[:, k])], -1)
        torsions = dihedral(y[:, i], y[:, j], y[:, k], y[:, t])
        return torch.cat([bonds, angles, torsions], -1), -self._log_det(bonds, angles)

    def frame(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rigid-body frame of ``x [B, N, 3]``: ``(origin [B, 3], rotation [B, 3, 3])`` with
        ``x = canonical @ rotation.T + origin`` (``canonical`` as produced by ``forward``)."""
        a0, a1, a2 = self.anchors.tolist()
        e1 = _normalize(x[:, a1] - x[:, a0])
        v = x[:, a2] - x[:, a0]
        e2 = _normalize(v - (v * e1).sum(-1, keepdim=True) * e1)
        return x[:, a0], torch.stack([e1, e2, torch.cross(e1, e2, dim=-1)], -1)

    @staticmethod
    def place(canonical: torch.Tensor, origin: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
        """Positions ``[B, N, 3]`` of canonical-frame ``canonical`` moved into the frame ``(origin, rotation)``."""
        return canonical @ rotation.transpose(-1, -2) + origin[:, None]


class Chirality:
    """Stereocentre check: a configuration passes if every stereocentre has the reference handedness.

    Stereocentres are atoms with four bonded neighbours of which at most one is a hydrogen
    (e.g. Cα; methyl and methylene carbons are skipped); handedness is the sign of the triple
    product of the first three neighbour bond vectors.

    Args:
        topology: OpenMM or mdtraj topology.
        reference: ``[N, 3]`` positions (nm) with the correct chirality.
    """

    def __init__(self, topology, reference):
        n, bonds, hydrogen = _graph(topology)
        nbrs = _neighbours(n, bonds, hydrogen)
        self.centres = [(a, nb[:3]) for a, nb in enumerate(nbrs) if len(nb) == 4 and sum(hydrogen[b] for b in nb) <= 1]
        self.signs = self._signs(torch.as_tensor(np.asarray(reference, dtype=np.float64))[None])[0]

    def _signs(self, x: torch.Tensor) -> torch.Tensor:
        if not self.centres:
            return x.new_zeros(x.shape[0], 0)
        c = torch.tensor([a for a, _ in self.centres])
        nb = torch.tensor([b for _, b in self.centres])
        v = x[:, nb] - x[:, c, None]
        return torch.sign(torch.linalg.det(v))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[B]`` bool: True where every stereocentre of ``x [B, N, 3]`` matches the reference."""
        return (self._signs(x.detach()) == self.signs.to(x)).all(-1)
