"""Adjoint Sampling on DW-4, LJ-13 (and LJ-55 with ``--full``) beside equal-budget Metropolis and HMC.

Reports energy-W2/W1 (E/kT), interatomic-distance W2 (nm), Kabsch+Hungarian-aligned W2 (nm,
with its reference-vs-reference noise floor), ln Z estimates with ESS, energy evaluations
and wall time, and writes ``runs/benchmarks/adjoint_sampling.json``. The sample-quality figures are
of the raw samples; energy- and distance-W2 of self-normalised importance-resampled samples (path
weights) are printed apart and labelled reweighted, and those of the raw samples after the Langevin
corrector on the learned terminal score (DW-4; no energy evaluations, no importance weights) apart
again, labelled refined.

    python benchmarks/adjoint_sampling.py --quick   # minutes on a CPU, small budgets
    python benchmarks/adjoint_sampling.py           # DW-4 2e5 and LJ-13 1e6 evaluations
    python benchmarks/adjoint_sampling.py --full    # adds LJ-55 (GPU advised; reference by long annealed HMC here)
    python benchmarks/adjoint_sampling.py --targets lj55 --device cuda --checkpoints runs/benchmarks/adjoint
    python benchmarks/adjoint_sampling.py --quick --seeds 3 --targets dw4   # DW-4 only, mean ± spread over seeds 0–2
    python benchmarks/adjoint_sampling.py --targets dw4 --posterior-target   # lower-variance regression target
    python benchmarks/adjoint_sampling.py --targets lj13 --checkpoints runs/benchmarks/adjoint   # resumable

Reference samples: ``systems/{dw4,lj13}-reference.npz`` (``systems/make_reference_samples.py``).
``--device cuda`` trains and samples the adjoint sampler on the GPU; the reference, the metrics and the
MCMC baselines stay on the CPU.
Temperature: every target is sampled at kT = 1 kJ/mol (``units.REDUCED_TEMPERATURE``), so E/kT is
the papers' dimensionless energy with τ = 1; DW-4 sums over the 6 unordered pairs (Köhler et al.
2020, bgflow), LJ-13/LJ-55 use the papers' ordered-pair convention (see
:mod:`molfree.energies.analytic`).
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from molfree import Energy, units
from molfree.energies.analytic import DoubleWellEnergy, LennardJonesClusterEnergy
from molfree.io import write_json
from molfree.samplers import (
    AdjointConfig,
    AdjointSampler,
    EGNNDrift,
    MCMCResult,
    aligned_w2,
    distance_w2,
    energy_w1,
    energy_w2,
    equal_budget_hmc,
    equal_budget_metropolis,
    hamiltonian_monte_carlo,
    lattice_start,
    log_mean_exp,
    normalised_ess,
)
from molfree.samplers.metrics import importance_resample

ROOT = Path(__file__).resolve().parents[1]
T = units.REDUCED_TEMPERATURE
METHODS = ("adjoint", "mcmc", "hmc")
#: the equal-budget HMC baseline: chains from lattice starts, leapfrog steps per trajectory
HMC_CHAINS, HMC_LEAPFROG = 100, 10


@dataclass
class Target:
    """A benchmark target: energy factory, EGNN and sampler settings, budgets (energy evaluations).

    ``sample_steps``: Euler–Maruyama steps of the final samples (None: the training's ``config.n_steps``);
    finer steps cost wall time only, not energy evaluations. ``n_rbf``, ``rbf_max``: the EGNN's Gaussian
    distance features (see :class:`~molfree.samplers.EGNNDrift`). ``refine_steps``, ``refine_step_size``
    (nm²): Langevin corrector steps on the learned terminal score after sampling
    (:meth:`~molfree.samplers.AdjointSampler.refine`, no energy evaluations; 0: none). ``mcmc_step``,
    ``hmc_step`` (nm): initial proposal and leapfrog steps of the two equal-budget baselines.
    """

    name: str
    energy: Callable[[], Energy]
    length_scale: float
    hidden: int
    n_layers: int
    config: AdjointConfig
    budget: int
    quick_budget: int
    mcmc_step: float
    sample_steps: int | None = None
    n_rbf: int = 0
    rbf_max: float = 3.0
    refine_steps: int = 0
    refine_step_size: float = 0.0
    hmc_step: float = 0.01


def _config(sigma_max: float, n_steps: int, drift_length: float, max_grad_norm: float,
            ema_decay: float = 0.0) -> AdjointConfig:
    return AdjointConfig(sigma_max=sigma_max, n_steps=n_steps, samples_per_iteration=500, train_steps_per_iteration=30,
                         train_batch_size=256, max_grad_norm=max_grad_norm, drift_length=drift_length, com_free=True,
                         ema_decay=ema_decay)


TARGETS = {
    "dw4": Target("dw4", DoubleWellEnergy.dw4, 4.0, 32, 2, _config(3.0, 50, 1.0, 50.0), 200_000, 20_000, 0.5,
                  sample_steps=200, n_rbf=32, rbf_max=2.5, refine_steps=3000, refine_step_size=0.004, hmc_step=0.1),
    "lj13": Target("lj13", LennardJonesClusterEnergy.lj13, 1.0, 32, 2, _config(1.5, 50, 0.3, 1000.0, 0.999),
                   1_000_000, 5_000, 0.1, sample_steps=200, n_rbf=32),
    "lj55": Target("lj55", LennardJonesClusterEnergy.lj55, 1.0, 64, 3, _config(2.0, 100, 0.3, 1000.0, 0.999),
                   2_000_000, 5_000, 0.05, sample_steps=200, n_rbf=32),
}


def drift(target: Target) -> EGNNDrift:
    """The target's EGNN drift, freshly initialised from torch's global generator."""
    return EGNNDrift(hidden=target.hidden, n_layers=target.n_layers, length_scale=target.length_scale,
                     n_rbf=target.n_rbf, rbf_max=target.rbf_max)


def reference(target: Target, energy) -> torch.Tensor:
    """Reference samples ``[S, N, dim]``: the stored file, or (LJ-55) a long annealed Hamiltonian Monte Carlo
    run from lattice starts with the settings of the LJ-13 reference (``systems/make_reference_samples.py``)."""
    path = ROOT / "systems" / f"{target.name}-reference.npz"
    if path.exists():
        return torch.tensor(np.load(path)["positions"], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    x0 = lattice_start(256, energy.n_atoms, energy.dim, 1.1, g)
    res = hamiltonian_monte_carlo(energy, x0, T, 3_000, burn_in=1_000, step_size=0.01, n_leapfrog=20, thin=250,
                                  anneal_from=4 * T, com_free=True, generator=g)
    return res.samples


def metrics(samples: torch.Tensor, energies: torch.Tensor, ref: torch.Tensor, ref_e: torch.Tensor,
            n_aligned: int) -> dict[str, float]:
    """Sample-quality metrics against the reference."""
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(samples), generator=g)[:n_aligned]
    pick_ref = torch.randperm(len(ref), generator=g)[:n_aligned]
    return {"energy_w2": energy_w2(energies, ref_e), "energy_w1": energy_w1(energies, ref_e),
            "distance_w2": distance_w2(samples, ref), "aligned_w2": aligned_w2(samples[pick], ref[pick_ref])}


def run(target: Target, quick: bool, n_samples: int, n_aligned: int, seed: int = 0,
        checkpoint: Path | None = None, device: str = "cpu") -> dict:
    """Train, sample and compare one target with MCMC at the same number of energy evaluations.

    The adjoint sampler trains and samples on ``device``; its samples come back to the CPU for the metrics.

    With ``checkpoint``, training saves the sampler there every 20 iterations and, if the file exists,
    resumes from it towards the same budget (a killed run loses at most 20 iterations).
    """
    torch.manual_seed(seed)
    energy = target.energy()
    ref = reference(target, energy)
    ref_e = energy.reduced(ref, temperature=T)
    half = len(ref) // 2
    floor = aligned_w2(ref[:n_aligned], ref[half:half + n_aligned])

    budget = target.quick_budget if quick else target.budget
    sampler = AdjointSampler(energy, drift(target), T, target.config, seed=seed, device=device)
    if checkpoint is not None and checkpoint.exists():
        sampler.load(checkpoint)
        print(f"resuming {checkpoint} at {sampler.energy_evaluations} energy evaluations", flush=True)
    sampler.train(max_energy_evaluations=budget - n_samples, checkpoint=checkpoint, checkpoint_every=20)
    start = time.perf_counter()
    res = sampler.sample(n_samples, n_steps=target.sample_steps)
    logw, samples, energies = res.log_weights.cpu(), res.samples.cpu(), res.reduced_energies.cpu()
    finite = torch.isfinite(logw)
    logw, samples, energies = logw[finite], samples[finite], energies[finite]
    resampled = importance_resample(logw, len(logw), torch.Generator().manual_seed(seed))
    adjoint = {"energy_evaluations": res.energy_evaluations,
               "wall_time_s": sampler.wall_time_s + time.perf_counter() - start,  # training (all resumes) + sampling
               **metrics(samples, energies, ref, ref_e, n_aligned),
               "log_z_lower_bound": float(logw.mean()), "log_z_reweighted": float(log_mean_exp(logw)),
               "ess": float(normalised_ess(logw)),
               "energy_w2_reweighted": energy_w2(energies[resampled], ref_e),
               "distance_w2_reweighted": distance_w2(samples[resampled], ref)}
    if target.refine_steps:
        start = time.perf_counter()
        refined = sampler.refine(samples, target.refine_steps, target.refine_step_size).cpu()
        refined_e = energy.reduced(refined.double(), temperature=T)  # for the metrics only, not the sampler's
        adjoint.update({f"refined_{key}": value for key, value in metrics(refined, refined_e, ref, ref_e,
                                                                           n_aligned).items()},
                       refined_wall_time_s=time.perf_counter() - start)

    def baseline(method: Callable[..., MCMCResult], **kwargs) -> dict:
        start = time.perf_counter()
        chains = method(energy, T, res.energy_evaluations, com_free=True, seed=seed, **kwargs)
        return {"energy_evaluations": chains.energy_evaluations, "wall_time_s": time.perf_counter() - start,
                **metrics(chains.samples, chains.reduced_energies, ref, ref_e, n_aligned),
                "acceptance": chains.acceptance}

    mcmc = baseline(equal_budget_metropolis, n_chains=500, init_scale=target.length_scale / 2,
                    step_size=target.mcmc_step)
    hmc = baseline(equal_budget_hmc, n_chains=HMC_CHAINS, spacing=1.1 * target.length_scale, n_leapfrog=HMC_LEAPFROG,
                   step_size=target.hmc_step)
    return {"target": target.name, "seed": seed, "budget": budget, "device": device, "aligned_w2_noise_floor": floor,
            "adjoint": adjoint, "mcmc": mcmc, "hmc": hmc}


def summarise(results: list[dict]) -> dict:
    """Mean and sample standard deviation (spread) over seeds of every figure of each method of one target."""
    summary = {"target": results[0]["target"], "seeds": [r["seed"] for r in results]}
    for method in (m for m in METHODS if m in results[0]):
        values = {key: np.array([r[method][key] for r in results], dtype=float) for key in results[0][method]}
        summary[method] = {key: {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
                           for key, v in values.items()}
    return summary


def print_row(result: dict) -> None:
    print(f"\n{result['target']}  seed {result['seed']}  (budget {result['budget']:.0e} evals; aligned-W2 noise floor "
          f"{result['aligned_w2_noise_floor']:.3f})")
    print(f"  {'method':8s} {'evals':>9s} {'E-W2':>8s} {'E-W1':>8s} {'dist-W2':>8s} {'align-W2':>9s} {'wall s':>8s}")
    for method in METHODS:
        r = result[method]
        print(f"  {method:8s} {r['energy_evaluations']:9d} {r['energy_w2']:8.3f} {r['energy_w1']:8.3f} "
              f"{r['distance_w2']:8.3f} {r['aligned_w2']:9.3f} {r['wall_time_s']:8.1f}")
    a = result["adjoint"]
    print(f"  adjoint ln Z: lower bound {a['log_z_lower_bound']:.2f}, reweighted {a['log_z_reweighted']:.2f}, "
          f"ESS {a['ess']:.3f}")
    print(f"  adjoint importance-resampled (reweighted, not the raw figures above): E-W2 "
          f"{a['energy_w2_reweighted']:.3f}, dist-W2 {a['distance_w2_reweighted']:.3f}")
    if "refined_energy_w2" in a:
        print(f"  adjoint + Langevin corrector on the learned score (no energy evaluations, "
              f"{a['refined_wall_time_s']:.0f} s): E-W2 {a['refined_energy_w2']:.3f}, E-W1 {a['refined_energy_w1']:.3f}, "
              f"dist-W2 {a['refined_distance_w2']:.3f}, align-W2 {a['refined_aligned_w2']:.3f}")


def print_summary(summary: dict) -> None:
    """Print the mean ± standard deviation over seeds of the sample-quality figures."""
    print(f"\n{summary['target']}  mean ± std over seeds {summary['seeds']}")
    rows = [(method, method, "") for method in METHODS]
    if "refined_energy_w2" in summary["adjoint"]:
        rows.append(("refined", "adjoint", "refined_"))
    for label, method, prefix in rows:
        figures = "  ".join(f"{key} {summary[method][prefix + key]['mean']:.3f} ± {summary[method][prefix + key]['std']:.3f}"
                            for key in ("energy_w2", "energy_w1", "distance_w2", "aligned_w2"))
        print(f"  {label:8s} {figures}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets (minutes on a CPU)")
    parser.add_argument("--full", action="store_true", help="also run LJ-55")
    parser.add_argument("--seeds", type=int, default=1, help="run seeds 0..N-1 and report mean and spread")
    parser.add_argument("--targets", help="comma-separated subset of " + ",".join(TARGETS) + " (overrides --full)")
    parser.add_argument("--posterior-target", action="store_true",
                        help="regress on the buffer's bridge-posterior mean (AdjointConfig.posterior_target)")
    parser.add_argument("--checkpoints", metavar="DIR",
                        help="save each target's sampler to DIR/<target>-<quick|full>[-posterior]-seed<N>.pt during training and "
                             "resume from it when it exists (for the hours-long LJ-13 and LJ-55 budgets)")
    parser.add_argument("--device", default="cpu", help="torch device of the adjoint sampler, e.g. cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: DW-4's small tensors only contend; LJ-13's EGNN runs "
                             "about 1.6x faster on 2)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "benchmarks" / "adjoint_sampling.json"))
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.threads < 1:
        parser.error("--seeds and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    names = args.targets.split(",") if args.targets else ["dw4", "lj13"] + (["lj55"] if args.full else [])
    if unknown := set(names) - set(TARGETS):
        parser.error(f"unknown targets {sorted(unknown)}; choose from {sorted(TARGETS)}")
    n_samples, n_aligned = (1000, 60) if args.quick else (5000, 200)
    results, summaries = [], []
    for name in names:
        per_seed = []
        for seed in range(args.seeds):
            target = TARGETS[name]
            if args.posterior_target:
                target = dataclasses.replace(target, config=dataclasses.replace(target.config, posterior_target=True))
            variant = ("quick" if args.quick else "full") + ("-posterior" if args.posterior_target else "")
            checkpoint = None if args.checkpoints is None else Path(args.checkpoints) / f"{name}-{variant}-seed{seed}.pt"
            per_seed.append(run(target, args.quick, n_samples, n_aligned, seed, checkpoint, args.device))
            print_row(per_seed[-1])
        results += per_seed
        if args.seeds > 1:
            summaries.append(summarise(per_seed))
            print_summary(summaries[-1])
    write_json(args.out, {"quick": args.quick, "seeds": args.seeds, "posterior_target": args.posterior_target,
                          "results": results, "summaries": summaries})
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
