"""Campaign throughput: N tiny hydration-window jobs through `run_campaign` (Dask LocalCluster, SQLite
claims, result hashing) vs the same job function on a plain `concurrent.futures` process pool.

The tiny job is the same function in both: `molfree.campaign.runner.execute` on the same job specs
(each writes, checks and hashes its result file). Both use the same number of worker processes,
warmed up first (imports, solute system); the cluster's start-up is reported separately. The pool
runs before and after the campaign and its mean wall time is the baseline T_pool (the machine is
shared, so its load drifts). Overhead = T_campaign − T_pool: per job (ms) = overhead / N,
relative (%) = overhead / T_pool (goal: < 5 %). Wall times depend on what else runs on the machine,
so the same figures are also given in CPU time (user + system of this process and all its worker
processes during the timed part): C_campaign − C_pool is the scheduler's cost whatever the load.

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


def _cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process and its live descendants."""
    import psutil

    total = 0.0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _pool(campaign, workers: int) -> tuple[float, float]:
    """Wall and CPU seconds of the jobs on a warm process pool."""
    from molfree.campaign.runner import execute

    directory = str(campaign.directory / "pool")
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        list(pool.map(execute, [campaign.jobs[0].to_json()] * workers, [directory] * workers, range(workers)))
        cpu, start = _cpu_seconds(), time.perf_counter()
        list(pool.map(execute, [spec.to_json() for spec in campaign.jobs], [directory] * len(campaign.jobs),
                      [1] * len(campaign.jobs), chunksize=1))
        return time.perf_counter() - start, _cpu_seconds() - cpu


def _dask(campaign, workers: int) -> tuple[float, float, float]:
    """Cluster start-up (s), and wall and CPU seconds of the campaign on the warm cluster."""
    from distributed import Client

    from molfree.campaign.runner import execute, make_cluster, run_campaign

    start = time.perf_counter()
    cluster = make_cluster(campaign.cluster, workers, campaign.directory / "dask-logs")
    with Client(cluster) as client:
        startup = time.perf_counter() - start
        client.run(execute, campaign.jobs[0].to_json(), str(campaign.directory / "warmup"), 1)
        cpu = _cpu_seconds()
        seconds = run_campaign(campaign, client=client, progress=False)["seconds"]
        cpu = _cpu_seconds() - cpu
    cluster.close()
    return startup, seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=3, help="samples per window job (job size)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        campaign = _campaign(Path(folder), args.jobs, args.samples)
        pool_before = _pool(campaign, args.workers)
        startup, dask, dask_cpu = _dask(campaign, args.workers)
        pool_after = _pool(campaign, args.workers)
    pool, pool_cpu = ((before + after) / 2 for before, after in zip(pool_before, pool_after))
    print(json.dumps({
        "jobs": args.jobs, "workers": args.workers, "job_seconds_on_pool": pool * args.workers / args.jobs,
        "pool_wall_s_before_after": [pool_before[0], pool_after[0]], "campaign_wall_s": dask,
        "pool_jobs_per_min": 60 * args.jobs / pool, "campaign_jobs_per_min": 60 * args.jobs / dask,
        "cluster_startup_s": startup,
        "overhead_per_job_ms": 1000 * (dask - pool) / args.jobs, "overhead_percent": 100 * (dask - pool) / pool,
        "pool_cpu_s_before_after": [pool_before[1], pool_after[1]], "campaign_cpu_s": dask_cpu,
        "cpu_overhead_per_job_ms": 1000 * (dask_cpu - pool_cpu) / args.jobs,
        "cpu_overhead_percent": 100 * (dask_cpu - pool_cpu) / pool_cpu}, indent=2))


if __name__ == "__main__":
    main()
