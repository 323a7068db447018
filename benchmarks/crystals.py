"""Ground-state recovery per relaxation: CrystalFlow vs random structure search on LJ, NaCl, Si, CuAu.

Per system, a CrystalFlow is trained on relaxed random-search structures of *other* compositions
under the same calculator (leave the target out: LJ Ne/Kr/Xe for Ar, Born–Mayer NaF/NaBr/KCl/LiCl
for NaCl, Tersoff C/Ge for Si, EMT CuPd/CuPt/AgAu/AuPd for CuAu); its data cost is printed, once per
system. Each trial is then an independent search (its own seed) that relaxes starts — CrystalFlow
samples of the target composition or AIRSS-style random starts — until one matches the known
ground state (``StructureMatcher``, CDVAE tolerances) or the relaxation budget is spent. Printed
per system and method: success rate, relaxations and energy evaluations per success, and the ratio
random/CrystalFlow of relaxations per success (goal ≥ 3).

Ground states: LJ fcc or hcp (degenerate within 0.01 %); NaCl rock salt (Born–Mayer fit to 5.64 Å);
Si diamond (Tersoff); CuAu L1₀ (under ASE's EMT, L1₀ at −0.0114 eV/atom is below B2 −0.0054 and
L1₁ +0.0242; Cu3Au would be L1₂).

Training data are cached (and resumed) in ``--work``. Usage:
``python benchmarks/crystals.py [--quick] [--work DIR]``
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator

from molfree.crystals.calculators import LJ_PARAMS, lennard_jones, make_calculator
from molfree.crystals.generative import CrystalFlow
from molfree.crystals.relax import matcher, relax
from molfree.crystals.search import random_candidate, relax_starts
from molfree.crystals.structures import parse_composition, to_structure
from molfree.workflows.crystal import DataSetup, build_dataset, flow_starts


def _lj_reduced(symbols: list[str]) -> Calculator:
    """LJ with ε = 1 eV and σ in units of argon's (Å), so Ar is the reduced-unit crystal."""
    return lennard_jones(symbols, {s: (1.0, LJ_PARAMS[s][1] / LJ_PARAMS["Ar"][1]) for s in set(symbols)})


def _cu_au_l10() -> Atoms:
    a = 3.8
    start = Atoms("CuAu", cell=[a / np.sqrt(2), a / np.sqrt(2), a], scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]],
                  pbc=True)
    return relax(start, make_calculator("emt", ["Cu", "Au"]), fmax=0.005).atoms


@dataclass
class System:
    """A benchmark target: composition, calculator factory, ground states, fmax (eV/Å), training compositions."""

    target: str
    calculator: Callable[[list[str]], Calculator]
    ground_states: Callable[[], list[Atoms]]
    fmax: float
    training: list[str]


SYSTEMS = {
    "LJ Ar (fcc/hcp)": System("Ar", _lj_reduced, lambda: [bulk("Ar", "fcc", a=1.5418),
                                                          bulk("Ar", "hcp", a=1.0902, c=1.7803)],
                              1e-3, ["Ne", "Kr", "Xe"]),
    "NaCl (rock salt, B-M)": System("NaCl", lambda s: make_calculator("born-mayer", s),
                                    lambda: [bulk("NaCl", "rocksalt", a=5.64)], 0.01, ["NaF", "NaBr", "KCl", "LiCl"]),
    "Si (diamond, Tersoff)": System("Si", lambda s: make_calculator("tersoff", s),
                                    lambda: [bulk("Si", "diamond", a=5.432)], 0.01, ["C", "Ge"]),
    "CuAu (L1_0, EMT)": System("CuAu", lambda s: make_calculator("emt", s), lambda: [_cu_au_l10()], 0.01,
                               ["CuPd", "CuPt", "AgAu", "AuPd"]),
}


@dataclass
class Budget:
    """Trials, relaxations per trial, cell size, optimizer steps, training data and CrystalFlow steps."""

    trials: int
    relaxations: int
    max_atoms: int
    steps: int
    per_composition: int
    train_steps: int


QUICK = Budget(trials=3, relaxations=4, max_atoms=2, steps=200, per_composition=4, train_steps=400)
FULL = Budget(trials=10, relaxations=20, max_atoms=4, steps=300, per_composition=20, train_steps=3000)


