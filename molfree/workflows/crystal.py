"""``molfree crystal`` workflows (eV, Å): generate (candidates, relaxation, symmetry, deduplication,
ranking), train (relaxed training data built by random search, then a CrystalFlow) and evaluate
(CDVAE-style metrics on held-out data).

Candidates of ``generate`` come from AIRSS-style random structure search
(:mod:`molfree.crystals.search`) or a trained :class:`~molfree.crystals.generative.CrystalFlow`
(composition given, or free generation). Each relaxed candidate is written atomically to
``candidates/NNNN.extxyz``, so a rerun skips finished candidates; ``train`` resumes the same way
and from its checkpoint.

``generate`` writes ``candidates/``, ``cifs/`` (unique structures, ranked), ``energy_volume.png``,
``results.json`` and ``report.md``; ``train`` writes ``config.json``, ``data/`` (candidates,
``train.extxyz``, ``test.extxyz``), ``checkpoint.pt``, ``model.pt``, ``metrics.json``,
``learning_curve.png`` and ``report.md``; ``evaluate`` writes ``metrics.json`` and ``report.md``.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.io import read, write

from ..crystals.calculators import make_calculator
from ..crystals.generative import CrystalFlow
from ..crystals.metrics import csp_match, generation_metrics
from ..crystals.relax import Relaxed, deduplicate, relax
from ..crystals.search import random_candidate
from ..crystals.structures import parse_composition, to_structure
from ..io import atomic_write_bytes, atomic_write_text, write_json

__all__ = ["DataSetup", "EvaluateSetup", "GenerateSetup", "TrainSetup", "build_dataset", "flow_starts",
           "read_dataset", "relax_candidates", "run_evaluate", "run_generate", "run_train", "summary"]

SOURCES = {"random": "random structure search (pyxtal random symmetric + random-lattice P1 starts)",
           "flow": "CrystalFlow samples (flow matching on lattice + fractional coordinates)"}


@dataclass
class GenerateSetup:
    """Settings of a ``crystal generate`` run (forces in eV/Å). ``composition`` None with
    ``generator="flow"`` is free generation (cells drawn from the model's training cells)."""

    composition: str | None
    calculator: str = "emt"
    n: int = 200
    seed: int = 0
    max_atoms: int = 8
    fmax: float = 0.01
    steps: int = 300
    generator: str = "random"
    model: str | None = None
    sample_steps: int = 10


def _annotated(cand: Relaxed) -> Atoms:
    atoms = cand.atoms.copy()
    atoms.info.update(energy_per_atom=cand.energy_per_atom, evaluations=cand.evaluations,
                      converged=cand.converged, space_group=cand.space_group, symbol=cand.symbol)
    return atoms


def _write_extxyz(path: Path, frames: list[Atoms]) -> None:
    buffer = io.StringIO()
    write(buffer, frames, format="extxyz")
    atomic_write_text(path, buffer.getvalue())


def _relaxed(atoms: Atoms) -> Relaxed:
    info = atoms.info
    return Relaxed(atoms, float(info["energy_per_atom"]), int(info["evaluations"]), bool(info["converged"]),
                   int(info["space_group"]), str(info["symbol"]))


def read_dataset(path: str | Path) -> list[Relaxed]:
    """Relaxed crystals of an extxyz file written by ``crystal train`` (``energy_per_atom`` in eV)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"crystal data file not found: {path}")
    try:
        return [_relaxed(a) for a in read(path, index=":", format="extxyz")]
    except (KeyError, StopIteration) as exc:
        raise ValueError(f"{path}: not a molfree crystal data file (missing {exc})") from None


def relax_candidates(start: Callable[[int], Atoms], n: int, calculator, directory: Path, fmax: float, steps: int,
                     desc: str | None = None) -> tuple[list[Relaxed], int]:
    """Relax ``start(index)`` for index < ``n``, keeping each in ``directory/NNNN.extxyz`` and reusing
    those already there; returns (candidates, number reused). ``desc`` shows a progress bar."""
    from tqdm import tqdm

    candidates, resumed = [], 0
    for index in tqdm(range(n), desc=desc, unit="relax", disable=desc is None, leave=False):
        path = directory / f"{index:04d}.extxyz"
        if path.exists():
            candidates.append(_relaxed(read(path, format="extxyz")))
            resumed += 1
            continue
        cand = relax(start(index), calculator, fmax=fmax, steps=steps)
        _write_extxyz(path, [_annotated(cand)])
        candidates.append(cand)
    return candidates, resumed


def flow_starts(model: CrystalFlow, counts: dict[str, int] | None, n: int, max_atoms: int, seed: int,
                sample_steps: int = 10, allow_unseen: bool = False) -> list[Atoms]:
    """``n`` CrystalFlow samples: composition ``counts`` (CSP) or, if None, free generation.
    Samples with impossible cells are replaced by further draws (ValueError after 20 rounds)."""
    starts: list[Atoms] = []
    for round_ in range(20):
        sub_seed = seed * 7919 + round_
        starts += (model.sample_free(n, sample_steps, sub_seed) if counts is None else
                   model.sample_composition(counts, n, max_atoms, sample_steps, sub_seed, allow_unseen=allow_unseen))
        if len(starts) >= n:
            return starts[:n]
    raise ValueError(f"the crystal model gave only {len(starts)} valid cells in 20 rounds of {n} samples")


def _plot(candidates: list[Relaxed], unique: list[Relaxed], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [c for c in candidates if np.isfinite(c.energy_per_atom)]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([c.volume_per_atom for c in ok], [c.energy_per_atom for c in ok], s=12, alpha=0.5,
               label="relaxed candidates")
    ax.scatter([c.volume_per_atom for c in unique], [c.energy_per_atom for c in unique], s=30,
               facecolors="none", edgecolors="C3", label="unique")
    for c in unique[:5]:
        ax.annotate(c.symbol, (c.volume_per_atom, c.energy_per_atom), fontsize=7)
    ax.set_xlabel("volume (Å³/atom)")
    ax.set_ylabel("energy (eV/atom)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _check_same_setup(path: Path, config: dict, keys: tuple[str, ...]) -> None:
    """Write ``config`` to ``path`` on the first run; ValueError if a rerun changes any of ``keys``."""
    if path.is_file():
        old = json.loads(path.read_text())
        changed = [k for k in keys if old.get(k) != config.get(k)]
        if changed:
            raise ValueError(f"{path.parent} was run with other settings ({', '.join(changed)}): "
                             "use a new --out directory")
    write_json(path, config)


def run_generate(setup: GenerateSetup, out: str | Path) -> dict:
    """Run (or resume) a generate job in ``out``; returns the results written to ``results.json``."""
    from pymatgen.io.cif import CifWriter

    if setup.n < 1:
        raise ValueError(f"-n must be at least 1, got {setup.n}")
    if setup.generator not in SOURCES:
        raise ValueError(f"unknown generator {setup.generator!r}: use one of {sorted(SOURCES)}")
    if setup.generator == "random" and (setup.composition is None or setup.model is not None):
        raise ValueError("random search needs --composition and takes no --model")
    if setup.generator == "flow" and setup.model is None:
        raise ValueError("--generator flow needs --model (a file written by 'molfree crystal train')")
    out = Path(out)
    _check_same_setup(out / "setup.json", asdict(setup), ("composition", "generator", "model", "seed", "max_atoms",
                                                           "sample_steps"))
    counts = None if setup.composition is None else parse_composition(setup.composition)
    if setup.generator == "flow":
        model = CrystalFlow.load(setup.model)
        symbols = list(counts) if counts is not None else model.metadata["elements"]
        starts = flow_starts(model, counts, setup.n, setup.max_atoms, setup.seed, setup.sample_steps)
        start = starts.__getitem__
    else:
        symbols = list(counts)
        start = partial(random_candidate, counts, seed=setup.seed, max_atoms=setup.max_atoms)
    calculator = make_calculator(setup.calculator, symbols)
    candidates, resumed = relax_candidates(start, setup.n, calculator, out / "candidates", setup.fmax, setup.steps,
                                           desc="relax")
    unique = deduplicate(candidates)
    formula = setup.composition or "free generation"
    source = SOURCES[setup.generator] + (f" from {setup.model}" if setup.model else "")
    rows = []
    for rank, (cand, count) in enumerate(unique, 1):
        name = f"{rank:03d}_{cand.atoms.get_chemical_formula()}_sg{cand.space_group}.cif"
        atomic_write_text(out / "cifs" / name, str(CifWriter(to_structure(cand.atoms), symprec=0.01)))
        rows.append({"rank": rank, "cif": f"cifs/{name}", "energy_per_atom_eV": cand.energy_per_atom,
                     "volume_per_atom_A3": cand.volume_per_atom, "space_group": cand.space_group,
                     "symbol": cand.symbol, "n_atoms": len(cand.atoms), "multiplicity": count,
                     "converged": cand.converged})
    _plot(candidates, [c for c, _ in unique], out / "energy_volume.png", f"{formula} ({setup.calculator})")
    results = {"composition": formula, "calculator": setup.calculator, "source": source,
               "generator": setup.generator, "n_candidates": setup.n,
               "resumed": resumed, "relaxations": len(candidates),
               "energy_evaluations": sum(c.evaluations for c in candidates),
               "converged": sum(c.converged for c in candidates), "unique": rows}
    write_json(out / "results.json", results)
    lines = [f"# Crystal generation: {formula} with {setup.calculator}", "",
             f"Candidates: {setup.n} from {source}; {resumed} reused from an earlier run.",
             (f"Relaxations: {len(candidates)} ({results['converged']} converged to fmax {setup.fmax} eV/Å), "
              f"{results['energy_evaluations']} energy evaluations."), "",
             "| rank | E (eV/atom) | V (Å³/atom) | space group | atoms | found | CIF |",
             "|---:|---:|---:|---|---:|---:|---|"]
    lines += [f"| {r['rank']} | {r['energy_per_atom_eV']:.4f} | {r['volume_per_atom_A3']:.3f} | "
              f"{r['symbol']} ({r['space_group']}) | {r['n_atoms']} | {r['multiplicity']} | {r['cif']} |"
              for r in rows[:20]]
    lines += ["", "Energy vs volume: energy_volume.png", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    return results


def summary(results: dict) -> str:
    """A one-line summary (with the three lowest structures) for the terminal."""
    best = results["unique"][:3]
    text = ", ".join(f"{r['symbol']} ({r['space_group']}) {r['energy_per_atom_eV']:.4f} eV/atom" for r in best)
    return (f"[molfree crystal generate] {results['composition']}: {results['relaxations']} relaxations, "
            f"{len(results['unique'])} unique; lowest: {text}")


@dataclass
class DataSetup:
    """Training data of ``crystal train``: ``per_composition`` random starts of each composition relaxed
    with ``calculator`` (forces below ``fmax`` eV/Å, at most ``steps`` steps), converged ones deduplicated."""

    compositions: list[str]
    calculator: str = "emt"
    per_composition: int = 20
    max_atoms: int = 8
    fmax: float = 0.01
    steps: int = 300
    seed: int = 0


def build_dataset(setup: DataSetup, out: str | Path, progress: bool = True,
                  calculator_factory: Callable[[list[str]], Calculator] | None = None) -> tuple[list[Relaxed], dict]:
    """Relax the random starts (resumable in ``out/<formula>/``) and keep the converged unique crystals
    of each composition; returns them and the cost (relaxations, energy evaluations).
    ``calculator_factory(symbols)`` replaces the named ``setup.calculator`` when given."""
    if not setup.compositions:
        raise ValueError("training data needs at least one composition")
    crystals, relaxations, evaluations = [], 0, 0
    for composition in setup.compositions:
        counts = parse_composition(composition)
        symbols = list(counts)
        calculator = calculator_factory(symbols) if calculator_factory else make_calculator(setup.calculator, symbols)
        start = partial(random_candidate, counts, seed=setup.seed, max_atoms=setup.max_atoms)
        candidates, _ = relax_candidates(start, setup.per_composition, calculator, Path(out) / composition,
                                         setup.fmax, setup.steps, desc=composition if progress else None)
        relaxations += len(candidates)
        evaluations += sum(c.evaluations for c in candidates)
        crystals += [c for c, _ in deduplicate([c for c in candidates if c.converged])]
    if not crystals:
        raise ValueError("no relaxation converged: raise --relax-steps or loosen --fmax")
    return crystals, {"relaxations": relaxations, "energy_evaluations": evaluations, "unique": len(crystals)}


@dataclass
class TrainSetup:
    """Settings of ``crystal train``: data, held-out fraction, CrystalFlow size and optimisation."""

    data: DataSetup
    holdout: float = 0.2
    hidden: int = 64
    layers: int = 2
    frequencies: int = 4
    train_steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    checkpoint_every: int = 100

    def check(self) -> None:
        """ValueError on settings that cannot train."""
        if not 0 <= self.holdout < 1:
            raise ValueError(f"--holdout must be in [0, 1), got {self.holdout}")
        for name in ("hidden", "layers", "frequencies", "train_steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.data.per_composition < 1:
            raise ValueError(f"--per-composition must be at least 1, got {self.data.per_composition}")


def _split(crystals: list[Relaxed], holdout: float, seed: int) -> tuple[list[Relaxed], list[Relaxed]]:
    """Random train/test split of the unique crystals; the training part is never empty."""
    order = np.random.default_rng(seed).permutation(len(crystals))
    n_test = min(round(holdout * len(crystals)), len(crystals) - 1)
    return [crystals[k] for k in order[n_test:]], [crystals[k] for k in order[:n_test]]


def _plot_learning_curve(losses: list[float], validation: list[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    window = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(np.arange(window, len(losses) + 1), smooth, label=f"train (mean of {window})")
    if validation:
        ax.plot(*zip(*validation), "o-", label="held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _validation_loss(model: CrystalFlow, data, batch_size: int, batches: int = 8) -> float:
    """Mean flow-matching loss on held-out ``data`` with fixed noise (seed 0)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return float(np.mean([model.loss(data, batch_size, generator).item() for _ in range(batches)]))


def run_train(setup: TrainSetup, out: str | Path, progress: bool = True) -> dict:
    """Build (or reuse) the data, train a CrystalFlow resuming from ``out/checkpoint.pt``, write the
    model and metrics; returns the metrics written to ``metrics.json``."""
    from tqdm import tqdm

    setup.check()
    out = Path(out)
    # More steps continue a finished run; anything else needs a new directory.
    _check_same_setup(out / "config.json", asdict(setup),
                      tuple(k for k in asdict(setup) if k not in ("train_steps", "checkpoint_every")))
    start_time = time.perf_counter()
    crystals, cost = build_dataset(setup.data, out / "data" / "candidates", progress)
    train, test = _split(crystals, setup.holdout, setup.data.seed)
    for name, part in (("train", train), ("test", test)):
        _write_extxyz(out / "data" / f"{name}.extxyz", [_annotated(c) for c in part])
    torch.manual_seed(setup.data.seed)
    model = CrystalFlow(setup.hidden, setup.layers, setup.frequencies)
    train_data = model.prepare([c.atoms for c in train])
    test_data = model.dataset([c.atoms for c in test]) if test else None
    optimizer = torch.optim.Adam(model.parameters(), lr=setup.lr)
    generator = torch.Generator().manual_seed(setup.data.seed)
    state = {"step": 0, "losses": [], "validation": []}
    checkpoint = out / "checkpoint.pt"
    if checkpoint.is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        state = saved["state"]
    with tqdm(total=setup.train_steps, initial=state["step"], desc="train", unit="step", disable=not progress) as bar:
        while state["step"] < setup.train_steps:
            loss = model.loss(train_data, setup.batch_size, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            state["losses"].append(loss.item())
            state["step"] += 1
            bar.update()
            if state["step"] % setup.checkpoint_every == 0 or state["step"] == setup.train_steps:
                if test_data is not None:
                    state["validation"].append([state["step"], _validation_loss(model, test_data, setup.batch_size)])
                    bar.set_postfix(val=f"{state['validation'][-1][1]:.3f}")
                buffer = io.BytesIO()
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "generator": generator.get_state(), "state": state}, buffer)
                atomic_write_bytes(checkpoint, buffer.getvalue())
    digest = hashlib.sha256((out / "data" / "train.extxyz").read_bytes()).hexdigest()
    metrics = {"steps": state["step"], "final_train_loss": float(np.mean(state["losses"][-50:])),
               "validation_loss": state["validation"][-1][1] if state["validation"] else None,
               "n_train": len(train), "n_test": len(test), "data_cost": cost,
               "wall_seconds_this_run": time.perf_counter() - start_time, "validation": state["validation"]}
    model.save(out / "model.pt", {"calculator": setup.data.calculator, "compositions": setup.data.compositions,
                                  "train_data_sha256": digest, "config": asdict(setup), "steps": state["step"]})
    write_json(out / "metrics.json", metrics)
    _plot_learning_curve(state["losses"], [tuple(v) for v in state["validation"]], out / "learning_curve.png")
    atomic_write_text(out / "report.md", "\n".join([
        f"# CrystalFlow training: {', '.join(setup.data.compositions)} with {setup.data.calculator}", "",
        (f"Data: {cost['relaxations']} relaxations ({cost['energy_evaluations']} energy evaluations) of random "
         f"starts, {cost['unique']} unique converged crystals; {len(train)} train, {len(test)} held out."),
        (f"Training: {state['step']} steps, final train loss {metrics['final_train_loss']:.4f}, held-out loss "
         f"{metrics['validation_loss']}."), "",
        "Files: model.pt, metrics.json, learning_curve.png, data/train.extxyz, data/test.extxyz.", ""]))
    return metrics


