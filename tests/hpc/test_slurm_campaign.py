"""The test campaign on a real SLURM cluster (``tests/hpc/start-slurm.sh``) gives the local results.

Run with ``make test-hpc``.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_campaign import arrays, write_campaign  # noqa: E402

from molfree.campaign import load_campaign  # noqa: E402
from molfree.campaign.report import gather  # noqa: E402
from molfree.campaign.runner import run_campaign  # noqa: E402


def _slurm_up() -> str | None:
    """None if sbatch works and a node is idle, else why not."""
    if shutil.which("sbatch") is None:
        return "sbatch not available (install slurm-wlm and run tests/hpc/start-slurm.sh as root)"
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if states.returncode != 0 or not {"idle", "mixed"} & set(states.stdout.split()):
        return f"no idle SLURM node (run tests/hpc/start-slurm.sh): {states.stdout or states.stderr}"
    return None


pytestmark = pytest.mark.skipif(_slurm_up() is not None, reason=str(_slurm_up()))


def test_slurm_campaign_matches_local(tmp_path):
    slurm = load_campaign(write_campaign(tmp_path / "slurm", repeats=1, lease=10.0))
    local = load_campaign(write_campaign(tmp_path / "local", repeats=1, lease=10.0))
    summary = run_campaign(slurm, cluster="slurm", workers=2, progress=False)
    assert summary["completed"] == len(slurm.jobs) == 7
    assert list((slurm.directory / "dask-logs").glob("*.err")), "no SLURM job logs: the workers did not run in SLURM"
    run_campaign(local, cluster="local", workers=2, progress=False)
    slurm_u, local_u = arrays(slurm), arrays(local)
    assert slurm_u.keys() == local_u.keys()
    for key in slurm_u:
        np.testing.assert_array_equal(slurm_u[key], local_u[key])
    assert gather(slurm)["lj/repeat-0"]["dG_kcal_mol"] == gather(local)["lj/repeat-0"]["dG_kcal_mol"]
