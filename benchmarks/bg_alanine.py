"""Alanine dipeptide Boltzmann-generator benchmark (CPU, one torch thread, OpenMM CPU platform, one thread).

Per system: replica-exchange reference (frames of every replica every 0.02 ps) → maximum likelihood on
all replicas' frames (MBAR weights at 300 K, the minor basin φ > 0 raised to 20 % from its 500 K weights)
→ optional ML+KL (``kl_steps``, off by default) → samples, then ESS, KL(φ), W2(φ,ψ), ΔF(φ>0 vs φ<0)
against the reference, energy evaluations and wall time, printed beside Langevin MD with the same
number of force evaluations. Goals (issue 5): both φ basins present,
reweighted KL(φ) ≤ 0.1, |ΔF − ΔF_ref| ≤ 0.5 kT.

    python benchmarks/bg_alanine.py --quick     # implicit solvent only, a few minutes
    python benchmarks/bg_alanine.py             # implicit (amber96 + OBC1) and vacuum (amber14)

Runs resume from their directories (``--out``); delete them to start over.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

from molfree.io import write_json
from molfree.workflows.bg import SYSTEMS, BGSetup, run_train, summary


def goals(results: dict) -> dict[str, bool]:
    """The issue's CPU goals for one run."""
    flow = results["flow"]
    return {"both φ basins present (≥ 10 finite-weight flow samples with φ > 0)": flow["n_phi_positive"] >= 10,
            "KL(φ) ≤ 0.1": flow["kl_phi"] <= 0.1,
            "|ΔF − ΔF_ref| ≤ 0.5 kT": flow["delta_f_deviation_kt"] <= 0.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="implicit solvent only, BGSetup.quick()")
    parser.add_argument("--out", default="runs/bench-bg", help="parent run directory")
    args = parser.parse_args()
    names = SYSTEMS[:1] if args.quick else SYSTEMS
    record = {}
    for name in names:
        setup = BGSetup.quick(system=name) if args.quick else BGSetup(system=name)
        print(f"== {name}: CPU budget — reference {setup.reference_ps:g} ps × {len(setup.replica_temperatures)} "
              f"replicas, {setup.ml_steps} ML + {setup.kl_steps} ML+KL steps (KL batch {setup.kl_batch}), "
              f"{setup.n_samples} samples, {setup.threads} torch thread(s)")
        start = time.perf_counter()
        results = run_train(setup, Path(args.out) / (name + ("-quick" if args.quick else "")), progress=False)
        wall = time.perf_counter() - start
        ref, flow, md = results["reference"], results["flow"], results["baseline_md"]
        print(summary(results))
        print(f"wall time: total {wall:.0f} s this call (reference {ref['seconds']:.0f} s, training "
              f"{results['training_seconds']:.0f} s, flow sampling {flow['sampling_seconds']:.0f} s, "
              f"MD baseline {md['seconds']:.0f} s; cached stages cost nothing on rerun)")
        print(f"flow: fraction finite {flow['fraction_finite']:.3f}, low-energy {flow['fraction_low_energy']:.3f}, "
              f"{flow['n_phi_positive']} samples with φ > 0 (reweighted fraction {flow['fraction_phi_positive']:.2g}), "
              f"chirality rejections {flow['rejected_chirality']}")
        checks = goals(results)
        for goal, ok in checks.items():
            print(f"  [{'PASS' if ok else 'FAIL'}] {goal}")
        record[name] = {"setup": asdict(setup), "results": results, "goals": checks, "wall_seconds": wall}
    write_json(Path(args.out) / ("bench-quick.json" if args.quick else "bench.json"), record)


if __name__ == "__main__":
    main()
