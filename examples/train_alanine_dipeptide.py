"""End to end on CPU in minutes: alanine dipeptide MD (OpenMM, 300 and 600 K) -> GFN2-xTB labels -> training.

    python examples/train_alanine_dipeptide.py [--out runs/example-alanine-xtb] [--frames 150]

Writes frames.xyz, labelled.xyz and train/ (metrics.json, learning_curves.png, model.pt) under --out
and prints the test MAEs. Every step resumes: rerunning after an interruption reuses finished work.
"""
import os

# tblite's OpenMP oversubscribes a shared machine (measured here: 0.6 s instead of 0.03 s per structure).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from molfree.potentials.training import load_config, train  # noqa: E402
from molfree.workflows.potential_data import make_reference, run_label, run_sample  # noqa: E402

CONFIG = Path(__file__).with_suffix(".yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/example-alanine-xtb")
    parser.add_argument("--frames", type=int, default=150, help="MD frames per temperature (default: 150)")
    args = parser.parse_args()
    out = Path(args.out)
    start = time.perf_counter()
    frames = out / "frames.xyz"
    if not frames.is_file():
        run_sample(frames, [300.0, 600.0], args.frames, system="alanine-dipeptide-vacuum", interval_ps=0.5)
    labelled = out / "labelled.xyz"
    if not labelled.is_file():
        run_label(frames, labelled, make_reference("xtb", charge=0, multiplicity=1), chunk_size=50)
    config = load_config(CONFIG)
    config.data = str(labelled)
    test = train(config, out / "train")["test"]
    print(f"test energy MAE {test['energy_mae_mev_per_atom']:.2f} meV/atom, "
          f"force MAE {test['force_mae_mev_per_angstrom']:.1f} meV/Å; "
          f"wall time {time.perf_counter() - start:.0f} s; results in {out / 'train'}")


if __name__ == "__main__":
    main()
