"""Regenerate the reference samples ``systems/dw4-reference.npz`` and ``systems/lj13-reference.npz``.

Long annealed random-walk Metropolis with many parallel chains and fixed seeds
(``python systems/make_reference_samples.py``; a few minutes on a CPU). Each file holds
``positions`` ``[S, N, dim]`` (float32, nm, centred), ``reduced_energies`` ``[S]`` (E/kT) and the
run's settings; all targets are at ``molfree.units.REDUCED_TEMPERATURE`` (kT = 1 kJ/mol).

Conventions (see :mod:`molfree.energies.analytic`):
    * dw4: ``DoubleWellEnergy.dw4()``, Σ over the 6 unordered pairs of −4 s² + 0.9 s⁴, s = d − 4.
      Mean reduced energy of the reference: −22.49 (s.e. ≈ 0.03; pinned in tests/test_samplers.py).
    * lj13: ``LennardJonesClusterEnergy.lj13()``, the diffusion-sampler papers' convention: ordered
      pairs (2× the physical / bgflow pair sum) plus 0.5 Σ‖xᵢ − x̄‖². Mean reduced energy −37.23
      (naive s.e. ≈ 0.14; a liquid-like droplet at kT = ε/2 in the doubled convention).
The documented means above are the values this script produced; the test re-evaluates the
energies of the stored positions, so a change of convention is caught.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from molfree import units
from molfree.energies.analytic import DoubleWellEnergy, LennardJonesClusterEnergy
from molfree.io import atomic_write_bytes
from molfree.samplers.mcmc import metropolis

HERE = Path(__file__).resolve().parent

#: name -> (energy factory, init scale nm, chains, steps, burn-in, kept states per chain, start temperature factor, seed)
RUNS = {
    "dw4": (DoubleWellEnergy.dw4, 2.0, 512, 12_000, 6_000, 10, 5.0, 1),
    "lj13": (LennardJonesClusterEnergy.lj13, 1.0, 512, 12_000, 6_000, 8, 4.0, 2),
}


def generate(name: str) -> dict[str, np.ndarray]:
    """Run the annealed chains of ``RUNS[name]`` and return the arrays stored in the file."""
    factory, scale, chains, steps, burn_in, keep, anneal, seed = RUNS[name]
    energy = factory()
    generator = torch.Generator().manual_seed(seed)
    x0 = scale * torch.randn((chains, energy.n_atoms, energy.dim), generator=generator, dtype=torch.float64)
    temperature = units.REDUCED_TEMPERATURE
    res = metropolis(energy, x0, temperature, steps, burn_in=burn_in, step_size=0.1, thin=(steps - burn_in) // keep,
                     anneal_from=anneal * temperature, com_free=True, generator=generator)
    positions = res.samples - res.samples.mean(1, keepdim=True)
    return {"positions": positions.float().numpy(), "reduced_energies": res.reduced_energies.float().numpy(),
            "temperature": np.array(temperature), "acceptance": np.array(res.acceptance),
            "settings": np.array([chains, steps, burn_in, keep, seed]), "anneal_from_factor": np.array(anneal)}


def main() -> None:
    torch.set_num_threads(1)  # small tensors: threads only contend
    for name in RUNS:
        arrays = generate(name)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        path = atomic_write_bytes(HERE / f"{name}-reference.npz", buffer.getvalue())
        e = arrays["reduced_energies"]
        print(f"{path.name}: {len(e)} samples, mean E/kT {e.mean():.3f} ± {e.std() / np.sqrt(len(e)):.3f} "
              f"(naive s.e.), acceptance {float(arrays['acceptance']):.2f}, {path.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
