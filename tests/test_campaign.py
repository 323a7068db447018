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

from molfree.campaign import JobSpec, load_campaign  # noqa: E402
from molfree.campaign.report import gather, write_report  # noqa: E402
from molfree.campaign.runner import execute, execute_many, make_cluster, run_campaign  # noqa: E402
from molfree.campaign.spec import JOB_TYPES, ClusterConfig  # noqa: E402
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


def executing_tasks(dask_worker) -> int:
    """How many tasks a worker is computing (run on the worker by ``client.run``)."""
    return len(dask_worker.state.executing)


def test_worker_killed_mid_job_is_retried_with_same_results(client, reference, tmp_path):
    campaign = load_campaign(write_campaign(tmp_path, repeats=1))
    thread = threading.Thread(target=run_campaign, args=(campaign,), kwargs={"client": client, "progress": False})
    thread.start()
    pids = client.run(os.getpid)
    busy = []
    while not busy and thread.is_alive():
        # a worker that is computing a task now (a task that has finished but is not yet gathered is
        # recomputed by Dask under the same attempt number: not the case tested here)
        busy = [address for address, n in client.run(executing_tasks).items() if n]
    assert busy, "the run ended before a worker could be killed"
    os.kill(pids[busy[0]], signal.SIGKILL)
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
    claimed, _ = store.claim([spec.key for spec in campaign.jobs[:3]], "dead-run", campaign.lease_seconds)
    assert set(claimed.values()) == {1}
    outcomes = {spec.key: execute(spec.to_json(), str(campaign.directory), 1) for spec in campaign.jobs[:2]}
    assert set(store.settle("dead-run", outcomes).values()) == {"done"}  # the third was killed mid-job
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


def test_a_failing_job_fails_alone_in_its_batch_then_runs_out_of_attempts(tmp_path):
    campaign = load_campaign(write_campaign(tmp_path, repeats=1))
    good = campaign.jobs[0]
    bad = JobSpec("hydration", {**good.params, "platform": "NoSuchPlatform"}, group="bad")
    store = Store(campaign.db_path)
    store.register([bad, good], max_attempts=2)
    claimed, _ = store.claim([bad.key, good.key], "run", 60.0)
    assert claimed == {bad.key: 1, good.key: 1}
    (error, _), (records, seconds) = execute_many([bad.to_json(), good.to_json()], str(campaign.directory), [1, 1])
    assert "NoSuchPlatform" in error and [r.name for r in records] == ["u_kn.npz"] and seconds > 0
    assert store.settle("run", {bad.key: error, good.key: records}) == {bad.key: "retry", good.key: "done"}
    assert store.claim([bad.key, good.key], "run", 60.0) == ({bad.key: 2}, {good.key: "done"})
    assert store.settle("run", {bad.key: error}) == {bad.key: "failed"}
    assert store.settle("run", {bad.key: error}) == {bad.key: "stale"}  # no longer this run's
    assert store.claim([bad.key], "run", 60.0) == ({}, {bad.key: "failed"})
    assert [event["kind"] for event in store.events() if event["key"] == bad.key] == [
        "claim", "fail", "claim", "fail", "stale"]


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


OTHER_TYPES = """\
name: other-types
directory: state
cluster: {kind: local, workers: 1}
jobs:
  - type: crystal
    compositions: [Cu]
    calculator: emt
    n: 1
    max_atoms: 1
    fmax: 0.05
    steps: 80
  - type: potential
    name: ar3
    config: {data: ar3.xyz, max_steps: 4, batch_size: 4, val_fraction: 0.2, test_fraction: 0.2,
             model: {channels: 4, l_max: 1, n_layers: 1, radial_hidden: 8, cutoff: 0.6}}
  - type: bg
    systems: [alanine-dipeptide-vacuum]
    reference_ps: 0.5
    n_layers: 2
    hidden: 8
    n_bins: 4
    ml_steps: 3
    kl_steps: 0
    batch_size: 16
    n_samples: 16
    umbrella_windows: 6
    umbrella_k: 5.0
    umbrella_ps: 0.1
  - type: conformers
    smiles: [CCCC]
    n: 3
    relax: mmff
    budget: 1
    reference_embeddings: 10
"""


def write_ar3(path: Path) -> None:
    """20 perturbed Ar3 triangles labelled by ASE's Lennard-Jones (eV, Å)."""
    from ase import Atoms
    from ase.calculators.lj import LennardJones

    from molfree.potentials.data import write_xyz

    rng = np.random.default_rng(0)
    frames = []
    for _ in range(20):
        atoms = Atoms("Ar3", positions=[[0, 0, 0], [3.8, 0, 0], [1.9, 3.3, 0]] + rng.normal(0, 0.15, (3, 3)))
        atoms.calc = LennardJones(sigma=3.4, epsilon=0.0104, rc=6.0)
        atoms.get_forces()
        frames.append(atoms)
    write_xyz(path, frames)


