"""Training a :class:`BoltzmannGenerator`: maximum likelihood on data, reverse KL on the energy, or mixtures.

Losses (per sample, in kT/nats):
    ML:  −log q(x),  x from the data (drawn with probability ∝ ``data_weights`` if given).
    KL:  u_reg(x) + log q(x),  x ~ q (reparametrised); u_reg is the reduced energy (plus the optional
         ``kl_bias``), continued logarithmically above ``energy_cap`` so high-energy samples give
         bounded gradients; samples with non-finite energy are dropped from the batch.

With ``validation_fraction`` > 0 a fixed-seed share of the data is held out; pure-ML stages track
−log q on it and end with the parameters of their best validation loss (early stopping: small MD
data sets are overfitted within a few hundred steps).

A run directory holds ``checkpoint.pt`` (written atomically, resumed automatically, loadable with
``weights_only=True``), ``training.json`` (history) and ``learning_curves.png``.
"""
from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..io import atomic_write_bytes, write_json
from .generator import BoltzmannGenerator
from .metrics import fraction_finite, kish_ess

CHECKPOINT = "checkpoint.pt"


@dataclass
class Stage:
    """One phase of training: ``steps`` optimiser steps of ``ml_weight · ML + kl_weight · KL`` at rate ``lr``
    (with ``cosine``: decaying from ``lr`` to 0 along a half cosine over the stage)."""

    name: str
    steps: int
    ml_weight: float = 1.0
    kl_weight: float = 0.0
    lr: float = 1e-3
    cosine: bool = False

    def rate(self, step: int) -> float:
        """Learning rate of the stage's ``step`` (0-based)."""
        return self.lr * (0.5 * (1 + math.cos(math.pi * step / self.steps)) if self.cosine else 1.0)


def regularized_energy(u: torch.Tensor, cap: float) -> torch.Tensor:
    """``u`` below ``cap`` and ``cap + ln(1 + u − cap)`` above it (kT; continuous with slope 1 at ``cap``)."""
    excess = (u - cap).clamp_min(0)
    return torch.where(u > cap, cap + torch.log1p(excess), u)


