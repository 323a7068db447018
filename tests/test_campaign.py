"""Campaigns: 21 hydration λ-window jobs (an LJ particle decoupled from a 8-particle LJ fluid) on Dask.

One LocalCluster (2 workers) is shared by the in-process runs; the kill-the-whole-run and
concurrent-run checks start their own `molfree campaign run` processes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from molfree.campaign import load_campaign  # noqa: E402
from molfree.campaign.report import gather, write_report  # noqa: E402
from molfree.campaign.runner import execute, make_cluster, run_campaign  # noqa: E402
from molfree.campaign.spec import ClusterConfig  # noqa: E402
from molfree.campaign.store import Store  # noqa: E402
from molfree.cli import main  # noqa: E402

CAMPAIGN = """\
name: lj-test
directory: state
lease_seconds: {lease}
min_overlap: 0.0
cluster: {{kind: local, workers: 1}}
solutes:
  lj:
    system: lj-fluid
    options: {{n_particles: 8, density: 0.5, reduced_temperature: 1.5, cutoff: 1.2}}
    solute_atoms: [0]
    experiment: -0.5
jobs:
  - type: hydration
    solutes: [lj]
    lambdas: {{electrostatics: 2, sterics: 6}}
    repeats: {repeats}
    samples: 10
    steps_per_sample: 5
    equilibration_steps: 10
    minimize_iterations: 10
    timestep: 0.005
    platform: Reference
