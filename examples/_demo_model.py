"""Shared by the NNP examples: a small UNTRAINED model, only to show the plumbing when no model file is given."""
from __future__ import annotations

from pathlib import Path

import torch


def demo_model(path: Path) -> Path:
    """Save a small untrained model (H, C, N, O; cutoff 0.4 nm) to ``path``."""
    from molfree.potentials import EquivariantPotential

    print("!" * 78 + "\n!! NO MODEL GIVEN: using an UNTRAINED demo model. Energies are meaningless. !!\n" + "!" * 78)
    torch.manual_seed(0)
    model = EquivariantPotential(["H", "C", "N", "O"], cutoff=0.4, channels=8, l_max=1, n_layers=2)
    model.energy_scale.fill_(0.1)
    return model.save(path, metadata={"note": "untrained demo model"})
