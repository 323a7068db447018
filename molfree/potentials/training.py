"""Training of :class:`~molfree.potentials.EquivariantPotential` on energies and forces.

``train(config, run_dir)`` or ``molfree train config.yaml``. Config keys (YAML mapping; only
``data`` is required; a relative ``data`` path in a YAML file is relative to that file):

=====================  ============  =================================================================
key                    default       meaning
=====================  ============  =================================================================
data                   (required)    labelled extended-XYZ file (``molfree data label``), eV and eV/Å
elements               from data     chemical symbols the model knows (may include absent ones)
model                  {}            EquivariantPotential options: cutoff (nm), channels, l_max,
                                     n_layers, n_basis, radial_hidden, correlation, readout
seed                   0             split, initial weights and batch order
val_fraction           0.1           fraction of structures for validation (early stopping, LR)
test_fraction          0.1           fraction held out for the final test metrics
batch_size             5             structures per training step
eval_batch_size        20            structures per evaluation batch
max_epochs             100           passes over the training set
max_steps              null          optional cap on optimizer steps (may end an epoch early)
learning_rate          0.005         Adam learning rate
lr_factor              0.5           ReduceLROnPlateau factor on the validation loss (per epoch)
lr_patience            5             epochs without improvement before the LR is reduced
min_learning_rate      1.0e-5        LR floor
energy_weight          1.0           weight of the energy term
force_weight           10.0          weight of the force term
ema_decay              0.99          exponential moving average of weights (validation, saved model)
patience               20            early stopping: epochs without a better validation loss
checkpoint_every       50            steps between checkpoints (also one after every epoch)
dtype                  float32       float32 or float64
progress               true          tqdm progress bar
=====================  ============  =================================================================

Loss = energy_weight · mean((ΔE/N / u)²) + force_weight · mean((ΔF / f_rms)²), with f_rms the
RMS training force component (kJ/mol/nm) and u = f_rms · 0.1 nm (the weighting of per-atom
energies in kJ/mol against forces in kJ/mol/Å). The model buffers are set from the training data:
``energy_scale`` makes the untrained model's RMS force equal f_rms (measured on up to 20 training
structures); ``energy_shift`` (kJ/mol per atom of each element) is the least-squares fit of the
training energies, less the untrained network's, to the element counts; ``avg_num_neighbors`` is
the mean neighbor count within the cutoff. Weights are averaged by an EMA with warm-up
(new-weight fraction max(1 - ema_decay, 9/(10 + n)) after n updates).

The run directory receives ``checkpoint.pt`` (model, optimizer, EMA, scheduler, RNG state, step,
history; written atomically; a rerun resumes from it and repeats the uninterrupted run's steps:
bitwise with one torch thread, to float rounding with several), ``metrics.json`` (per-epoch train
and validation losses and MAEs, test MAEs in meV/atom and meV/Å), ``learning_curves.png`` and
``model.pt`` (the best-validation EMA weights, with dataset hash, metrics and config in its header).
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import io
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import units
from ..averaging import WeightAverage
from ..io import atomic_write_bytes, write_json
from .data import Dataset, collate, load_dataset, structure_pairs
from .model import EquivariantPotential

#: Length (nm, about a bond) that turns the RMS force into the loss's per-atom energy unit.
LOSS_LENGTH_NM = 0.1
#: Training structures on which the untrained model's force RMS is measured to set ``energy_scale``.
CALIBRATION_SIZE = 20
#: Model options a config may set (elements and avg_num_neighbors come from the data).
MODEL_KEYS = ("cutoff", "channels", "l_max", "n_layers", "n_basis", "radial_hidden", "correlation", "readout")
#: Keys that may change between a checkpoint and its resumption (they only decide when to stop).
STOPPING_KEYS = ("max_epochs", "max_steps", "patience", "checkpoint_every", "progress")


@dataclass
class TrainingConfig:
    """Training options; see the module docstring for meanings and units."""

    data: str
    elements: list[str] | None = None
    model: dict = field(default_factory=dict)
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    batch_size: int = 5
    eval_batch_size: int = 20
    max_epochs: int = 100
    max_steps: int | None = None
    learning_rate: float = 5e-3
    lr_factor: float = 0.5
    lr_patience: int = 5
    min_learning_rate: float = 1e-5
    energy_weight: float = 1.0
    force_weight: float = 10.0
    ema_decay: float = 0.99
    patience: int = 20
    checkpoint_every: int = 50
    dtype: str = "float32"
    progress: bool = True

    @classmethod
    def from_dict(cls, options: dict) -> "TrainingConfig":
        """Validated config from a mapping; ValueError naming unknown or missing keys and bad values."""
        if not isinstance(options, dict):
            raise ValueError(f"a training config must be a mapping, got {type(options).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; known keys: {sorted(known)}")
        if "data" not in options:
            raise ValueError("the config needs a 'data' key (labelled extended-XYZ file)")
        unknown = sorted(set(options.get("model") or {}) - set(MODEL_KEYS))
        if unknown:
            raise ValueError(f"unknown config key(s) {['model.' + k for k in unknown]}; model keys: {list(MODEL_KEYS)}")
        config = cls(**{**options, "model": dict(options.get("model") or {})})
        config.validate()
        return config

    def validate(self) -> None:
        if not (0 <= self.val_fraction and 0 <= self.test_fraction and self.val_fraction + self.test_fraction < 1):
            raise ValueError("val_fraction and test_fraction must be non-negative and sum to less than 1")
        if self.val_fraction == 0:
            raise ValueError("val_fraction must be positive (validation drives the LR schedule and early stopping)")
        for key in ("batch_size", "eval_batch_size", "max_epochs", "max_steps", "checkpoint_every", "patience",
                    "lr_patience"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | os.PathLike) -> TrainingConfig:
    """Read a YAML training config; a relative ``data`` path is taken relative to the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    options = yaml.safe_load(path.read_text()) or {}
    if isinstance(options, dict) and isinstance(options.get("data"), str):
        options["data"] = str(path.parent / options["data"])
    return TrainingConfig.from_dict(options)


