"""Run a campaign with Dask: an embedded LocalCluster, or SLURM/PBS batch workers through dask-jobqueue.

The client (this process) claims each job in the store before submitting it, renews its leases
while it runs, and records results or failures; workers only compute and write their attempt's
files. Dask's own silent retries are off (``allowed-failures: 0``), so a worker that dies
mid-job surfaces as a failed attempt here and is retried up to the campaign's limit.

Short jobs travel in batches: one Dask task runs up to :data:`TASK_SECONDS` of jobs of one type
(sized from the durations measured so far; the first task of a type holds one job), so the
scheduler's and the database's per-task costs are paid once per batch. Each job of a batch keeps
its own lease, attempt folder and outcome; a worker that dies fails every job of its batch.

Scripts that call :func:`run_campaign` with the local cluster must do so under
``if __name__ == "__main__":`` (worker processes re-import the main module).
"""
from __future__ import annotations

import math
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


def execute_many(spec_jsons: list[str], directory: str, attempts: list[int]) -> list[tuple[list[FileRecord] | str, float]]:
    """Run a batch of job attempts (on a worker): per job, its file records or its error, and its seconds."""
    outcomes = []
    for spec_json, attempt in zip(spec_jsons, attempts):
        start = time.perf_counter()
        try:
            outcome = execute(spec_json, directory, attempt)
        except Exception as exc:  # noqa: BLE001 - a job's own error is a failed attempt of that job only
            outcome = f"{type(exc).__name__}: {exc}"
        outcomes.append((outcome, time.perf_counter() - start))
    return outcomes


def check_for(spec: JobSpec):
    """The result-file check of ``spec``'s type, bound to its parameters."""
    return lambda path: JOB_TYPES[spec.type].check(path, spec.params)


#: Dask settings of a campaign's cluster: no silent retries of tasks of dead workers (the runner retries
#: and counts them), and fewer housekeeping wake-ups (event-loop ticks, system and memory monitors, work
#: stealing, the statistical profiler), which otherwise cost an idle 2-worker LocalCluster ~18 % of a core.
DASK_CONFIG = {"distributed.scheduler.allowed-failures": 0,
               "distributed.admin.tick.interval": "200ms",
               "distributed.admin.system-monitor.interval": "2s",
               "distributed.worker.memory.monitor-interval": "1s",
               "distributed.scheduler.work-stealing-interval": "1s",
               "distributed.worker.profile.enabled": False}


def make_cluster(config: ClusterConfig, workers: int, log_directory: Path):
    """A started cluster of ``workers`` workers (local processes, or SLURM/PBS batch jobs of one worker each),
    with :data:`DASK_CONFIG` (local workers inherit it; batch workers keep their site's settings)."""
    import dask

    with dask.config.set(DASK_CONFIG):
        return _make_cluster(config, workers, log_directory)


def _make_cluster(config: ClusterConfig, workers: int, log_directory: Path):
    if config.kind == "local":
        from distributed import LocalCluster

        gpus = config.resources.gpus
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            resources={"GPU": gpus} if gpus else None)
    cluster = jobqueue_cluster(config, log_directory)
    if config.lifetime:  # retired workers (lifetime < walltime) are replaced by new batch jobs
        cluster.adapt(minimum_jobs=workers, maximum_jobs=workers)
    else:
        cluster.scale(jobs=workers)
    return cluster


def jobqueue_cluster(config: ClusterConfig, log_directory: Path):
    """The dask-jobqueue ``SLURMCluster`` or ``PBSCluster`` of ``config``, with no batch job submitted yet.

    Each batch job is one worker with the campaign's resources (GPUs: ``--gres=gpu:N`` on SLURM,
    ``ngpus=N`` on PBS, and the Dask worker resource ``GPU=N``) and, if set, a lifetime.
    """
    from dask.utils import parse_bytes
    from dask_jobqueue import PBSCluster, SLURMCluster
    from dask_jobqueue.pbs import pbs_format_bytes_ceil

    resources = config.resources
    extra_args = ["--resources", f"GPU={resources.gpus}"] if resources.gpus else []
    if config.lifetime:
        extra_args += ["--lifetime", config.lifetime, "--lifetime-stagger", config.lifetime_stagger]
    common = dict(cores=resources.cores, processes=1, memory=resources.memory, walltime=resources.walltime,
                  queue=config.queue, account=config.account, worker_extra_args=extra_args,
                  log_directory=str(log_directory), python=sys.executable)
    if config.kind == "slurm":
        return SLURMCluster(job_extra_directives=[f"--gres=gpu:{resources.gpus}"] if resources.gpus else [],
                            **common)
    spec = f"select=1:ncpus={resources.cores}:mem={pbs_format_bytes_ceil(parse_bytes(resources.memory))}"
    return PBSCluster(resource_spec=spec + (f":ngpus={resources.gpus}" if resources.gpus else ""), **common)


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


