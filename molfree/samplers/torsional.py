"""Torsional adjoint sampling: Boltzmann densities on the torus of a molecule's rotatable-bond torsions.

Coordinates are torsion offsets θ ``[B, T, 1]`` (radians) from a seed geometry; Cartesian positions
are rebuilt by rigid rotations about the rotatable bonds (:class:`RotatableTorsions`), so bond
lengths, bond angles, ring geometry and stereochemistry of the seed are kept exactly. The target
is exp(−E(x(θ))/kT) on the torus [−π, π)^T (rigid-rotor model: no Jacobian of the Cartesian
density is applied).

The memoryless SDE of :mod:`molfree.samplers.sde` runs unwrapped on R^T. Its terminal reference
marginal N(0, ν(1) I), wrapped onto the torus, is the wrapped normal p_w (:class:`WrappedSDE`);
with the terminal cost g = E/kT + ln p_w(θ), the optimal terminal density on R^T is
p_ref · exp(−E)/p_w, which wraps exactly onto exp(−E(θ))/Z on the torus, and the importance
weights ln w = −E/kT − ln p_w + ln dP_ref/dQ have E[w] = Z (the torus partition function).
g is periodic, so the optimal drift is periodic in θ: :class:`TorusDrift` sees θ only through
cos kθ and sin kθ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from ..energy import Energy
from .adjoint import AdjointConfig, AdjointSampler, SampleResult
from .networks import TimeFeatures, mlp
from .sde import MemorylessSDE

#: Rotatable bonds (on the heavy-atom graph): single, not in a ring, between two non-terminal heavy atoms,
#: neither end triple-bonded; and bonds to hydroxyl / thiol groups, whose hydrogen sets hydrogen bonds.
ROTATABLE_SMARTS = ("[!$(*#*)&!D1]-&!@[!$(*#*)&!D1]", "[!$(*#*)&!D1]-&!@[OX2H1,SX2H1]")


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """Angles mapped to [−π, π) (radians), same shape."""
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


def dihedrals(positions: torch.Tensor, quads: torch.Tensor) -> torch.Tensor:
    """IUPAC dihedral angles (radians, in (−π, π], RDKit's sign) of atom quadruples ``quads [T, 4]`` in ``positions [B, N, 3]`` → ``[B, T]``."""
    p0, p1, p2, p3 = (positions[:, quads[:, k]] for k in range(4))
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = torch.cross(b0, b1, dim=-1), torch.cross(b1, b2, dim=-1)
    sin = (torch.cross(n1, n2, dim=-1) * b1).sum(-1) / b1.norm(dim=-1)
    return torch.atan2(sin, (n1 * n2).sum(-1))


@dataclass
class RotatableTorsions:
    """The torsion → Cartesian map of a molecule about a seed geometry.

    seed: ``[N, 3]`` positions (nm, float64); quads: ``[T, 4]`` atoms (a, j, k, b) of each torsion,
    the rotation axis is the bond j–k; moving: ``[T, N]`` bool, the atoms on k's side of the bond
    (the smaller side of the molecule).
    """

    seed: torch.Tensor
    quads: torch.Tensor
    moving: torch.Tensor

    @classmethod
    def from_molecule(cls, molecule, conf_id: int = -1) -> RotatableTorsions:
        """Rotatable bonds (:data:`ROTATABLE_SMARTS`) of an RDKit molecule with explicit
        hydrogens; the seed is its conformer ``conf_id`` (Å in RDKit, converted to nm)."""
        from rdkit import Chem

        from .. import units

        heavy = Chem.RemoveHs(molecule, sanitize=False)  # RDKit keeps heavy atoms first: indices agree
        if any(a.GetAtomicNum() == 1 for a in molecule.GetAtoms() if a.GetIdx() < heavy.GetNumAtoms()):
            raise ValueError("hydrogens must come after the heavy atoms (use Chem.AddHs on a heavy-atom molecule)")
        heavy.UpdatePropertyCache(strict=False)
        Chem.FastFindRings(heavy)
        bonds = [bond for smarts in ROTATABLE_SMARTS for bond in heavy.GetSubstructMatches(Chem.MolFromSmarts(smarts))]
        n = molecule.GetNumAtoms()
        adjacency = [[nb.GetIdx() for nb in atom.GetNeighbors()] for atom in molecule.GetAtoms()]
        quads, moving = [], []
        for j, k in bonds:
            side = _side(adjacency, k, j)
            if len(side) > n / 2:
                j, k = k, j
                side = set(range(n)) - side
            a = min(nb for nb in adjacency[j] if nb != k)  # heavy atoms first, then hydrogens
            b = min(nb for nb in adjacency[k] if nb != j)
            quads.append((a, j, k, b))
            mask = np.zeros(n, dtype=bool)
            mask[sorted(side)] = True
            moving.append(mask)
        seed = torch.tensor(molecule.GetConformer(conf_id).GetPositions() * units.ANGSTROM_TO_NM, dtype=torch.float64)
        return cls(seed, torch.tensor(quads, dtype=torch.long).reshape(-1, 4),
                   torch.tensor(np.array(moving), dtype=torch.bool).reshape(-1, n))

    @property
    def n_torsions(self) -> int:
        return self.quads.shape[0]

    def with_seed(self, seed: torch.Tensor) -> RotatableTorsions:
        """The same rotatable bonds about another conformer ``seed [N, 3]`` (nm) of the molecule."""
        if seed.shape != self.seed.shape:
            raise ValueError(f"seed must be {tuple(self.seed.shape)}, got {tuple(seed.shape)}")
        return replace(self, seed=seed.to(self.seed))

    def offsets_from(self, other: RotatableTorsions, theta: torch.Tensor) -> torch.Tensor:
        """Offsets ``[B, T]`` (rad) about this seed whose torsions equal those of ``other.positions(theta)``.

        Both must share the rotatable bonds (e.g. ``other.with_seed(...)``); the rest of the geometry
        (bond angles, ring puckers) stays this seed's.
        """
        if not torch.equal(self.quads, other.quads):
            raise ValueError("the two torsion sets have different rotatable bonds")
        shift = dihedrals(other.seed[None], other.quads) - dihedrals(self.seed[None], self.quads)
        return wrap_angle(theta + shift.to(theta))

    def positions(self, theta: torch.Tensor) -> torch.Tensor:
        """Cartesian positions ``[B, N, 3]`` (nm, dtype of ``theta``) for torsion offsets ``theta [B, T]`` (rad).

        Rotates the moving side of each bond in turn by Rodrigues' formula about the bond's current axis;
        the torsion (a, j, k, b) then equals its seed value + θ, and all other internal coordinates of
        the seed are unchanged. Differentiable.
        """
        x = self.seed.to(theta)[None].expand(theta.shape[0], -1, -1)
        for t in range(self.n_torsions):
            _, j, k, _ = self.quads[t].tolist()
            origin = x[:, j:j + 1]
            axis = x[:, k:k + 1] - origin
            u = axis / axis.norm(dim=-1, keepdim=True)
            r = x - origin
            cos, sin = theta[:, t, None, None].cos(), theta[:, t, None, None].sin()
            rotated = origin + r * cos + torch.cross(u.expand_as(r), r, dim=-1) * sin + u * (u * r).sum(-1, keepdim=True) * (1 - cos)
            x = torch.where(self.moving[t][None, :, None], rotated, x)
        return x


def _side(adjacency: list[list[int]], start: int, blocked: int) -> set[int]:
    """Atoms reachable from ``start`` without passing through ``blocked``."""
    seen, stack = {start}, [start]
    while stack:
        for nb in adjacency[stack.pop()]:
            if nb != blocked and nb not in seen:
                seen.add(nb)
                stack.append(nb)
    return seen


def farthest_point_subset(theta: torch.Tensor, reduced_energies: torch.Tensor, n: int) -> torch.Tensor:
    """Indices ``[n]`` of a diverse subset of torsion samples ``theta [P, T]`` (rad).

    Greedy farthest-point selection under the chordal torus distance Σ_t 2(1 − cos Δθ_t), starting from
    the lowest reduced energy ``[P]``; samples with non-finite energy are taken last.
    """
    if not 1 <= n <= theta.shape[0]:
        raise ValueError(f"cannot select {n} of {theta.shape[0]} samples")
    finite = torch.isfinite(reduced_energies) & torch.isfinite(theta).all(-1)
    last_resort = torch.tensor(-1e300, dtype=torch.float64)  # below any distance, above the chosen ones' −inf
    chosen = [int(torch.argmin(torch.where(finite, reduced_energies.double(), math.inf)))]
    distance = torch.full((theta.shape[0],), math.inf, dtype=torch.float64)
    for _ in range(n - 1):
        step = (2 * (1 - torch.cos(theta - theta[chosen[-1]]))).sum(-1).double()
        distance = torch.where(finite, torch.minimum(distance, step), last_resort)
        distance[chosen] = -math.inf
        chosen.append(int(torch.argmax(distance)))
    return torch.tensor(chosen)


class TorsionalEnergy(Energy):
    """A Cartesian :class:`~molfree.Energy` seen through the torsion map: ``[B, T, 1]`` offsets (rad) → ``[B]`` kJ/mol.

    The sampled coordinate is an angle, so the "positions" of this Energy are radians, one
    1-dimensional particle per torsion. Gradients reach θ through the torsion map by autograd.
    """

    dim = 1

    def __init__(self, cartesian: Energy, torsions: RotatableTorsions):
        if torsions.n_torsions == 0:
            raise ValueError("the molecule has no rotatable bonds: there is nothing to sample on the torus")
        super().__init__(n_atoms=torsions.n_torsions)
        self.cartesian = cartesian
        self.torsions = torsions

    def cartesian_positions(self, theta: torch.Tensor) -> torch.Tensor:
        """Positions ``[B, N, 3]`` (nm) for offsets ``[B, T, 1]`` or ``[B, T]`` (rad)."""
        return self.torsions.positions(theta.reshape(theta.shape[0], -1))

    def energy(self, positions: torch.Tensor, box: torch.Tensor | None) -> torch.Tensor:
        return self.cartesian(self.cartesian_positions(positions))


class WrappedSDE(MemorylessSDE):
    """The memoryless SDE on R^d whose terminal reference density is taken wrapped onto the torus.

    ``reference_log_prob`` and ``reference_score`` are those of the wrapped normal
    p_w(θ) = Π_i Σ_m N(θ_i + 2πm; 0, ν(1)), periodic in every coordinate.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.com_free:
            raise ValueError("a torus has no centre of mass: com_free must be False")
        std = math.sqrt(self.terminal_variance())
        self.images = 2 * math.pi * torch.arange(-math.ceil(8 * std / (2 * math.pi)) - 1,
                                                 math.ceil(8 * std / (2 * math.pi)) + 2, dtype=torch.float64)

    def _image_log_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images φ + 2πm ``[..., M]`` of the wrapped ``x`` and their ln N(·; 0, ν(1)) ``[..., M]`` (float64)."""
        var = self.terminal_variance()
        shifted = wrap_angle(x.double())[..., None] + self.images
        return shifted, -0.5 * shifted.pow(2) / var - 0.5 * math.log(2 * math.pi * var)

    def reference_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """ln p_w(x), ``[B, N, dim] -> [B]`` (float64)."""
        _, log_terms = self._image_log_terms(x)
        return torch.logsumexp(log_terms, -1).sum((-1, -2))

    def reference_score(self, x: torch.Tensor) -> torch.Tensor:
        """∇ ln p_w(x), ``[B, N, dim]`` in the dtype of ``x``."""
        shifted, log_terms = self._image_log_terms(x)
        weights = torch.softmax(log_terms, -1)
        return (-(weights * shifted).sum(-1) / self.terminal_variance()).to(x.dtype)


class TorusDrift(nn.Module):
    """Drift ``v(θ [B, T, 1], t [B]) -> [B, T, 1]`` (1/rad), periodic in every θ.

    An MLP on the Fourier features cos kθ, sin kθ (k = 1..``n_harmonics``) of all torsions and on
    sinusoidal time features.
    """

    def __init__(self, n_torsions: int, hidden: int = 128, n_layers: int = 3, n_harmonics: int = 3,
                 n_time_features: int = 16):
        super().__init__()
        self.n_torsions = n_torsions
        self.register_buffer("harmonics", torch.arange(1, n_harmonics + 1, dtype=torch.float32))
        self.time = TimeFeatures(n_time_features)
        self.net = mlp(2 * n_harmonics * n_torsions + n_time_features, hidden, n_torsions, n_layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        angles = x.reshape(x.shape[0], -1, 1) * self.harmonics.to(x.dtype)
        features = torch.cat([angles.cos().flatten(1), angles.sin().flatten(1), self.time(t).to(x.dtype)], -1)
        return self.net(features).reshape(x.shape)


class TorsionalAdjointSampler(AdjointSampler):
    """Adjoint sampler of exp(−E/kT) on the torus of a :class:`TorsionalEnergy`'s torsions.

    Same training loop, replay buffer, budgets and checkpoints as :class:`AdjointSampler`; the SDE is
    :class:`WrappedSDE`. Samples are returned wrapped to [−π, π) (radians), shape ``[n, T, 1]``.
    """

    def __init__(self, energy: TorsionalEnergy, drift_net: nn.Module, temperature: float,
                 config: AdjointConfig | None = None, seed: int = 0):
        super().__init__(energy, drift_net, temperature, config, seed)
        self.sde = WrappedSDE(self.sde.schedule, com_free=self.config.com_free, n_steps=self.config.n_steps)

    def sample(self, n: int, n_steps: int | None = None, batch_size: int = 2000) -> SampleResult:
        result = super().sample(n, n_steps, batch_size)
        result.samples = wrap_angle(result.samples)
        return result

    def refine(self, x: torch.Tensor, n_steps: int, step_size: float, progress: bool = True) -> torch.Tensor:
        """:meth:`AdjointSampler.refine` on the torus (ε in rad²); returns angles wrapped to [−π, π)."""
        return wrap_angle(super().refine(x, n_steps, step_size, progress))
