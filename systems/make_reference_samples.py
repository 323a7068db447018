"""Regenerate the reference samples ``systems/dw4-reference.npz`` and ``systems/lj13-reference.npz``.

Long annealed parallel chains with fixed seeds (``python systems/make_reference_samples.py [dw4] [lj13]``;
LJ-13 takes 11 min on one core). Each file holds ``positions`` ``[S, N, dim]`` (float32, nm, centred,
the kept states of all chains interleaved per kept step), ``reduced_energies`` ``[S]`` (E/kT), the
chains' mean ``acceptance`` and the run's settings; all targets are at
``molfree.units.REDUCED_TEMPERATURE`` (kT = 1 kJ/mol).

Conventions (see :mod:`molfree.energies.analytic`):
    * dw4: ``DoubleWellEnergy.dw4()``, Σ over the 6 unordered pairs of −4 s² + 0.9 s⁴, s = d − 4.
      Random-walk Metropolis. Mean reduced energy of the reference: −22.49 (s.e. ≈ 0.03).
    * lj13: ``LennardJonesClusterEnergy.lj13()``, the diffusion-sampler papers' convention: ordered
      pairs (2× the physical / bgflow pair sum) plus 0.5 Σ‖xᵢ − x̄‖²; a liquid-like droplet at
      kT = ε/2 in the doubled convention. Hamiltonian Monte Carlo from lattice starts melted at 4 kT.
      Mean reduced energy −42.73 (s.e. over chains ≈ 0.1). An earlier reference made with
      random-walk Metropolis (all 13 particles moved at once, 12,000 steps) had not equilibrated:
      its mean energy fell from −31.6 to −40.5 over the kept states and it averaged −37.2.
Both references pass the equilibrium checks in tests/test_samplers.py: the documented mean, no drift
between the first and the second half of the kept states, and the virial identity
⟨(x − x̄)·∇E/kT⟩ = (N − 1)·dim.
"""
from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from molfree import Energy, units
from molfree.energies.analytic import DoubleWellEnergy, LennardJonesClusterEnergy
from molfree.io import atomic_write_bytes
from molfree.samplers.mcmc import hamiltonian_monte_carlo, lattice_start, metropolis

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Run:
    """One reference run. ``method``: "metropolis" (random walk from N(0, ``init_scale``²) starts, nm) or
    "hmc" (from :func:`lattice_start` with spacing ``init_scale``, ``n_leapfrog`` steps per trajectory);
    ``steps`` include ``burn_in``; ``keep`` states are kept per chain; the temperature anneals from
    ``anneal`` × kT during burn-in; ``step_size`` (nm) is the initial proposal or leapfrog step."""

    energy: Callable[[], Energy]
    method: str
    init_scale: float
    chains: int
    steps: int
    burn_in: int
    keep: int
    anneal: float
    seed: int
    step_size: float
    n_leapfrog: int = 0


RUNS = {
    "dw4": Run(DoubleWellEnergy.dw4, "metropolis", 2.0, 512, 12_000, 6_000, 10, 5.0, 1, 0.1),
    "lj13": Run(LennardJonesClusterEnergy.lj13, "hmc", 1.1, 512, 3_000, 1_000, 8, 4.0, 2, 0.01, 20),
}


def generate(name: str) -> dict[str, np.ndarray]:
    """Run the annealed chains of ``RUNS[name]`` and return the arrays stored in the file."""
    run = RUNS[name]
    energy = run.energy()
    generator = torch.Generator().manual_seed(run.seed)
    temperature = units.REDUCED_TEMPERATURE
    common = {"burn_in": run.burn_in, "step_size": run.step_size, "thin": (run.steps - run.burn_in) // run.keep,
              "anneal_from": run.anneal * temperature, "com_free": True, "generator": generator}
    if run.method == "hmc":
        x0 = lattice_start(run.chains, energy.n_atoms, energy.dim, run.init_scale, generator)
        res = hamiltonian_monte_carlo(energy, x0, temperature, run.steps, n_leapfrog=run.n_leapfrog, **common)
    else:
        x0 = run.init_scale * torch.randn((run.chains, energy.n_atoms, energy.dim), generator=generator,
                                          dtype=torch.float64)
        res = metropolis(energy, x0, temperature, run.steps, **common)
    positions = res.samples - res.samples.mean(1, keepdim=True)
    return {"positions": positions.float().numpy(), "reduced_energies": res.reduced_energies.float().numpy(),
            "temperature": np.array(temperature), "acceptance": np.array(res.acceptance), "method": np.array(run.method),
            "settings": np.array([run.chains, run.steps, run.burn_in, run.keep, run.seed, run.n_leapfrog]),
            "anneal_from_factor": np.array(run.anneal)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=sorted(RUNS), help="targets to regenerate (default: all)")
    names = parser.parse_args().names or list(RUNS)
    torch.set_num_threads(1)  # small tensors: threads only contend
    for name in names:
        arrays = generate(name)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        path = atomic_write_bytes(HERE / f"{name}-reference.npz", buffer.getvalue())
        e = arrays["reduced_energies"]
        print(f"{path.name}: {len(e)} samples, mean E/kT {e.mean():.3f} ± {e.std() / np.sqrt(len(e)):.3f} "
              f"(naive s.e.), acceptance {float(arrays['acceptance']):.2f}, {path.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
