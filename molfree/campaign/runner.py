"""Run a campaign with Dask: an embedded LocalCluster, or SLURM/PBS batch workers through dask-jobqueue.

The client (this process) claims each job in the store before submitting it, renews its leases
while it runs, and records results or failures; workers only compute and write their attempt's
files. Dask's own silent retries are off (``allowed-failures: 0``), so a worker that dies
mid-job surfaces as a failed attempt here and is retried up to the campaign's limit.

Scripts that call :func:`run_campaign` with the local cluster must do so under
``if __name__ == "__main__":`` (worker processes re-import the main module).
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from .spec import JOB_TYPES, Campaign, ClusterConfig, JobSpec
from .store import FileRecord, Store, describe_file


def attempt_dir(directory: Path, key: str, attempt: int) -> Path:
    """Where attempt ``attempt`` of job ``key`` writes its files."""
    return directory / "jobs" / key[:2] / key / f"attempt-{attempt}"


def execute(spec_json: str, directory: str, attempt: int) -> list[FileRecord]:
    """Run one job attempt (on a worker): write, check and describe its result files."""
    spec = JobSpec.from_json(spec_json)
    job_type = JOB_TYPES[spec.type]
    out = attempt_dir(Path(directory), spec.key, attempt)
    shutil.rmtree(out, ignore_errors=True)  # leftovers of a crashed attempt with this number
    out.mkdir(parents=True)
    records = []
    for name in job_type.run(spec.params, out, spec.resources.cores):
        job_type.check(out / name, spec.params)
        records.append(describe_file(Path(directory), name, out / name))
    return records


def check_for(spec: JobSpec):
    """The result-file check of ``spec``'s type, bound to its parameters."""
    return lambda path: JOB_TYPES[spec.type].check(path, spec.params)


def make_cluster(config: ClusterConfig, workers: int, log_directory: Path):
    """A started cluster of ``workers`` workers (local processes, or SLURM/PBS batch jobs of one worker each).

    Its scheduler does not retry tasks of dead workers itself (:func:`run_campaign` does, and counts them).
    """
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        return _make_cluster(config, workers, log_directory)


def _make_cluster(config: ClusterConfig, workers: int, log_directory: Path):
    resources = config.resources
    if config.kind == "local":
        from distributed import LocalCluster

        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            resources={"GPU": resources.gpus} if resources.gpus else None)
    from dask_jobqueue import PBSCluster, SLURMCluster

    extra_args = ["--resources", f"GPU={resources.gpus}"] if resources.gpus else []
    if config.lifetime:
        extra_args += ["--lifetime", config.lifetime, "--lifetime-stagger", config.lifetime_stagger]
    common = dict(cores=resources.cores, processes=1, memory=resources.memory, walltime=resources.walltime,
                  queue=config.queue, account=config.account, worker_extra_args=extra_args,
                  log_directory=str(log_directory), python=sys.executable)
    if config.kind == "slurm":
        gres = [f"--gres=gpu:{resources.gpus}"] if resources.gpus else []
        cluster = SLURMCluster(job_extra_directives=gres, **common)
    else:
        spec = f"select=1:ncpus={resources.cores}:mem={resources.memory}"
        cluster = PBSCluster(resource_spec=spec + (f":ngpus={resources.gpus}" if resources.gpus else ""), **common)
    if config.lifetime:  # retired workers (lifetime < walltime) are replaced by new batch jobs
        cluster.adapt(minimum_jobs=workers, maximum_jobs=workers)
    else:
        cluster.scale(jobs=workers)
    return cluster


def status_table(store: Store) -> str:
    """Jobs per type and status, and attempts, as a fixed-width table."""
    columns = ("pending", "running", "done", "failed")
    lines = [f"{'type':<12}" + "".join(f"{c:>9}" for c in columns) + f"{'attempts':>10}"]
    attempts: dict[str, int] = {}
    for row in store.jobs():
        attempts[row["type"]] = attempts.get(row["type"], 0) + row["attempts"]
    for job_type, counts in sorted(store.counts().items()):
        lines.append(f"{job_type:<12}" + "".join(f"{counts.get(c, 0):>9}" for c in columns)
                     + f"{attempts[job_type]:>10}")
    return "\n".join(lines)


