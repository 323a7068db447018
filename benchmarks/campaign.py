"""Campaign throughput: N tiny hydration-window jobs through `run_campaign` (Dask LocalCluster, SQLite
claims, result hashing) vs the same job function on a plain `concurrent.futures` process pool.

Both use the same number of worker processes, warmed up first (imports, solute system); the
cluster's start-up is reported separately. Overhead per job = (T_campaign − T_pool) / N; relative
overhead = (T_campaign − T_pool) / T_pool (goal: < 5 %).

    python benchmarks/campaign.py [--jobs 1000] [--workers 2] [--samples 3]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import tempfile
import time
from pathlib import Path

CAMPAIGN = """\
name: bench
directory: state
lease_seconds: 60
min_overlap: 0.0
solutes:
  lj:
    system: lj-fluid
    options: {{n_particles: 27, density: 0.5, reduced_temperature: 1.5, cutoff: 1.8}}
    solute_atoms: [0]
jobs:
  - type: hydration
    solutes: [lj]
    lambdas: {{electrostatics: 2, sterics: 6}}
    repeats: {repeats}
    samples: {samples}
    steps_per_sample: 10
    equilibration_steps: 0
    minimize_iterations: 5
    timestep: 0.005
    platform: Reference
"""


def _campaign(folder: Path, jobs: int, samples: int):
    from molfree.campaign import load_campaign

    path = folder / "campaign.yaml"
    path.write_text(CAMPAIGN.format(repeats=math.ceil(jobs / 7), samples=samples))
    campaign = load_campaign(path)
    campaign.jobs = campaign.jobs[:jobs]
    return campaign


def _pool(campaign, workers: int) -> float:
    from molfree.campaign.runner import execute

    directory = str(campaign.directory / "pool")
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        list(pool.map(execute, [campaign.jobs[0].to_json()] * workers, [directory] * workers, range(workers)))
        start = time.perf_counter()
        list(pool.map(execute, [spec.to_json() for spec in campaign.jobs], [directory] * len(campaign.jobs),
                      [1] * len(campaign.jobs), chunksize=1))
        return time.perf_counter() - start


def _dask(campaign, workers: int) -> tuple[float, float]:
    from distributed import Client

    from molfree.campaign.runner import execute, make_cluster, run_campaign

    start = time.perf_counter()
    cluster = make_cluster(campaign.cluster, workers, campaign.directory / "dask-logs")
    with Client(cluster) as client:
        startup = time.perf_counter() - start
        client.run(execute, campaign.jobs[0].to_json(), str(campaign.directory / "warmup"), 1)
        seconds = run_campaign(campaign, client=client, progress=False)["seconds"]
    cluster.close()
    return startup, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=3, help="samples per window job (job size)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        campaign = _campaign(Path(folder), args.jobs, args.samples)
        pool = _pool(campaign, args.workers)
        startup, dask = _dask(campaign, args.workers)
    overhead = dask - pool
    print(json.dumps({
        "jobs": args.jobs, "workers": args.workers, "job_seconds_on_pool": pool * args.workers / args.jobs,
        "pool_jobs_per_min": 60 * args.jobs / pool, "campaign_jobs_per_min": 60 * args.jobs / dask,
        "cluster_startup_s": startup, "overhead_per_job_ms": 1000 * overhead / args.jobs,
        "overhead_percent": 100 * overhead / pool}, indent=2))


if __name__ == "__main__":
    main()
