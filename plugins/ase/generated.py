"""Generated configurations as ASE ``Atoms`` carrying their importance weights."""
from __future__ import annotations

import numpy as np


def generated_atoms(generator, n: int, template) -> list:
    """Draw ``n`` configurations from ``generator`` as copies of ``template`` (an ``ase.Atoms``).

    Each ``Atoms`` has positions in Å and ``atoms.info["log_weight"]`` (the unnormalised log
    importance weight against the generator's target, −inf for rejected samples) and
    ``atoms.info["weight"]`` (self-normalised over the ``n`` samples).

    Args:
        generator: e.g. :class:`molfree.flows.BoltzmannGenerator`; ``sample(n)`` → (x ``[n, N, 3]`` nm, log w ``[n]``).
        n: number of configurations.
        template: ``ase.Atoms`` with the generator's atoms in the same order.
    """
    from molfree import units

    positions, log_w = generator.sample(n)
    positions = positions.detach().double().cpu().numpy()
    log_w = log_w.detach().double().cpu().numpy()
    if positions.shape[1] != len(template):
        raise ValueError(f"generator makes {positions.shape[1]} atoms, the template has {len(template)}")
    finite = np.isfinite(log_w)
    weights = np.zeros_like(log_w)
    if finite.any():
        weights[finite] = np.exp(log_w[finite] - log_w[finite].max())
        weights /= weights.sum()
    frames = []
    for x, lw, w in zip(positions, log_w, weights):
        atoms = template.copy()
        atoms.calc = None
        atoms.positions = x * units.NM_TO_ANGSTROM
        atoms.info["log_weight"] = float(lw)
        atoms.info["weight"] = float(w)
        frames.append(atoms)
    return frames
