#!/usr/bin/env bash
# Adjoint sampler on CUDA, sized for a short GPU lease: the CUDA test of tests/test_samplers.py, then
# LJ-13 and LJ-55 with the benchmark's settings trained for a few iterations on the GPU, printing energy
# evaluations per second and the hours the full budgets (1e6, 2e6) would take. Exits 0 with a message when
# no GPU is present. The full run is then
#     python benchmarks/adjoint_sampling.py --targets lj55 --device cuda --checkpoints runs/benchmarks/adjoint
# Usage: benchmarks/gpu_check_adjoint.sh [iterations per target, default 20]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check_adjoint: no CUDA device visible to torch; nothing to do."
    exit 0
fi

python -m pytest -q tests/test_samplers.py -k cuda

python - "${1:-20}" <<'PY'
import sys
import time

import torch

sys.path.insert(0, "benchmarks")
import adjoint_sampling as bench  # noqa: E402

from molfree.samplers import AdjointSampler  # noqa: E402

iterations = int(sys.argv[1])
print(f"device: {torch.cuda.get_device_name()}")
for name in ("lj13", "lj55"):
    target = bench.TARGETS[name]
    torch.manual_seed(0)
    sampler = AdjointSampler(target.energy(), bench.drift(target), bench.T, target.config, device="cuda")
    sampler.train(max_iterations=1, progress=False)  # warm-up: kernels, allocator
    torch.cuda.synchronize()
    start, evals = time.perf_counter(), sampler.energy_evaluations
    sampler.train(max_iterations=1 + iterations, progress=False)
    torch.cuda.synchronize()
    rate = (sampler.energy_evaluations - evals) / (time.perf_counter() - start)
    start = time.perf_counter()
    res = sampler.sample(1000, n_steps=target.sample_steps)
    torch.cuda.synchronize()
    print(f"{name}: {rate:.0f} energy evaluations/s in training ({iterations} iterations), budget "
          f"{target.budget:.0e} in {target.budget / rate / 3600:.2f} h; 1000 samples x {target.sample_steps} "
          f"steps in {time.perf_counter() - start:.1f} s (mean E/kT {res.reduced_energies.mean():.3g} "
          f"after {sampler.energy_evaluations - 1000} evaluations)")
PY