def one_type_campaign(folder: Path, job_type: str, edit: tuple[str, str] | None = None):
    """The campaign of OTHER_TYPES's ``job_type`` job alone (with its training data), ``edit`` (old, new) made."""
    header, *entries = OTHER_TYPES.split("  - type: ")
    write_ar3(folder / "ar3.xyz")
    entry = next(e for e in entries if e.startswith(job_type))
    (folder / "campaign.yaml").write_text(header + "  - type: " + (entry.replace(*edit, 1) if edit else entry))
    return load_campaign(folder / "campaign.yaml")


def run_one(client, campaign) -> tuple[dict, list[str]]:
    """Run a one-job campaign; its gathered result and the names of its result files."""
    assert run_campaign(campaign, client=client, progress=False)["completed"] == 1
    (result,) = gather(campaign).values()
    assert result["status"] == "ok", result
    store = Store(campaign.db_path)
    names = sorted(record.name for record in store.files(campaign.jobs[0].key))
    store.close()
    return result, names


def test_crystal_job(client, tmp_path):
    campaign = one_type_campaign(tmp_path, "crystal")
    result, names = run_one(client, campaign)
    assert names == ["results.json"]
    assert result["relaxations"] == result["unique"] == 1 and result["lowest_energy_per_atom_eV"] < 0.1
    assert "composition: Cu, calculator: emt, relaxations: 1" in write_report(campaign).read_text()


@pytest.mark.slow  # 25-55 s here: imports (e3nn, matplotlib) in the worker and the learning-curve plot
def test_potential_job_and_its_partial_model_file(client, tmp_path):
    campaign = one_type_campaign(tmp_path, "potential")
    result, names = run_one(client, campaign)
    assert names == ["metrics.json", "model.pt"]
    assert result["steps"] == 4 and np.isfinite(result["test_force_mae_mev_per_angstrom"])
    store = Store(campaign.db_path)
    model = campaign.directory / store.files(campaign.jobs[0].key)[1].path
    model.write_bytes(model.read_bytes()[:200])  # a partial model file is detected and the job rerun
    assert run_campaign(campaign, client=client, progress=False)["completed"] == 1
    assert store.job(campaign.jobs[0].key)["computations"] == 2 and len(store.events("corrupt")) == 1


@pytest.mark.slow  # 10-30 s here: replica-exchange reference, flow training, sampling, equal-budget MD
def test_bg_job(client, tmp_path):
    result, names = run_one(client, one_type_campaign(tmp_path, "bg"))
    assert names == ["metrics.json"]
    assert result["system"] == "alanine-dipeptide-vacuum" and 0 < result["ess"] <= 1