@dataclass
class EvaluateSetup:
    """Settings of ``crystal evaluate``: ``n_samples`` free generations, ``csp_samples`` per held-out crystal."""

    model: str
    data: str
    calculator: str | None = None
    n_samples: int = 100
    csp_samples: int = 1
    sample_steps: int = 10
    seed: int = 0


def _energies(crystals: list[Atoms], calculator_name: str) -> list[float]:
    """Single-point energies per atom (eV); NaN where the calculator fails (e.g. overlapping atoms)."""
    out, calculators = [], {}
    for atoms in crystals:
        atoms = atoms.copy()
        elements = tuple(sorted(set(atoms.get_chemical_symbols())))
        if elements not in calculators:
            calculators[elements] = make_calculator(calculator_name, list(elements))
        atoms.calc = calculators[elements]
        try:
            out.append(atoms.get_potential_energy() / len(atoms))
        except (ValueError, RuntimeError, FloatingPointError):
            out.append(float("nan"))
    return out


def run_evaluate(setup: EvaluateSetup, out: str | Path) -> dict:
    """CDVAE-style metrics of a CrystalFlow on held-out crystals: generation (validity, COV-R/P,
    Wasserstein of density and energy) and CSP (match rate, RMSE); writes metrics.json and report.md."""
    if setup.n_samples < 1 or setup.csp_samples < 1:
        raise ValueError("--n-samples and --csp-samples must be at least 1")
    model = CrystalFlow.load(setup.model)
    references = read_dataset(setup.data)
    if not references:
        raise ValueError(f"{setup.data} holds no crystals")
    ref_atoms = [c.atoms for c in references]
    model.check_elements([s for a in ref_atoms for s in a.get_chemical_symbols()])
    calculator = setup.calculator or model.provenance.get("calculator")
    if calculator is None:
        raise ValueError("the model file names no calculator: pass --calculator")
    generated = flow_starts(model, None, setup.n_samples, max_atoms=0, seed=setup.seed, sample_steps=setup.sample_steps)
    gen = generation_metrics(generated, ref_atoms, _energies(generated, calculator),
                             [c.energy_per_atom for c in references])
    predictions = [model.sample(a.get_chemical_symbols(), setup.csp_samples, setup.sample_steps, seed=setup.seed + k)
                   for k, a in enumerate(ref_atoms)]
    csp = csp_match(predictions, ref_atoms)
    truth = generation_metrics(ref_atoms, ref_atoms, [c.energy_per_atom for c in references],
                               [c.energy_per_atom for c in references])
    metrics = {"generation": gen, "csp": {**csp, "samples_per_target": setup.csp_samples},
               "ground_truth_validity": {k: truth[k] for k in ("valid_structural", "valid_compositional",
                                                                "valid_overall")},
               "n_reference": len(references), "n_generated": len(generated), "calculator": calculator,
               "model": str(setup.model), "data": str(setup.data)}
    out = Path(out)
    write_json(out / "metrics.json", metrics)
    lines = [f"# CrystalFlow evaluation on {setup.data} ({len(references)} crystals)", "",
             "| metric | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in gen.items()]
    lines += [f"| CSP match rate @{setup.csp_samples} | {csp['match_rate']:.4g} |", f"| CSP RMSE | {csp['rmse']:.4g} |",
              "", ("Coverage counts StructureMatcher matches (stol 0.5, angle_tol 10, ltol 0.3) of unrelaxed samples; "
                   "density and energy distances use the structurally valid samples only (as CDVAE)."), ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    return metrics
