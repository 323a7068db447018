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


def test_solvation_electrostatic_states_per_solute_and_unknown_solute(monkeypatch, tmp_path):
    """Water gets 6 λ_electrostatics states by default (one discharge step of ±0.8 e does not overlap), methane 3,
    and an explicit --n-electrostatics wins; an unknown shipped solute is a one-line error naming the shipped ones."""
    from molfree.freeenergy import hydration

    calls = []

    def record(solute, atoms, **options):
        calls.append((solute, options["n_electrostatics"]))
        raise ValueError("stopped before sampling")

    monkeypatch.setattr(hydration, "hydration_free_energy", record)
    for args in (["--solute", "water"], ["--solute", "water", "--n-electrostatics", "4"], []):
        assert main(["solvation", *args, "--out", str(tmp_path)]) == 2
    assert calls == [("water", 6), ("water", 4), ("methane", 3)]
    monkeypatch.undo()
    out = run("solvation", "--solute", "ethanol", "--out", str(tmp_path))
    lines = [line for line in out.stderr.splitlines() if "CUDA" not in line]
    assert out.returncode == 2 and len(lines) == 1 and "shipped solutes: methane, water" in lines[0]


def test_solvation_both_methods_side_by_side_and_bad_frames(monkeypatch, tmp_path, capsys):
    """--method both runs MBAR and neural TI on one run directory and prints both; JSON leads with MBAR."""
    import json
    from types import SimpleNamespace

    from molfree.freeenergy import hydration, hydration_neural_ti

    calls = []

    def mbar(solute, atoms, **options):
        calls.append("mbar")
        return SimpleNamespace(dG_kcal_mol=2.2, error_kcal_mol=0.2, temperature=298.15,
                               solvent=SimpleNamespace(neighbour_overlap=[0.2, 0.15]))

    def neural(solute, atoms, **options):
        calls.append(("neural-ti", options["options"].n_frames, options["options"].insertions, options["out"]))
        return {"dG_kcal_mol": 2.0, "error_kcal_mol": 0.3, "temperature_K": 298.15}

    monkeypatch.setattr(hydration, "hydration_free_energy", mbar)
    monkeypatch.setattr(hydration_neural_ti, "neural_ti_hydration", neural)
    out = str(tmp_path / "run")
    assert main(["solvation", "--method", "both", "--frames", "7", "--insertions", "500", "--out", out, "--json"]) == 0
    assert calls == ["mbar", ("neural-ti", 7, 500, out)]
    printed = json.loads(capsys.readouterr().out)
    assert printed["dG_kcal_mol"] == 2.2 and printed["neural_ti"]["dG_kcal_mol"] == 2.0
    assert main(["solvation", "--method", "neural-ti", "--out", out]) == 0
    assert "2.00 ± 0.30 kcal/mol (neural TI" in capsys.readouterr().out
    calls.clear()
    assert main(["solvation", "--method", "both", "--frames", "1", "--out", out]) == 2
    assert calls == [] and "n_frames must be >= 2" in capsys.readouterr().err
    assert main(["solvation", "--method", "neural-ti", "--insertions", "0", "--out", out]) == 2
    assert calls == [] and "insertions must be >= 1" in capsys.readouterr().err


def test_bg_train_bad_umbrella_windows_is_a_one_line_error_before_any_file(capsys, tmp_path):
    assert main(["bg", "train", "--umbrella-windows", "2", "--out", str(tmp_path / "bg")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("molfree bg: error:") and "umbrella_windows must be >= 4" in err and "\n" not in err
    assert not (tmp_path / "bg").exists()