class _Run:
    """One run's claim → submit → record loop (see :func:`run_campaign`)."""

    def __init__(self, campaign: Campaign, store: Store, client, todo: Iterable[JobSpec]):
        from distributed import as_completed

        self.campaign, self.store, self.client = campaign, store, client
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.waiting = {spec.key: spec for spec in todo}
        self.in_flight: dict = {}
        self.futures = as_completed()
        self.summary = {"completed": 0, "failed_attempts": 0, "failed_jobs": 0, "done_elsewhere": 0}
        self.capacity, self.capacity_checked = 4, -1.0

    def claim_and_submit(self) -> int:
        """Claim and submit up to the cluster's capacity; returns how many jobs turned out finished elsewhere.

        A run holds at most ``4 × worker threads`` jobs (at least 4), so a second run of the same
        campaign finds work to claim.
        """
        if time.monotonic() >= self.capacity_checked + 1.0:  # workers come and go (batch jobs)
            self.capacity = max(4, 4 * sum(self.client.nthreads().values()))
            self.capacity_checked = time.monotonic()
        finished = 0
        for key, spec in list(self.waiting.items()):
            if len(self.in_flight) >= self.capacity:
                break
            attempt = self.store.claim(key, self.owner, self.campaign.lease_seconds)
            if attempt is None:
                status = self.store.job(key)["status"]
                if status in ("done", "failed"):
                    del self.waiting[key]
                    self.summary["done_elsewhere" if status == "done" else "failed_jobs"] += 1
                    finished += 1
                continue
            del self.waiting[key]
            resources = {"GPU": spec.resources.gpus} if spec.resources.gpus else None
            future = self.client.submit(execute, spec.to_json(), str(self.campaign.directory), attempt,
                                        key=f"{spec.type}-{key[:16]}-{self.owner}-{attempt}", resources=resources)
            self.in_flight[future] = spec
            self.futures.add(future)
        return finished

    def record(self, future) -> bool:
        """Store a finished future's outcome; True if its job is finished for good."""
        spec = self.in_flight.pop(future)
        try:
            records = future.result()
        except Exception as exc:  # noqa: BLE001 - a job's own error or a dead worker: both are failed attempts
            self.summary["failed_attempts"] += 1
            if self.store.fail(spec.key, self.owner, f"{type(exc).__name__}: {exc}"):
                self.waiting[spec.key] = spec
                return False
            self.summary["failed_jobs"] += 1
            return True
        if self.store.complete(spec.key, self.owner, records):
            self.summary["completed"] += 1
        return True


def run_campaign(campaign: Campaign, cluster: str | None = None, workers: int | None = None, client=None,
                 progress: bool = True, status_every: float = 30.0, retry_failed: bool = False) -> dict:
    """Run every job of ``campaign`` whose results are not present and valid; returns counters.

    Args:
        cluster: ``local``, ``slurm`` or ``pbs`` (None: the campaign's ``cluster.kind``).
        workers: number of workers / batch jobs (None: the campaign's ``cluster.workers``).
        client: an existing ``distributed.Client`` to use instead of starting a cluster (start it with
            :func:`make_cluster`, or Dask retries tasks of dead workers without counting them).
        progress: tqdm bar and a status table every ``status_every`` seconds on stderr.
        retry_failed: give jobs that used up their attempts in earlier runs a fresh set.
    """
    from distributed import Client
    from tqdm import tqdm

    start = time.perf_counter()
    store = Store(campaign.db_path)
    store.register(campaign.jobs, campaign.max_attempts)
    if retry_failed:
        store.reset_failed()
    todo = [spec for spec in campaign.jobs if not store.verify(spec.key, check_for(spec))]
    summary = {"jobs": len(campaign.jobs), "already_done": len(campaign.jobs) - len(todo)}
    if todo:
        config = campaign.cluster if cluster is None else ClusterConfig(**{**asdict(campaign.cluster), "kind": cluster,
                                                                           "resources": campaign.cluster.resources})
        own_cluster = None if client is not None else make_cluster(config, workers or config.workers,
                                                                   campaign.directory / "dask-logs")
        own_client = None if client is not None else Client(own_cluster)
        run = _Run(campaign, store, client or own_client, todo)
        bar = tqdm(total=len(campaign.jobs), initial=summary["already_done"], desc=campaign.name,
                   disable=not progress, unit="job")
        try:
            _loop(run, bar, progress, status_every)
        finally:
            store.release(run.owner)
            bar.close()
            if own_client is not None:
                own_client.close()
                own_cluster.close()
        summary.update(run.summary)
    if progress:
        print(status_table(store), file=sys.stderr)
    store.close()
    return {**summary, "seconds": time.perf_counter() - start}


def _loop(run: _Run, bar, progress: bool, status_every: float) -> None:
    lease = run.campaign.lease_seconds
    next_claim = next_renew = next_status = 0.0
    while run.waiting or run.in_flight:
        now = time.monotonic()
        if now >= next_renew:
            run.store.renew(run.owner, lease)
            next_renew = now + lease / 4
        if progress and now >= next_status:
            bar.write(status_table(run.store))
            next_status = now + status_every
        batch = run.futures.next_batch(block=False) if not run.futures.is_empty() else []
        for future in batch:
            bar.update(run.record(future))
        if run.waiting and (batch or now >= next_claim):
            bar.update(run.claim_and_submit())
            next_claim = now + min(1.0, lease / 4)
        if not batch:
            time.sleep(0.02)