#: Target length (s) of one Dask task: jobs shorter than this are batched.
TASK_SECONDS = 2.0
#: Most jobs in one Dask task.
MAX_BATCH = 64


class _Run:
    """One run's claim → submit → record loop (see :func:`run_campaign`)."""

    def __init__(self, campaign: Campaign, store: Store, client, todo: Iterable[JobSpec]):
        from distributed import as_completed

        self.campaign, self.store, self.client = campaign, store, client
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.waiting = {spec.key: spec for spec in todo}
        self.in_flight: dict = {}
        self.futures = as_completed(with_results=True, raise_errors=False)
        self.summary = {"completed": 0, "failed_attempts": 0, "failed_jobs": 0, "done_elsewhere": 0}
        self.job_seconds: dict[str, float] = {}  # running mean of one job's duration, per type
        self.threads, self.threads_checked = 1, -1.0

    def batch_size(self, job_type: str) -> int:
        """Jobs per task: :data:`TASK_SECONDS` of measured work, but at most a quarter of the waiting
        jobs per worker thread (so the last tasks are small and another run finds work)."""
        if job_type not in self.job_seconds:
            return 1
        fair = math.ceil(len(self.waiting) / (4 * self.threads))
        return max(1, min(int(TASK_SECONDS / max(self.job_seconds[job_type], 1e-6)), fair, MAX_BATCH))

    def claim_and_submit(self) -> int:
        """Claim and submit batches while fewer than 2 tasks per worker thread are in flight; returns how
        many jobs turned out finished elsewhere."""
        if time.monotonic() >= self.threads_checked + 1.0:  # workers come and go (batch jobs)
            self.threads = max(1, sum(self.client.nthreads().values()))
            self.threads_checked = time.monotonic()
        finished, skipped = 0, set()
        while len(self.in_flight) < 2 * self.threads:
            candidates = [spec for key, spec in self.waiting.items() if key not in skipped]
            if not candidates:
                break
            first = candidates[0]
            batch = [spec for spec in candidates if spec.type == first.type and spec.resources == first.resources]
            batch = batch[:self.batch_size(first.type)]
            claimed, ended = self.store.claim([spec.key for spec in batch], self.owner, self.campaign.lease_seconds)
            for key, status in ended.items():
                del self.waiting[key]
                self.summary["done_elsewhere" if status == "done" else "failed_jobs"] += 1
            finished += len(ended)
            skipped.update(spec.key for spec in batch if spec.key not in claimed)  # leased to another run
            batch = [self.waiting.pop(spec.key) for spec in batch if spec.key in claimed]
            if batch:
                resources = {"GPU": first.resources.gpus} if first.resources.gpus else None
                future = self.client.submit(execute_many, [spec.to_json() for spec in batch],
                                            str(self.campaign.directory), [claimed[spec.key] for spec in batch],
                                            key=f"{first.type}-{first.key[:16]}-{self.owner}-{claimed[first.key]}",
                                            resources=resources)
                self.in_flight[future] = batch
                self.futures.add(future)
        return finished

    def record(self, future, result) -> int:
        """Store a finished task's outcomes; returns how many of its jobs are finished for good."""
        batch = self.in_flight.pop(future)
        if future.status == "error" or isinstance(result, BaseException):  # the task died (e.g. its worker)
            exc = result[1] if future.status == "error" else result
            result = [(f"{type(exc).__name__}: {exc}", None)] * len(batch)
        states = self.store.settle(self.owner, {spec.key: outcome for spec, (outcome, _) in zip(batch, result)})
        seconds = [s for (outcome, s) in result if s is not None and not isinstance(outcome, str)]
        if seconds:
            mean = sum(seconds) / len(seconds)
            previous = self.job_seconds.get(batch[0].type, mean)
            self.job_seconds[batch[0].type] = 0.7 * previous + 0.3 * mean
        finished = 0
        for spec in batch:
            state = states[spec.key]
            self.summary["completed"] += state == "done"
            self.summary["failed_attempts"] += state in ("retry", "failed")
            self.summary["failed_jobs"] += state == "failed"
            if state == "retry":
                self.waiting[spec.key] = spec
            else:
                finished += 1
        return finished


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
        for future, result in batch:
            bar.update(run.record(future, result))
        if run.waiting and (batch or now >= next_claim):
            bar.update(run.claim_and_submit())
            next_claim = now + min(1.0, lease / 4)
        if not batch:
            time.sleep(0.02)
