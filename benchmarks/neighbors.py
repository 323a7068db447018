"""Neighbor-list build time of molfree against vesin, matscipy and ASE (a script, not a test).

Random positions at water density (100 atoms/nm^3) in a cubic periodic box, half list with
shifts for molfree and vesin; matscipy and ASE only build full lists (twice the pairs).
Every library gets one warm-up call (this includes Warp's kernel compilation), then the
libraries are timed in turn ``--repeats`` times on the same inputs; the median wall time is
reported together with the median CPU time of the process (robust on a shared machine).

    python benchmarks/neighbors.py                 # 1k .. 100k atoms, cutoffs 0.5 and 1.0 nm
    python benchmarks/neighbors.py --quick         # smoke run
    python benchmarks/neighbors.py --device cuda   # molfree on the GPU, vesin on the CPU as anchor
"""
from __future__ import annotations

import os

# All libraries compared here build lists on one thread; idle BLAS/OpenMP pools spinning on a
# small machine would only add noise.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics
import time
from typing import Callable

import numpy as np  # noqa: E402
import torch  # noqa: E402

from molfree.neighbors import neighbor_list  # noqa: E402
from molfree.units import NM_TO_ANGSTROM  # noqa: E402

DENSITY = 100.0  # atoms / nm^3, about liquid water


def _libraries(
    x: np.ndarray, box: np.ndarray, cutoff: float, device: str, ase_max: int, matscipy_max: int
) -> dict[str, Callable]:
    """Name -> function building the neighbor list once and returning the number of half-list pairs."""
    positions = torch.tensor(x, device=device)
    box_t = torch.tensor(box, device=device)

    def molfree() -> int:
        nl = neighbor_list(positions, cutoff, box=box_t)
        if device == "cuda":
            torch.cuda.synchronize()
        return len(nl.i)

    libraries = {"molfree": molfree}
    try:
        import vesin

        calculator = vesin.NeighborList(cutoff=cutoff, full_list=False)
        libraries["vesin"] = lambda: len(calculator.compute(points=x, box=box, periodic=True, quantities="ijS",
                                                            copy=False)[0])
    except ImportError:
        pass
    try:
        import vesin.torch as vesin_torch

        if device == "cuda":
            gpu_calculator = vesin_torch.NeighborList(cutoff=cutoff, full_list=False)

            def vesin_gpu() -> int:
                i, _, _ = gpu_calculator.compute(points=positions, box=box_t, periodic=True, quantities="ijS")
                torch.cuda.synchronize()
                return len(i)

            libraries["vesin-torch(gpu)"] = vesin_gpu
    except ImportError:
        pass
    try:
        from matscipy.neighbours import neighbour_list as matscipy_list

        if len(x) <= matscipy_max:
            libraries["matscipy"] = lambda: len(matscipy_list("ijS", positions=x, cell=box, pbc=[True] * 3,
                                                              cutoff=cutoff)[0]) // 2
    except ImportError:
        pass
    if len(x) <= ase_max:
        import ase
        from ase.neighborlist import neighbor_list as ase_list

        atoms = ase.Atoms(numbers=np.ones(len(x), dtype=int), positions=x * NM_TO_ANGSTROM,
                          cell=box * NM_TO_ANGSTROM, pbc=True)
        libraries["ase"] = lambda: len(ase_list("ijS", atoms, cutoff * NM_TO_ANGSTROM)[0]) // 2
    return libraries


def run(sizes: list[int], cutoffs: list[float], repeats: int, device: str, ase_max: int, matscipy_max: int) -> None:
    print(f"device={device}, torch threads={torch.get_num_threads()}, cpu count={os.cpu_count()}, "
          f"load average={os.getloadavg()[0]:.1f}; skipped as too slow: ASE above {ase_max} atoms, "
          f"matscipy above {matscipy_max} atoms")
    print(f"{'N':>8} {'cutoff':>6} {'pairs':>10} {'library':>17} {'median ms':>10} {'min ms':>9} {'cpu ms':>9} "
          f"{'us/atom':>8} {'vs vesin':>9}")
    per_atom: dict[float, list[tuple[int, float]]] = {c: [] for c in cutoffs}
    ratios = []
    for n in sizes:
        side = (n / DENSITY) ** (1.0 / 3.0)
        x = np.random.default_rng(n).uniform(0.0, side, size=(n, 3))
        box = np.eye(3) * side
        for cutoff in cutoffs:
            libraries = _libraries(x, box, cutoff, device, ase_max, matscipy_max)
            counts = {name: f() for name, f in libraries.items()}  # warm-up, compiles Warp kernels once
            times: dict[str, list[float]] = {name: [] for name in libraries}
            cpu: dict[str, list[float]] = {name: [] for name in libraries}
            for _ in range(repeats):
                for name, f in libraries.items():
                    start, start_cpu = time.perf_counter(), time.process_time()
                    f()
                    times[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
            medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
            for name in libraries:
                ratio = medians[name] / medians["vesin"] if "vesin" in medians else float("nan")
                print(f"{n:>8} {cutoff:>6.2f} {counts[name]:>10} {name:>17} {medians[name]:>10.2f} "
                      f"{min(times[name]) * 1e3:>9.2f} {statistics.median(cpu[name]) * 1e3:>9.2f} "
                      f"{medians[name] * 1e3 / n:>8.3f} {ratio:>9.2f}", flush=True)
            if len(set(counts.values())) != 1:
                print(f"  WARNING: pair counts differ: {counts}")
            per_atom[cutoff].append((n, medians["molfree"] * 1e3 / n))
            if "vesin" in medians:
                ratios.append((n, cutoff, medians["molfree"] / medians["vesin"]))
    print("\nmolfree / vesin (median time; < 1 means molfree is faster):")
    for n, cutoff, ratio in ratios:
        print(f"  N={n:>7} cutoff={cutoff:.2f} nm: {ratio:.2f}")
    print("\nlinear scaling check, molfree time per atom (us), relative to the smallest N:")
    for cutoff, values in per_atom.items():
        base = values[0][1]
        row = ", ".join(f"N={n}: {t:.3f} ({t / base:.2f}x)" for n, t in values)
        print(f"  cutoff {cutoff:.2f} nm: {row}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")],
                        default=[1000, 3000, 10000, 30000, 100000], help="comma-separated atom counts")
    parser.add_argument("--cutoffs", type=lambda s: [float(v) for v in s.split(",")], default=[0.5, 1.0],
                        help="comma-separated cutoffs in nm")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--ase-max", type=int, default=1000, help="largest N timed with ASE (slow)")
    parser.add_argument("--matscipy-max", type=int, default=30000, help="largest N timed with matscipy")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats, args.ase_max = [500, 2000], 3, 0
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    run(args.sizes, args.cutoffs, args.repeats, args.device, args.ase_max, args.matscipy_max)


if __name__ == "__main__":
    main()