"""


def write_campaign(folder: Path, repeats: int = 3, lease: float = 2.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "campaign.yaml"
    path.write_text(CAMPAIGN.format(repeats=repeats, lease=lease))
    return path


def arrays(campaign) -> dict[str, np.ndarray]:
    """``{job key: u}`` of a finished campaign."""
    store = Store(campaign.db_path)
    out = {}
    for spec in campaign.jobs:
        (record,) = store.files(spec.key)
        with np.load(campaign.directory / record.path) as data:
            out[spec.key] = data["u"]
    store.close()
    return out


def job_rows(campaign) -> dict[str, dict]:
    store = Store(campaign.db_path)
    rows = {row["key"]: dict(row) for row in store.jobs()}
    store.close()
    return rows


def cli_run(path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "molfree.cli", "campaign", "run", str(path), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from distributed import Client

    cluster = make_cluster(ClusterConfig(), 2, tmp_path_factory.mktemp("dask-logs"))
    with Client(cluster) as dask_client:
        yield dask_client
    cluster.close()


@pytest.fixture(scope="module")
def reference(client, tmp_path_factory):
    """The 21-job campaign run once to completion: the campaign and its ``u`` arrays."""
    campaign = load_campaign(write_campaign(tmp_path_factory.mktemp("reference")))
    summary = run_campaign(campaign, client=client, progress=False)
    assert summary["completed"] == len(campaign.jobs) == 21
    return campaign, arrays(campaign)


def test_campaign_runs_to_completion_gathers_and_reports(reference):
    campaign, _ = reference
    rows = job_rows(campaign)
    assert {row["status"] for row in rows.values()} == {"done"}
    assert all(row["computations"] == 1 and row["attempts"] == 1 for row in rows.values())
    results = gather(campaign)
    assert sorted(results) == ["lj/repeat-0", "lj/repeat-1", "lj/repeat-2"]
    assert all(r["status"] == "ok" and np.isfinite(r["dG_kcal_mol"]) for r in results.values())
    html = write_report(campaign).read_text()
    assert "lj/repeat-2" in html and html.count("data:image/png") == 2
    assert main(["campaign", "status", str(campaign.path)]) == 0
    # a rerun finds everything done and valid: nothing is submitted
    assert run_campaign(campaign, progress=False)["already_done"] == 21


def test_corrupted_and_partial_results_are_recomputed(client, reference, tmp_path):
    campaign = load_campaign(write_campaign(tmp_path, repeats=1))
    run_campaign(campaign, client=client, progress=False)
    store = Store(campaign.db_path)
    first, second = campaign.jobs[0], campaign.jobs[1]
    corrupt = campaign.directory / store.files(first.key)[0].path
    corrupt.write_bytes(b"x" * corrupt.stat().st_size)  # same size, wrong bytes
    partial = campaign.directory / store.files(second.key)[0].path
    partial.write_bytes(partial.read_bytes()[:100])  # truncated
    summary = run_campaign(campaign, client=client, progress=False)
    assert summary["completed"] == 2 and summary["already_done"] == len(campaign.jobs) - 2
    rows = job_rows(campaign)
    assert rows[first.key]["computations"] == rows[second.key]["computations"] == 2
    assert sum(row["computations"] for row in rows.values()) == len(campaign.jobs) + 2
    assert len(store.events("corrupt")) == 2
    for key, u in arrays(campaign).items():
        np.testing.assert_array_equal(u, reference[1][key])


def test_worker_killed_mid_job_is_retried_with_same_results(client, reference, tmp_path):
    campaign = load_campaign(write_campaign(tmp_path, repeats=1))
    thread = threading.Thread(target=run_campaign, args=(campaign,), kwargs={"client": client, "progress": False})
    thread.start()
    busy = {}
    while not busy and thread.is_alive():
        busy = {address: tasks for address, tasks in client.processing().items() if tasks}
        time.sleep(0.02)
    assert busy, "the run ended before a worker could be killed"
    time.sleep(0.1)
    pids = client.run(os.getpid)
    os.kill(pids[next(iter(busy))], signal.SIGKILL)
    thread.join(timeout=90)
    rows = job_rows(campaign)
    assert {row["status"] for row in rows.values()} == {"done"}
    assert any(row["attempts"] == 2 for row in rows.values())
    store = Store(campaign.db_path)
    assert any("KilledWorker" in event["detail"] for event in store.events("fail"))
    for key, u in arrays(campaign).items():
        np.testing.assert_array_equal(u, reference[1][key])


def wait_for_done(campaign, count: int, process: subprocess.Popen, timeout: float = 90.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and process.poll() is None:
        if campaign.db_path.exists() and sum(r["status"] == "done" for r in job_rows(campaign).values()) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"run did not finish {count} jobs: {process.communicate()[0].decode()[-2000:]}")


def test_run_left_by_a_crash_resumes_without_recomputing(client, reference, tmp_path):
    """Fast variant: the state a killed run leaves (2 jobs done, 1 leased to a dead owner) is resumed."""
    campaign = load_campaign(write_campaign(tmp_path, repeats=1, lease=1.0))
    store = Store(campaign.db_path)
    store.register(campaign.jobs, campaign.max_attempts)
    for spec in campaign.jobs[:2]:
        attempt = store.claim(spec.key, "dead-run", campaign.lease_seconds)
        assert store.complete(spec.key, "dead-run", execute(spec.to_json(), str(campaign.directory), attempt))
    assert store.claim(campaign.jobs[2].key, "dead-run", campaign.lease_seconds) == 1  # killed mid-job
    before = job_rows(campaign)
    summary = run_campaign(campaign, client=client, progress=False)
    assert summary["already_done"] == 2 and summary["completed"] == len(campaign.jobs) - 2
    after = job_rows(campaign)
    assert {row["status"] for row in after.values()} == {"done"}
    for spec in campaign.jobs[:2]:
        assert after[spec.key]["finished"] == before[spec.key]["finished"] and after[spec.key]["computations"] == 1
    assert after[campaign.jobs[2].key]["attempts"] == 2  # the dead run's lease expired, then it was redone
    for key, u in arrays(campaign).items():
        np.testing.assert_array_equal(u, reference[1][key])


def test_two_runs_in_one_process_do_not_duplicate_work(client, reference, tmp_path):
    """Fast variant: two runs (own owners and database connections) at once on one cluster."""
    campaign = load_campaign(write_campaign(tmp_path, repeats=1))
    summaries = []
    threads = [threading.Thread(target=lambda: summaries.append(run_campaign(campaign, client=client, progress=False)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    rows = job_rows(campaign)
    assert {row["status"] for row in rows.values()} == {"done"}
    assert all(row["computations"] == 1 and row["attempts"] == 1 for row in rows.values())
    assert sum(summary["completed"] for summary in summaries) == len(campaign.jobs)


@pytest.mark.slow
def test_killed_run_resumes_without_recomputing(client, reference, tmp_path):
    campaign = load_campaign(write_campaign(tmp_path, repeats=1))
    process = cli_run(campaign.path)
    wait_for_done(campaign, 2, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = {key: row for key, row in job_rows(campaign).items() if row["status"] == "done"}
    assert 2 <= len(before) < len(campaign.jobs)
    summary = run_campaign(campaign, client=client, progress=False)
    assert summary["already_done"] == len(before)
    after = job_rows(campaign)
    assert {row["status"] for row in after.values()} == {"done"}
    for key, row in before.items():  # finished work kept: same timestamp, computed once
        assert after[key]["finished"] == row["finished"] and after[key]["computations"] == 1
    for key, u in arrays(campaign).items():
        np.testing.assert_array_equal(u, reference[1][key])


@pytest.mark.slow
def test_two_runs_at_once_do_not_duplicate_work(client, reference, tmp_path):
    campaign = load_campaign(write_campaign(tmp_path, repeats=1))
    process = cli_run(campaign.path)
    wait_for_done(campaign, 1, process)  # the other run is going
    summary = run_campaign(campaign, client=client, progress=False)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 0, output[-2000:]
    rows = job_rows(campaign)
    assert {row["status"] for row in rows.values()} == {"done"}
    assert all(row["computations"] == 1 for row in rows.values())
    store = Store(campaign.db_path)
    assert len(store.events("done")) == len(campaign.jobs) and not store.events("stale")
    assert summary["completed"] + summary["already_done"] + summary["done_elsewhere"] == len(campaign.jobs)
    assert 0 < summary["completed"] < len(campaign.jobs)  # both runs did some of the work


@pytest.mark.parametrize("old, new, line, message", [
    ("  - type: hydration", "  - type: hydrolysis", 13, "unknown job type 'hydrolysis'"),
    ("    solutes: [lj]", "    solutes: [lj,\n      benzene]", 15, "missing solute 'benzene'"),
    ("    platform: Reference", "    platform: Reference\n    resources: {cores: 0}", 23, "cores must be >= 1"),
    ("    platform: Reference", "    platform: Reference\n    resources:\n      memory: lots", 24, "invalid memory"),
    ("  lj:\n", "  lj:\n    charge: 1\n", 8, "unknown key 'charge'"),
])
def test_bad_campaign_files_are_rejected_with_the_line(tmp_path, old, new, line, message):
    path = write_campaign(tmp_path)
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(ValueError, match=rf"campaign.yaml:{line}: .*{message}"):
        load_campaign(path)
    assert not (tmp_path / "state").exists()  # nothing ran