# ---------------------------------------------------------------------------------------------------------------
# data preparation


def split_indices(n: int, config: TrainingConfig) -> dict[str, np.ndarray]:
    """Random train/val/test split of ``n`` structures with ``config.seed`` (every part non-empty except test)."""
    order = np.random.default_rng(config.seed).permutation(n)
    n_val = max(1, round(config.val_fraction * n))
    n_test = round(config.test_fraction * n)
    if n - n_val - n_test < 1:
        raise ValueError(f"{n} structures are too few for the requested validation and test fractions")
    return {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}


def fit_energy_shift(composition: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """Per-element energies ``[n_elements]`` (kJ/mol per atom): least squares of ``energies [S]`` (kJ/mol)
    on element counts ``composition [S, n_elements]`` (minimum norm when the counts are degenerate)."""
    shift, *_ = np.linalg.lstsq(composition, energies, rcond=None)
    return shift


def force_rms(dataset: Dataset) -> float:
    """RMS force component (kJ/mol/nm); ValueError when all forces vanish."""
    rms = float(np.sqrt(np.mean(dataset.forces**2)))
    if not rms > 0:
        raise ValueError("the training forces are all zero; cannot set the energy scale")
    return rms


class Trainer:
    """Model, optimizer, EMA and schedule over one dataset; ``state`` holds the loop counters and history."""

    def __init__(self, config: TrainingConfig, dataset: Dataset):
        self.config = config
        self.dataset = dataset
        self.dtype = getattr(torch, config.dtype)
        self.elements = list(config.elements or dataset.elements())
        self.species = dataset.species(self.elements)
        self.split = split_indices(len(dataset), config)
        train = dataset.subset(self.split["train"])
        cutoff = config.model.get("cutoff", inspect.signature(EquivariantPotential).parameters["cutoff"].default)
        self.pairs = structure_pairs(dataset, cutoff)
        n_pairs = sum(len(self.pairs[s][0]) for s in self.split["train"])
        self.force_rms = force_rms(train)
        self.loss_energy_unit = self.force_rms * LOSS_LENGTH_NM
        torch.manual_seed(config.seed)
        self.model = EquivariantPotential(self.elements, avg_num_neighbors=n_pairs / train.counts.sum(),
                                          **config.model).to(self.dtype)
        self.model.energy_scale.fill_(self.force_rms / self.model_force_rms(self.split["train"][:CALIBRATION_SIZE]))
        residual = train.energies - self.model_energies(self.split["train"])
        self.model.energy_shift.copy_(torch.as_tensor(fit_energy_shift(train.composition(self.elements), residual)))
        self.model.periodic_data = dataset.periodic
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_learning_rate)
        self.ema = WeightAverage(self.model, config.ema_decay, build=lambda model: EquivariantPotential(**model.config))
        self.state = {"step": 0, "epoch": 0, "batch": 0, "sums": _zero_sums(), "history": [],
                      "best_val": math.inf, "best_epoch": -1, "bad_epochs": 0,
                      "best_state": copy.deepcopy(self.ema.module.state_dict())}

    # -- evaluation -----------------------------------------------------------------------------------------

    def predict(self, model, indices, create_graph: bool):
        """The batch of structures ``indices`` with ``model``'s energies ``[B]`` (kJ/mol) and forces ``[M, 3]``."""
        batch = collate(self.dataset, self.species, self.pairs, indices, self.dtype)
        with torch.enable_grad():
            positions = batch.positions.requires_grad_(True)
            energies = model(positions, batch.species, batch.batch, batch.n_structures, batch.box, batch.pairs)
            (grad,) = torch.autograd.grad(energies.sum(), positions, create_graph=create_graph)
        return batch, energies, -grad

    def errors(self, model, indices, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-atom energy errors ``[B]`` (kJ/mol) and force errors ``[M, 3]`` (kJ/mol/nm) of ``model``."""
        batch, energies, forces = self.predict(model, indices, create_graph)
        return (energies - batch.energies) / batch.counts.to(self.dtype), forces - batch.forces

    def model_force_rms(self, indices) -> float:
        """RMS force component (kJ/mol/nm) of the model with ``energy_scale`` = 1 on the structures ``indices``."""
        self.model.energy_scale.fill_(1.0)
        return float(self.predict(self.model, indices, create_graph=False)[2].pow(2).mean().sqrt())

    def model_energies(self, indices) -> np.ndarray:
        """Energies ``[S]`` (kJ/mol) of the current model on the structures ``indices``."""
        return np.concatenate([self.predict(self.model, chunk, create_graph=False)[1].detach().numpy()
                               for chunk in self.chunks(indices)])

    def chunks(self, indices) -> list[np.ndarray]:
        """``indices`` in evaluation batches of ``eval_batch_size``."""
        size = self.config.eval_batch_size
        return [indices[start:start + size] for start in range(0, len(indices), size)]

    def loss(self, energy_errors: torch.Tensor, force_errors: torch.Tensor) -> torch.Tensor:
        """Dimensionless weighted loss (see the module docstring)."""
        return (self.config.energy_weight * ((energy_errors / self.loss_energy_unit) ** 2).mean()
                + self.config.force_weight * ((force_errors / self.force_rms) ** 2).mean())

    def evaluate(self, model, indices) -> dict:
        """Loss and MAEs of ``model`` on the structures ``indices`` (metrics dict, see :func:`_metrics`)."""
        sums = _zero_sums()
        for chunk in self.chunks(indices):
            energy_errors, force_errors = self.errors(model, chunk, create_graph=False)
            _accumulate(sums, self.loss(energy_errors, force_errors).detach(), energy_errors.detach(),
                        force_errors.detach())
        return _metrics(sums)

    # -- training ---------------------------------------------------------------------------------------------

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Training structures in the (seeded) order of ``epoch``."""
        rng = np.random.default_rng([self.config.seed, epoch])
        return self.split["train"][rng.permutation(len(self.split["train"]))]

    def train_step(self, indices) -> None:
        """One optimizer step on the structures ``indices``; updates EMA and the epoch sums."""
        energy_errors, force_errors = self.errors(self.model, indices, create_graph=True)
        loss = self.loss(energy_errors, force_errors)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.ema.update(self.model)
        _accumulate(self.state["sums"], loss.detach(), energy_errors.detach(), force_errors.detach())
        self.state["step"] += 1

    def end_epoch(self) -> dict:
        """Validate the EMA model, step the LR schedule, track the best state; returns the history row."""
        state = self.state
        val = self.evaluate(self.ema.module, self.split["val"])
        row = {"epoch": state["epoch"], "step": state["step"], "learning_rate": self.optimizer.param_groups[0]["lr"],
               **{f"train_{k}": v for k, v in _metrics(state["sums"]).items()},
               **{f"val_{k}": v for k, v in val.items()}}
        self.scheduler.step(val["loss"])
        if val["loss"] < state["best_val"]:
            state.update(best_val=val["loss"], best_epoch=state["epoch"], bad_epochs=0,
                         best_state=copy.deepcopy(self.ema.module.state_dict()))
        else:
            state["bad_epochs"] += 1
        state["history"].append(row)
        state.update(epoch=state["epoch"] + 1, batch=0, sums=_zero_sums())
        return row

    def finished(self) -> bool:
        state, config = self.state, self.config
        return (state["epoch"] >= config.max_epochs or state["bad_epochs"] >= config.patience
                or (config.max_steps is not None and state["step"] >= config.max_steps))

    # -- checkpoints ------------------------------------------------------------------------------------------

    def save_checkpoint(self, path: Path, dataset_hash: str) -> None:
        payload = {"config": self.config.to_dict(), "dataset_hash": dataset_hash, "state": self.state,
                   "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                   "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                   "torch_rng": torch.get_rng_state()}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def load_checkpoint(self, path: Path, dataset_hash: str) -> None:
        """Restore everything from ``path``; ValueError if it belongs to another config or dataset."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload["dataset_hash"] != dataset_hash:
            raise ValueError(f"{path} was written for a different dataset; use a new run directory")
        changed = sorted(k for k, v in self.config.to_dict().items()
                         if k not in STOPPING_KEYS and payload["config"].get(k) != v)
        if changed:
            raise ValueError(f"{path} was written with different config values for {changed}; use a new run directory")
        self.model.load_state_dict(payload["model"])
        self.ema.load_state_dict(payload["ema"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["torch_rng"])
        self.state = payload["state"]


def _zero_sums() -> dict:
    return {"loss": 0.0, "batches": 0, "energy_abs": 0.0, "structures": 0, "force_abs": 0.0, "components": 0}


def _accumulate(sums: dict, loss, energy_errors, force_errors) -> None:
    sums["loss"] += float(loss)
    sums["batches"] += 1
    sums["energy_abs"] += float(energy_errors.abs().sum())
    sums["structures"] += energy_errors.numel()
    sums["force_abs"] += float(force_errors.abs().sum())
    sums["components"] += force_errors.numel()


def _metrics(sums: dict) -> dict:
    """Mean loss per batch, energy MAE (meV/atom) and force-component MAE (meV/Å) from accumulated sums."""
    if not sums["batches"]:
        return {"loss": None, "energy_mae_mev_per_atom": None, "force_mae_mev_per_angstrom": None}
    return {"loss": sums["loss"] / sums["batches"],
            "energy_mae_mev_per_atom": sums["energy_abs"] / sums["structures"] * units.KJ_PER_MOL_TO_EV * units.EV_TO_MEV,
            "force_mae_mev_per_angstrom": sums["force_abs"] / sums["components"]
            * units.KJ_PER_MOL_NM_TO_EV_PER_ANGSTROM * units.EV_TO_MEV}


def plot_learning_curves(history: list[dict], path: Path) -> None:
    """Loss, energy MAE and force MAE per epoch (train and validation) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    panels = (("loss", "loss"), ("energy_mae_mev_per_atom", "energy MAE (meV/atom)"),
              ("force_mae_mev_per_angstrom", "force MAE (meV/Å)"))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, (key, label) in zip(axes, panels):
        for split in ("train", "val"):
            ax.plot(epochs, [row[f"{split}_{key}"] for row in history], label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train(config: TrainingConfig | dict, run_dir: str | os.PathLike) -> dict:
    """Train a potential (resuming from ``run_dir/checkpoint.pt`` if present); returns the metrics dict."""
    from tqdm import tqdm

    config = config if isinstance(config, TrainingConfig) else TrainingConfig.from_dict(config)
    config.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(config.data)
    dataset_hash = dataset.content_hash()
    trainer = Trainer(config, dataset)
    checkpoint = run_dir / "checkpoint.pt"
    if checkpoint.is_file():
        trainer.load_checkpoint(checkpoint, dataset_hash)
    state = trainer.state
    steps_per_epoch = math.ceil(len(trainer.split["train"]) / config.batch_size)
    total = config.max_epochs * steps_per_epoch
    total = total if config.max_steps is None else min(total, config.max_steps)
    start = time.perf_counter()
    with tqdm(total=total, initial=state["step"], desc="train", unit="step", disable=not config.progress) as bar:
        while state["batch"] > 0 or not trainer.finished():  # a started epoch is always completed
            order = trainer.epoch_order(state["epoch"])
            while state["batch"] < steps_per_epoch and not trainer.finished():
                trainer.train_step(order[state["batch"] * config.batch_size:(state["batch"] + 1) * config.batch_size])
                state["batch"] += 1
                bar.update()
                if state["step"] % config.checkpoint_every == 0:
                    trainer.save_checkpoint(checkpoint, dataset_hash)
            row = trainer.end_epoch()
            bar.set_postfix(val_force_mae=f"{row['val_force_mae_mev_per_angstrom']:.1f} meV/Å")
            trainer.save_checkpoint(checkpoint, dataset_hash)
            state = trainer.state
    return _finish(trainer, run_dir, dataset_hash, time.perf_counter() - start)


def _finish(trainer: Trainer, run_dir: Path, dataset_hash: str, wall_seconds: float) -> dict:
    """Test the best EMA weights, then write metrics.json, learning_curves.png and model.pt."""
    state, config = trainer.state, trainer.config
    model = trainer.ema.module
    model.load_state_dict(state["best_state"])
    model.periodic_data = trainer.dataset.periodic
    test = trainer.evaluate(model, trainer.split["test"]) if len(trainer.split["test"]) else _metrics(_zero_sums())
    metrics = {"test": test, "best_epoch": state["best_epoch"], "best_val_loss": state["best_val"],
               "steps": state["step"], "epochs": state["epoch"], "wall_seconds_this_run": wall_seconds,
               "n_structures": {k: int(len(v)) for k, v in trainer.split.items()},
               "energy_scale_kj_mol": float(model.energy_scale), "force_rms_kj_mol_nm": trainer.force_rms,
               "history": state["history"]}
    write_json(run_dir / "metrics.json", metrics)
    plot_learning_curves(state["history"], run_dir / "learning_curves.png")
    model.save(run_dir / "model.pt", {"dataset": str(config.data), "dataset_hash": dataset_hash,
                                      "training_config": config.to_dict(), "test_metrics": test,
                                      "best_epoch": state["best_epoch"], "steps": state["step"]})
    return metrics
