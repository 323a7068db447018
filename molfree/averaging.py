"""Exponential moving average of a model's weights, shared by the trainers that keep one."""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch


class WeightAverage:
    """EMA of a model's parameters with warm-up (new-weight fraction max(1 − decay, 9 / (10 + n)) after n updates).

    ``module`` is the averaged copy: built by ``build(model)`` (default :func:`copy.deepcopy`), then loaded with
    the model's state dict, with gradients off. Models whose generated submodules do not deep-copy faithfully
    (e3nn's tensor products) pass a ``build`` that constructs a fresh one from their config.
    """

    def __init__(self, model: torch.nn.Module, decay: float,
                 build: Callable[[torch.nn.Module], torch.nn.Module] | None = None):
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.n_averaged = 1  # the initial copy is the first average
        reference = next(model.parameters())
        self.module = (build or copy.deepcopy)(model).to(dtype=reference.dtype, device=reference.device)
        self.module.load_state_dict(model.state_dict())
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the averaged parameters towards ``model``'s."""
        rate = max(1.0 - self.decay, 9.0 / (10.0 + self.n_averaged))
        for averaged, current in zip(self.module.parameters(), model.parameters(), strict=True):
            averaged.lerp_(current, rate)
        self.n_averaged += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "n_averaged": self.n_averaged}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.n_averaged = int(state["n_averaged"])