def load_checkpoint(generator: BoltzmannGenerator, path: str | Path, system_id: str) -> dict:
    """Load ``generator``'s parameters from a checkpoint file and return the checkpoint.

    Raises ``ValueError`` if the checkpoint belongs to another system or does not fit the model.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("system") != system_id:
        raise ValueError(f"checkpoint {path} was trained for system {checkpoint.get('system')!r}, "
                         f"not {system_id!r}")
    try:
        generator.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {path} does not fit this model: {exc}") from exc
    generator.energy.count = checkpoint.get("energy_evaluations", 0)
    return checkpoint


class Trainer:
    """Trains ``generator`` through a list of :class:`Stage` s, checkpointing into ``run_dir``.

    Args:
        generator: the model.
        run_dir: directory for checkpoint, history JSON and learning-curve PNG; an existing
            checkpoint there is resumed (``ValueError`` if it is from another system).
        system_id: name of the target system, stored in and checked against checkpoints.
        data: ``[M, N, dim]`` training configurations (nm) for ML stages.
        data_weights: optional ``[M]`` non-negative weights of ``data`` (e.g. reweighting frames of several
            temperatures): ML minibatches are drawn with probability ∝ weight, validation losses are weighted.
        validation_fraction: share of ``data`` held out (fixed seed) for early stopping of ML stages.
        batch_size: ML minibatch size; kl_batch_size: samples (energy evaluations) per KL step.
        energy_cap: reduced energy (kT) above which the KL loss grows logarithmically.
        kl_bias: optional ``x [B, N, dim] -> [B]`` reduced-energy offset (kT, not differentiated) added to the
            energy in the KL loss: the KL stages then target p(x)·exp(−bias(x)) (e.g. the same biased
            distribution as weighted ML data), while importance weights still use the true energy.
        grad_clip: maximal gradient norm.
        checkpoint_every, log_every: steps between checkpoints / history entries.
        progress: show a tqdm progress bar.
    """

    def __init__(self, generator: BoltzmannGenerator, run_dir: str | Path, system_id: str,
                 data: torch.Tensor | None = None, batch_size: int = 256, kl_batch_size: int = 128,
                 energy_cap: float = 1e3, grad_clip: float = 100.0, checkpoint_every: int = 100,
                 log_every: int = 10, progress: bool = True, validation_fraction: float = 0.0,
                 data_weights: torch.Tensor | None = None,
                 kl_bias: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must lie in [0, 1), got {validation_fraction}")
        if data_weights is not None and (data is None or data_weights.shape != data.shape[:1]
                                         or not bool((data_weights >= 0).all()) or not data_weights.sum() > 0):
            raise ValueError("data_weights must be one non-negative weight per data frame, not all zero")
        self.generator = generator
        self.run_dir = Path(run_dir)
        self.system_id = system_id
        self.data, self.validation = data, None
        self.weights = self.validation_weights = None if data is None else (
            torch.ones(len(data)) if data_weights is None else torch.as_tensor(data_weights, dtype=torch.float64))
        n_validation = 0 if data is None else int(len(data) * validation_fraction)
        if n_validation:
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
            held_out, kept = order[:n_validation], order[n_validation:]
            self.validation, self.data = data[held_out], data[kept]
            self.validation_weights, self.weights = self.weights[held_out], self.weights[kept]
        self.best: dict | None = None  # {"loss": float, "model": state_dict} of the current ML stage
        self.batch_size, self.kl_batch_size = batch_size, kl_batch_size
        self.energy_cap, self.grad_clip = energy_cap, grad_clip
        self.kl_bias = kl_bias
        self.checkpoint_every, self.log_every = checkpoint_every, log_every
        self.progress = progress
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=1e-3)
        self.history: list[dict] = []
        self.stage_index, self.step_in_stage, self.seconds = 0, 0, 0.0

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    def _save(self) -> None:
        buffer = io.BytesIO()
        torch.save({"system": self.system_id, "model": self.generator.state_dict(),
                    "optimizer": self.optimizer.state_dict(), "history": self.history,
                    "stage_index": self.stage_index, "step_in_stage": self.step_in_stage,
                    "seconds": self.seconds, "energy_evaluations": self.generator.energy_evaluations,
                    "rng": torch.get_rng_state(), "best": self.best}, buffer)
        atomic_write_bytes(self.checkpoint_path, buffer.getvalue())

    def _resume(self) -> None:
        checkpoint = load_checkpoint(self.generator, self.checkpoint_path, self.system_id)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.history = checkpoint["history"]
        self.stage_index, self.step_in_stage = checkpoint["stage_index"], checkpoint["step_in_stage"]
        self.seconds = checkpoint["seconds"]
        self.best = checkpoint.get("best")
        torch.set_rng_state(checkpoint["rng"])

    def _ml_loss(self) -> torch.Tensor:
        index = torch.multinomial(self.weights, self.batch_size, replacement=True)
        return -self.generator.log_prob(self.data[index]).mean()

    def _kl_loss(self) -> tuple[torch.Tensor, dict]:
        x, log_q = self.generator.propose(self.kl_batch_size)
        u = self.generator.reduced_energy(x)
        ok = torch.isfinite(u) & torch.isfinite(log_q)
        log_w = torch.where(ok, -u - log_q, torch.full_like(u, -torch.inf)).detach()
        stats = {"ess": kish_ess(log_w), "fraction_finite": fraction_finite(log_w)}
        if not ok.any():
            return torch.zeros((), requires_grad=True), stats
        if self.kl_bias is not None:
            u = u + self.kl_bias(x.detach())
        return (regularized_energy(u[ok], self.energy_cap) + log_q[ok]).mean(), stats

    def _track_validation(self, record: dict) -> None:
        """Record −log q on the held-out data and remember the best parameters of this stage."""
        with torch.no_grad():
            w = self.validation_weights
            loss = float(-(self.generator.log_prob(self.validation).double() * w).sum() / w.sum())
        record["loss_ml_validation"] = loss
        if self.best is None or loss < self.best["loss"]:
            self.best = {"loss": loss, "model": {k: v.clone() for k, v in self.generator.state_dict().items()}}

    def _end_stage(self, stage: Stage) -> None:
        """Restore the best-validation parameters of an ML stage."""
        if self.best is not None:
            self.generator.load_state_dict(self.best["model"])
            self.history.append({"stage": stage.name, "step": self.history[-1]["step"] if self.history else 0,
                                 "seconds": self.seconds, "energy_evaluations": self.generator.energy_evaluations,
                                 "restored_best_validation": self.best["loss"]})
        self.best = None

    def _step(self, stage: Stage) -> dict:
        for group in self.optimizer.param_groups:
            group["lr"] = stage.rate(self.step_in_stage)
        self.optimizer.zero_grad()
        loss = torch.zeros(())
        record: dict = {}
        if stage.ml_weight:
            ml = self._ml_loss()
            loss = loss + stage.ml_weight * ml
            record["loss_ml"] = float(ml.detach())
        if stage.kl_weight:
            kl, stats = self._kl_loss()
            loss = loss + stage.kl_weight * kl
            record.update(loss_kl=float(kl.detach()), **stats)
        if torch.isfinite(loss):
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.generator.parameters(), self.grad_clip)
            self.optimizer.step()
        return record

    def fit(self, stages: list[Stage]) -> list[dict]:
        """Run (or resume) the stages; returns the history (one dict per ``log_every`` steps)."""
        for stage in stages:
            if stage.ml_weight and self.data is None:
                raise ValueError(f"stage {stage.name!r} uses maximum likelihood but no data was given")
        if self.checkpoint_path.exists():
            self._resume()
        total = sum(s.steps for s in stages)
        done = sum(s.steps for s in stages[:self.stage_index]) + self.step_in_stage
        bar = tqdm(total=total, initial=done, desc="train BG", unit="step", disable=not self.progress)
        while self.stage_index < len(stages):
            stage = stages[self.stage_index]
            while self.step_in_stage < stage.steps:
                start = time.perf_counter()
                record = self._step(stage)
                self.seconds += time.perf_counter() - start
                self.step_in_stage += 1
                bar.update()
                if self.step_in_stage % self.log_every == 0 or self.step_in_stage == stage.steps:
                    if self.validation is not None and not stage.kl_weight:
                        self._track_validation(record)
                    self.history.append({"stage": stage.name, "step": done + 1, "seconds": self.seconds,
                                         "energy_evaluations": self.generator.energy_evaluations, **record})
                    bar.set_postfix({k: f"{v:.3g}" for k, v in record.items()})
                done += 1
                if self.step_in_stage % self.checkpoint_every == 0:
                    self._save()
            self._end_stage(stage)
            self.stage_index, self.step_in_stage = self.stage_index + 1, 0
            self._save()
        bar.close()
        self.write_report(stages)
        return self.history

    def write_report(self, stages: list[Stage]) -> None:
        """``training.json`` (stages, history, wall time, energy evaluations) and ``learning_curves.png``."""
        write_json(self.run_dir / "training.json",
                   {"system": self.system_id, "stages": [asdict(s) for s in stages], "history": self.history,
                    "seconds": self.seconds, "energy_evaluations": self.generator.energy_evaluations})
        plot_learning_curves(self.history, self.run_dir / "learning_curves.png")


def plot_learning_curves(history: list[dict], path: Path) -> None:
    """PNG of the ML loss, KL loss and ESS against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("loss_ml", "loss_kl", "ess") if any(k in h for h in history)]
    validation = [(h["step"], h["loss_ml_validation"]) for h in history if "loss_ml_validation" in h]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4 * max(len(keys), 1), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(h["step"], h[key]) for h in history if key in h]
        ax.plot(*zip(*points), label="training")
        if key == "loss_ml" and validation:
            ax.plot(*zip(*validation), label="validation")
            ax.legend()
        ax.set_xlabel("step")
        ax.set_title({"loss_ml": "−log q(data) (nats)", "loss_kl": "reverse KL loss (kT)",
                      "ess": "Kish ESS / n"}[key])
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
