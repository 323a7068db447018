"""Autograd glue shared by every bridge to an external engine returning NumPy energies and forces (OpenMM, ASE)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.autograd.function import once_differentiable

#: ``evaluate(positions [B, N, 3] nm, box [B, 3, 3] nm or None) -> (energies [B] kJ/mol,
#: forces [B, N, 3] kJ/mol/nm)``, all float64 NumPy arrays.
Evaluator = Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray]]


class _EngineFunction(torch.autograd.Function):
    """Energies from an external engine; the backward pass uses the engine's forces."""

    @staticmethod
    def forward(ctx, positions: torch.Tensor, box: torch.Tensor | None, evaluate: Evaluator) -> torch.Tensor:
        x = positions.detach().cpu().to(torch.float64).numpy()
        b = None if box is None else box.detach().cpu().to(torch.float64).numpy()
        energies, forces = evaluate(x, b)
        ctx.save_for_backward(torch.as_tensor(forces).to(device=positions.device, dtype=positions.dtype))
        return torch.as_tensor(energies).to(device=positions.device, dtype=positions.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        (forces,) = ctx.saved_tensors
        return -forces * grad_output[:, None, None], None, None


def engine_energy(evaluate: Evaluator, positions: torch.Tensor, box: torch.Tensor | None) -> torch.Tensor:
    """Differentiable energies ``[B]`` (kJ/mol) of ``positions [B, N, 3]`` (nm) computed by ``evaluate``.

    The gradient with respect to ``positions`` is ``-forces`` from the engine (first order
    only: double backward raises); the box receives no gradient. Output dtype and device
    follow ``positions``.
    """
    return _EngineFunction.apply(positions, box, evaluate)
