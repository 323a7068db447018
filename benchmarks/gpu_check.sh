#!/usr/bin/env bash
# Neighbor-list comparison on CUDA: molfree's Warp kernels on the GPU, vesin on the CPU as the
# anchor (and vesin-torch on the GPU when installed). Exits 0 with a message when no GPU is present.
# Usage: benchmarks/gpu_check.sh [extra arguments for benchmarks/neighbors.py, e.g. --quick]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to torch; nothing to do."
    exit 0
fi

echo "gpu_check: pair sets on CUDA against vesin (CPU)"
python - <<'PY'
import numpy as np
import torch
import vesin

from molfree.neighbors import neighbor_list



def rows(nl):
    return {tuple(r) for r in torch.cat([nl.i[:, None], nl.j[:, None], nl.shifts], 1).cpu().tolist() if r[0] >= 0}


rng = np.random.default_rng(0)
tiny = np.array([[0.6, 0, 0], [0.2, 0.5, 0], [-0.1, 0.2, 0.55]])
for n, cutoff, box in [(3000, 0.6, np.eye(3) * 3.1), (40, 0.9, tiny)]:
    x = rng.uniform(-0.5, 1.5, size=(n, 3)) @ box
    for dtype in (torch.float64, torch.float32):
        positions = torch.tensor(x, dtype=dtype, device="cuda")
        xr = positions.double().cpu().numpy()
        calculator = vesin.NeighborList(cutoff=cutoff, full_list=True)
        i, j, s = calculator.compute(points=xr, box=box, periodic=True, quantities="ijS")
        ref = {tuple(r) for r in np.concatenate([i[:, None], j[:, None], s], 1).astype(np.int64).tolist()}
        for method in ("brute", "cell"):
            half = neighbor_list(positions, cutoff, box=box, method=method)
            full = neighbor_list(positions, cutoff, box=box, method=method, half=False)
            padded = neighbor_list(positions, cutoff, box=box, method=method, max_pairs=len(half.i) + 5)
            ok = (rows(full) == ref and 2 * len(half.i) == len(ref) and rows(padded) == rows(half)
                  and not bool(padded.overflow))
            print(f"  N={n} cutoff={cutoff} {dtype} {method}: {'OK' if ok else 'MISMATCH'} ({len(half.i)} half pairs)")
PY

python benchmarks/neighbors.py --device cuda "$@"