def train_flow(system: System, budget: Budget, work: Path) -> tuple[CrystalFlow, dict]:
    """CrystalFlow trained on the relaxed unique crystals of the system's training compositions."""
    data = DataSetup(system.training, per_composition=budget.per_composition, max_atoms=budget.max_atoms,
                     fmax=system.fmax, steps=budget.steps)
    crystals, cost = build_dataset(data, work / system.target, progress=False, calculator_factory=system.calculator)
    torch.manual_seed(0)
    model = CrystalFlow(hidden=48, layers=2)
    losses = model.fit([c.atoms for c in crystals], steps=budget.train_steps, batch_size=16)
    cost["final_loss"] = float(np.mean(losses[-50:]))
    return model.eval(), cost


def trial(starts, system: System, calculator: Calculator, targets: list, budget: Budget) -> tuple[bool, int, int]:
    """One search over ``starts``: (success, relaxations, energy evaluations)."""
    sm = matcher()

    def found(cand) -> bool:
        return bool(np.isfinite(cand.energy_per_atom)
                    and any(sm.fit(to_structure(cand.atoms), t) for t in targets))

    result = relax_starts(starts, calculator, fmax=system.fmax, steps=budget.steps, stop=found)
    return found(result.candidates[-1]), result.relaxations, result.evaluations


def _row(name: str, method: str, runs: list[tuple[bool, int, int]], seconds: float) -> float:
    """Print one table row; returns relaxations per success (inf without success)."""
    successes = sum(s for s, _, _ in runs)
    relaxations, evaluations = sum(r for _, r, _ in runs), sum(e for _, _, e in runs)
    per_relax = relaxations / successes if successes else float("inf")
    per_eval = f"{evaluations / successes:.0f}" if successes else "inf"
    print(f"{name:24s} {method:12s} {successes:>4d}/{len(runs):<4d} {per_relax:>14.1f} {per_eval:>14s} {seconds:7.1f}")
    return per_relax


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 trials x 4 relaxations, <= 2 atoms per cell")
    parser.add_argument("--work", default=None, help="training-data cache (default: runs/bench-crystals[-quick])")
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--trials", type=int, help="override the number of trials")
    args = parser.parse_args()
    torch.set_num_threads(1)
    budget = replace(QUICK if args.quick else FULL, **({"trials": args.trials} if args.trials else {}))
    work = Path(args.work or ("runs/bench-crystals-quick" if args.quick else "runs/bench-crystals"))
    print(f"{budget.trials} trials x <= {budget.relaxations} relaxations, <= {budget.max_atoms} atoms/cell, "
          f"<= {budget.steps} FIRE steps; CrystalFlow trained on other compositions "
          f"({budget.per_composition} relaxed starts each, {budget.train_steps} steps)")
    header = (f"{'system':24s} {'method':12s} {'success':>9s} {'relax/success':>14s} {'evals/success':>14s} "
              f"{'time s':>7s}")
    print(header)
    print("-" * len(header))
    for name in args.systems:
        system = SYSTEMS[name]
        counts = parse_composition(system.target)
        calculator = system.calculator(list(counts))
        targets = [to_structure(a) for a in system.ground_states()]
        start = time.perf_counter()
        model, cost = train_flow(system, budget, work)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        runs = [trial(flow_starts(model, counts, budget.relaxations, budget.max_atoms, seed, allow_unseen=True),
                      system, calculator, targets, budget) for seed in range(budget.trials)]
        flow = _row(name, "CrystalFlow", runs, time.perf_counter() - start)
        start = time.perf_counter()
        runs = [trial((random_candidate(counts, k, seed, budget.max_atoms) for k in range(budget.relaxations)),
                      system, calculator, targets, budget) for seed in range(budget.trials)]
        rand = _row(name, "random", runs, time.perf_counter() - start)
        ratio = rand / flow if np.isfinite(flow) else float("nan")
        print(f"{'':24s} ratio random/CrystalFlow relaxations per success: {ratio:.2f} (goal >= 3); training data "
              f"{cost['relaxations']} relaxations ({cost['energy_evaluations']} evals) of "
              f"{'/'.join(system.training)}, {cost['unique']} unique, loss {cost['final_loss']:.3f}, "
              f"{train_seconds:.0f} s")


if __name__ == "__main__":
    main()
