"""Bridge to OpenMM: evaluate any ``openmm.System`` as a differentiable :class:`molfree.Energy`."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..energy import Energy
from .engine import engine_energy


class OpenMMEnergy(Energy):
    """Potential energy of an ``openmm.System``, differentiable via OpenMM's forces.

    Args:
        system: the OpenMM System (``n_atoms = system.getNumParticles()``). Constraints
            are ignored (energies are evaluated at the given positions); virtual sites
            are recomputed from their parent atoms.
        platform: OpenMM platform name ("Reference", "CPU", "CUDA", ...).
        platform_properties: optional platform properties, e.g. ``{"Threads": "1"}``.
        n_contexts: number of Contexts in the pool; with more than one, a batch is split
            into contiguous chunks evaluated concurrently by a thread pool.

    ``forward(positions [B, N, 3] nm, box [B, 3, 3] nm)`` returns ``[B]`` kJ/mol. The box
    is required when ``system.usesPeriodicBoundaryConditions()``, otherwise it must be None.

    The Contexts are created lazily on first use and reused; copies and pickles carry the
    System but not the Contexts, which are recreated on first use (e.g. on a Dask worker).

    A configuration for which OpenMM raises an ``OpenMMException`` (e.g. a box smaller
    than twice the cutoff) gets energy ``+inf`` and zero forces instead of aborting the
    batch; NaN or huge energies that OpenMM returns without raising are passed through.
    """

    def __init__(self, system, platform: str = "Reference", platform_properties: dict[str, str] | None = None,
                 n_contexts: int = 1):
        super().__init__(n_atoms=system.getNumParticles())
        if n_contexts < 1:
            raise ValueError(f"n_contexts must be at least 1, got {n_contexts}")
        self.system = system
        self.platform = platform
        self.platform_properties = dict(platform_properties or {})
        self.n_contexts = int(n_contexts)
        self.periodic = system.usesPeriodicBoundaryConditions()
        self._has_virtual_sites = any(system.isVirtualSite(i) for i in range(system.getNumParticles()))
        self._contexts: list | None = None
        self._executor: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_contexts"] = None
        state["_executor"] = None
        return state

    def _pool(self) -> list:
        if self._contexts is None:
            import openmm

            platform = openmm.Platform.getPlatformByName(self.platform)
            self._contexts = [
                openmm.Context(self.system, openmm.VerletIntegrator(0.001), platform, self.platform_properties)
                for _ in range(self.n_contexts)
            ]
            if self.n_contexts > 1:
                self._executor = ThreadPoolExecutor(max_workers=self.n_contexts)
        return self._contexts

    def _evaluate_chunk(self, context, positions: np.ndarray, box: np.ndarray | None,
                        energies: np.ndarray, forces: np.ndarray) -> None:
        import openmm
        from openmm import unit

        for i in range(positions.shape[0]):
            try:
                if box is not None:
                    context.setPeriodicBoxVectors(*box[i])
                context.setPositions(positions[i])
                if self._has_virtual_sites:
                    context.computeVirtualSites()
                state = context.getState(getEnergy=True, getForces=True)
                energies[i] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
                forces[i] = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
            except openmm.OpenMMException:
                energies[i] = np.inf
                forces[i] = 0.0

    def evaluate(self, positions: np.ndarray, box: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Energies ``[B]`` (kJ/mol) and forces ``[B, N, 3]`` (kJ/mol/nm) as float64 NumPy arrays.

        ``positions [B, N, 3]`` and ``box [B, 3, 3]`` (or None) in nm, unvalidated.
        """
        contexts = self._pool()
        energies = np.empty(positions.shape[0])
        forces = np.empty(positions.shape)
        bounds = np.linspace(0, positions.shape[0], len(contexts) + 1).astype(int)
        jobs = [(context, positions[lo:hi], None if box is None else box[lo:hi], energies[lo:hi], forces[lo:hi])
                for context, lo, hi in zip(contexts, bounds[:-1], bounds[1:]) if hi > lo]
        if self._executor is None or len(jobs) == 1:
            for job in jobs:
                self._evaluate_chunk(*job)
        else:
            for future in [self._executor.submit(self._evaluate_chunk, *job) for job in jobs]:
                future.result()
        return energies, forces

    def energy(self, positions: torch.Tensor, box: torch.Tensor | None) -> torch.Tensor:
        if box is not None and not self.periodic:
            raise ValueError("this OpenMM System is not periodic; do not pass a box")
        return engine_energy(self.evaluate, positions, box)
