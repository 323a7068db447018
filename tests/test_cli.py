"""The molfree command line: help, version, one-line errors with a non-zero exit."""
import subprocess
import sys

import molfree
from molfree.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "molfree.cli", *args], capture_output=True, text=True)


def test_version_and_help():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"molfree {molfree.__version__}"
    out = run("--help")
    assert out.returncode == 0
    for command in ("demo", "systems", "data", "train"):
        assert command in out.stdout


def test_systems_listing(capsys):
    assert main(["systems"]) == 0
    listed = capsys.readouterr().out.split()
    assert {"alanine-dipeptide-implicit", "water-box", "lj13", "dw4", "nacl-rocksalt"} <= set(listed)


def test_unknown_system_is_a_one_line_error():
    out = run("systems", "no-such-system")
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if "CUDA" not in line]
    assert len(lines) == 1 and "no-such-system" in lines[0] and lines[0].startswith("molfree systems: error:")