def test_conformers_job(client, tmp_path):
    """Butane, 3 conformers from the untrained sampler (budget < one iteration), relaxed, deduplicated and
    compared with a 10-embedding ETKDG reference."""
    campaign = one_type_campaign(tmp_path, "conformers")
    (spec,) = campaign.jobs
    assert spec.group == "conformers/CCCC/seed-0" and spec.params["energy_sha256"] is None
    result, names = run_one(client, campaign)
    assert names == ["conformers.sdf", "metrics.json"]
    assert 1 <= result["unique"] <= result["generated"] == 3 and result["torsions"] == 1
    assert result["lowest_energy_kj_mol"] < 0 and 3 <= result["energy_evaluations"] < 200  # no training iteration
    assert 0 < result["recall_1A"] <= 1 and 0 < result["etkdg_recall_1A"] <= 1 and result["reference_conformers"] >= 1
    assert "smiles: CCCC, seed: 0, energy: MMFF94 (RDKit)" in write_report(campaign).read_text()
    assert run_campaign(campaign, client=client, progress=False)["already_done"] == 1
    store = Store(campaign.db_path)
    text = (campaign.directory / store.files(spec.key)[0].path).read_text()
    store.close()
    for cut in (len(text) // 3, len(text) - 6):  # mid-record; the last record without its "$$$$"
        (tmp_path / "partial.sdf").write_text(text[:cut])
        with pytest.raises(ValueError, match="cut short"):
            JOB_TYPES["conformers"].check(tmp_path / "partial.sdf", spec.params)


def test_conformers_model_file_is_part_of_the_job(tmp_path):
    """``energy: <model file>`` is resolved beside the campaign file and its SHA-256 is in the key; a job whose
    model changed after loading refuses to run."""
    import torch

    from molfree.potentials import EquivariantPotential, save

    def model_job(seed: int) -> JobSpec:
        torch.manual_seed(seed)
        save(EquivariantPotential(["H", "C"], cutoff=0.4, channels=4, l_max=1, n_layers=1), tmp_path / "m.molfree")
        (spec,) = one_type_campaign(tmp_path, "conformers", ("    n: 3", "    n: 3\n    energy: m.molfree")).jobs
        return spec

    first, second = model_job(0), model_job(1)
    assert first.params["energy"] == second.params["energy"] == str(tmp_path / "m.molfree")
    assert first.params["energy_sha256"] != second.params["energy_sha256"] and first.key != second.key
    with pytest.raises(ValueError, match="m.molfree changed since the campaign was loaded"):
        JOB_TYPES["conformers"].run(first.params, tmp_path / "out", 1)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("old, new, line, message", [
    ("    compositions: [Cu]", "    compositions: [Cu, Xq]", 6, "unknown element 'Xq'"),
    ("    compositions: [Cu]", "    compositions: [Cu,\n      NaCl]", 7, "emt covers .*not \\['Cl', 'Na'\\]"),
    ("    steps: 80", "    steps: 0", 11, "steps must be >= 1"),
    ("max_steps: 4,", "max_steps: 4, dtype: float16,", 14, "dtype must be"),
    ("{data: ar3.xyz,", "{data: missing.xyz,", 14, "training data .*missing.xyz not found"),
    ("    name: ar3", "    name: ar3\n    epochs: 3", 14, "unknown key 'epochs'"),
    ("    systems: [alanine-dipeptide-vacuum]", "    systems: [chignolin]", 17, "bg system must be one of"),
    ("    hidden: 8", "    hidden: 8.5", 20, "hidden must be an integer"),
    ("    umbrella_windows: 6", "    umbrella_windows: 2", 26, "umbrella_windows must be >= 4"),
    ("    smiles: [CCCC]", "    smiles: [CCCC,\n      C1CC]", 31, "RDKit cannot parse the SMILES 'C1CC'"),
    ("    smiles: [CCCC]", "    smiles: [CCCC, CC.O]", 30, "several fragments"),
    ("    smiles: [CCCC]", "    smiles: [CCCC, 'C[Se]C']", 30, "element\\(s\\) Se not supported by --energy mmff"),
    ("    n: 3", "    n: 0", 31, "n must be >= 1"),
    ("    budget: 1", "    budget: 0", 33, "budget must be >= 1"),
    ("    n: 3", "    n: 20000", 29, "-n must be an integer between 1 and 10000"),
    ("    budget: 1", "    budget: 1\n    samples: 5", 34, "unknown key 'samples' in conformers job"),
    ("    relax: mmff", "    relax: mmff\n    energy: missing.pt", 33, "energy must be mmff, xtb or a molfree model"),
    ("    relax: mmff", "    relax: amber", 32, "relax must be one of mmff, energy"),
])
def test_bad_jobs_of_other_types_are_rejected_with_the_line(tmp_path, old, new, line, message):
    write_ar3(tmp_path / "ar3.xyz")
    path = tmp_path / "campaign.yaml"
    path.write_text(OTHER_TYPES.replace(old, new, 1))
    with pytest.raises(ValueError, match=rf"campaign.yaml:{line}: .*{message}"):
        load_campaign(path)


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


PROFILE = """\
queue: gpu-queue
account: chem
lifetime: 50m
lifetime_stagger: 4m
resources: {cores: 8, memory: 1GB}
"""


@pytest.mark.parametrize("kind, directives", [
    ("slurm", ["#SBATCH -p gpu-queue", "#SBATCH -A chem", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=14G",  # 15 GB = 13.97 GiB, rounded up
               "#SBATCH -t 02:30:00", "#SBATCH --gres=gpu:2"]),
    ("pbs", ["#PBS -q gpu-queue", "#PBS -A chem", "#PBS -l select=1:ncpus=4:mem=14GB:ngpus=2",  # PBS GB = GiB
             "#PBS -l walltime=02:30:00"]),
])
def test_batch_job_script_from_campaign_resources_and_profile(tmp_path, kind, directives):
    """The campaign's resources (over its profile's) become the batch directives; no batch server needed."""
    pytest.importorskip("dask_jobqueue", reason="SLURM/PBS job scripts need dask-jobqueue (the [hpc] and [test] extras)")
    from molfree.campaign.runner import jobqueue_cluster

    (tmp_path / "hpc.yaml").write_text(PROFILE)
    path = write_campaign(tmp_path)
    path.write_text(path.read_text().replace(
        "cluster: {kind: local, workers: 1}",
        f"cluster: {{kind: {kind}, workers: 3, profile: hpc.yaml}}\n"
        "resources: {cores: 4, memory: 15GB, gpus: 2, walltime: '02:30:00'}"))
    config = load_campaign(path).cluster
    assert (config.kind, config.workers, config.queue, config.lifetime) == (kind, 3, "gpu-queue", "50m")
    cluster = jobqueue_cluster(config, tmp_path / "logs")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    lines = script.splitlines()
    for directive in directives:
        assert directive in lines, script
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert sys.executable in worker and "--nthreads 4" in worker
    assert "--resources GPU=2 --lifetime 50m --lifetime-stagger 4m" in worker
