"""Crystal search and relaxation: lattice sums, ground states, symmetry, matching, validity, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pyxtal")
pytest.importorskip("pymatgen")
pytest.importorskip("spglib")
pytest.importorskip("smact")

from ase import Atoms
from ase.build import bulk
from scipy.optimize import minimize_scalar

from molfree.crystals import metrics
from molfree.crystals.calculators import lennard_jones, make_calculator
from molfree.crystals.relax import deduplicate, relax
from molfree.crystals.search import random_candidate, random_search
from molfree.crystals.structures import (
    check_cell,
    composition_valid,
    parse_composition,
    structure_valid,
    to_atoms,
    to_structure,
)

torch.set_num_threads(1)

#: Reduced LJ units: ε = 1 eV, σ = 1 Å.
REDUCED = {"Ar": (1.0, 1.0)}


def _lattice_energy(atoms: Atoms, cutoff_sigma: float) -> float:
    """Minimum over uniform scaling of the LJ energy per atom (ε) of ``atoms``."""
    calc = lennard_jones(["Ar"], REDUCED, cutoff_sigma=cutoff_sigma)

    def energy(scale: float) -> float:
        scaled = atoms.copy()
        scaled.set_cell(atoms.cell * scale, scale_atoms=True)
        scaled.calc = calc
        return scaled.get_potential_energy() / len(scaled)

    return minimize_scalar(energy, bounds=(0.95, 1.0), method="bounded", options={"xatol": 1e-4}).fun


@pytest.mark.parametrize("structure, expected", [
    (bulk("Ar", "fcc", a=2 ** (1 / 6) * np.sqrt(2)), -8.6102),
    (bulk("Ar", "hcp", a=2 ** (1 / 6), c=2 ** (1 / 6) * np.sqrt(8 / 3)), -8.6111),
])
def test_lj_lattice_sums(structure, expected):
    assert _lattice_energy(structure, cutoff_sigma=8.0) == pytest.approx(expected, abs=2e-4)


def test_pair_forces_and_stress_match_finite_differences():
    atoms = bulk("NaCl", "rocksalt", a=5.8, cubic=True)
    atoms.rattle(0.05, seed=1)
    atoms.calc = make_calculator("born-mayer", ["Na", "Cl"])
    forces, stress = atoms.get_forces(), atoms.get_stress()
    d = 1e-4
    moved = atoms.copy()
    moved.calc = atoms.calc
    moved.positions[3, 0] += d
    e_plus = moved.get_potential_energy()
    moved.positions[3, 0] -= 2 * d
    e_minus = moved.get_potential_energy()
    assert forces[3, 0] == pytest.approx(-(e_plus - e_minus) / (2 * d), abs=1e-5)
    strained = atoms.copy()
    strained.calc = atoms.calc
    strained.set_cell(atoms.cell * (1 + d), scale_atoms=True)
    e1 = strained.get_potential_energy()
    strained.set_cell(atoms.cell * (1 - d), scale_atoms=True)
    e0 = strained.get_potential_energy()
    assert stress[:3].sum() * atoms.get_volume() == pytest.approx((e1 - e0) / (2 * d), rel=1e-4)


def test_lj_relaxes_to_close_packed_from_perturbed_start():
    start = bulk("Ar", "fcc", a=1.6, cubic=True)
    start.rattle(0.05, seed=3)
    start.set_cell(start.cell @ np.array([[1.0, 0.04, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.97]]), scale_atoms=True)
    result = relax(start, lennard_jones(["Ar"], REDUCED), fmax=0.01)
    assert result.converged
    assert result.space_group in (225, 194)
    assert result.energy_per_atom == pytest.approx(-8.61, abs=0.01)


def test_nacl_relaxes_to_rock_salt():
    start = bulk("NaCl", "rocksalt", a=5.9, cubic=True)
    start.rattle(0.1, seed=2)
    result = relax(start, make_calculator("born-mayer", ["Na", "Cl"]))
    assert result.converged and result.space_group == 225
    assert result.atoms.cell.cellpar()[:3] == pytest.approx([5.64] * 3, rel=0.02)


def test_si_tersoff_relaxes_to_diamond():
    start = bulk("Si", "diamond", a=5.6, cubic=True)
    start.rattle(0.1, seed=3)
    result = relax(start, make_calculator("tersoff", ["Si"]))
    assert result.converged and result.space_group == 227
    assert result.atoms.cell.cellpar()[0] == pytest.approx(5.432, rel=0.01)
    assert result.energy_per_atom == pytest.approx(-4.63, abs=0.01)


@pytest.mark.slow
def test_chgnet_nacl_rock_salt():
    pytest.importorskip("chgnet")
    start = bulk("NaCl", "rocksalt", a=5.8)
    result = relax(start, make_calculator("chgnet", ["Na", "Cl"]), fmax=0.02)
    lattice = result.atoms.get_volume() ** (1 / 3) * 4 ** (1 / 3)  # primitive (2 atoms) -> conventional a
    assert result.space_group == 225
    assert lattice == pytest.approx(5.64, rel=0.02)


REFERENCES = [bulk("Cu", "fcc", a=3.61), bulk("Fe", "bcc", a=2.87), bulk("Mg", "hcp", a=3.21, c=5.21),
              bulk("Si", "diamond", a=5.43), bulk("NaCl", "rocksalt", a=5.64), bulk("CsCl", "cesiumchloride", a=4.12),
              bulk("ZnS", "zincblende", a=5.41)]


def test_structure_matcher_round_trip():
    atoms_back = [to_atoms(to_structure(a)) for a in REFERENCES]
    for a, b in zip(REFERENCES, atoms_back):
        assert a.get_chemical_symbols() == b.get_chemical_symbols()
        np.testing.assert_allclose(a.cell.array, b.cell.array, atol=1e-10)
    cubic = [bulk("Cu", "fcc", a=3.61, cubic=True), bulk("NaCl", "rocksalt", a=5.64, cubic=True)]
    assert metrics.csp_match(cubic, [REFERENCES[0], REFERENCES[4]])["match_rate"] == 1.0
    cov = metrics.coverage(atoms_back, REFERENCES)
    assert cov == {"cov_r": 1.0, "cov_p": 1.0}
    assert metrics.csp_match([REFERENCES[1]], [REFERENCES[0]])["match_rate"] == 0.0


def test_validity_of_ground_truth_is_complete():
    assert metrics.validity(REFERENCES) == {"structural": 1.0, "compositional": 1.0, "overall": 1.0}
    squeezed = bulk("Cu", "fcc", a=0.6)
    assert not structure_valid(squeezed)
    assert not composition_valid({"Na": 2, "Cl": 1})
    w = metrics.property_wasserstein(REFERENCES, REFERENCES, [0.0, 1.0], [0.0, 1.0])
    assert w == {"density": 0.0, "energy_per_atom": 0.0}


@pytest.mark.parametrize("formula", ["", "NaCl0", "nacl", "Xx2", "Na-Cl", "Q"])
def test_bad_compositions_raise(formula):
    with pytest.raises(ValueError):
        parse_composition(formula)


def test_parse_composition():
    assert parse_composition("Cu3Au") == {"Cu": 3, "Au": 1}
    assert parse_composition("NaClNa") == {"Na": 2, "Cl": 1}


@pytest.mark.parametrize("cell", [np.zeros((3, 3)), -np.eye(3), np.eye(3) * 0.3, np.eye(3) * 50.0])
def test_impossible_cells_raise(cell):
    with pytest.raises(ValueError, match="cell"):
        check_cell(cell, 1)


def test_unknown_calculator_and_element_coverage_raise():
    with pytest.raises(ValueError):
        make_calculator("nonsense", ["Cu"])
    with pytest.raises(ValueError, match="one element"):
        make_calculator("tersoff", ["Si", "C"])
    with pytest.raises(ValueError, match="Si, C or Ge|one of"):
        make_calculator("tersoff", ["Sn"])
    with pytest.raises(ValueError, match="born-mayer"):
        make_calculator("born-mayer", ["Na", "Cu"])
    with pytest.raises(ValueError):
        random_candidate("Cu40", 0, max_atoms=8)


def test_random_candidates_are_valid_and_reproducible():
    for index in range(4):
        atoms = random_candidate("NaCl", index, seed=1)
        assert atoms.pbc.all() and structure_valid(atoms)
        assert sorted(set(atoms.get_chemical_symbols())) == ["Cl", "Na"]
        assert to_structure(atoms).is_ordered
        np.testing.assert_allclose(atoms.positions, random_candidate("NaCl", index, seed=1).positions)


def test_random_search_and_dedup_lj():
    calc = lennard_jones(["Ar"], REDUCED)
    result = random_search("Ar", calc, 2, seed=0, max_atoms=1, fmax=0.01, steps=100)
    assert result.relaxations == 2 and result.evaluations >= 2
    unique = deduplicate(result.candidates)
    assert sum(count for _, count in unique) == 2
    assert unique[0][0].energy_per_atom == pytest.approx(-8.61, abs=0.02)


def test_generate_workflow_resumes(tmp_path):
    from molfree.workflows.crystal import GenerateSetup, run_generate

    setup = GenerateSetup("Cu", calculator="emt", n=1, max_atoms=1, fmax=0.05, steps=80)
    first = run_generate(setup, tmp_path)
    assert first["resumed"] == 0 and (tmp_path / "energy_volume.png").exists()
    assert list((tmp_path / "cifs").glob("*.cif")) and (tmp_path / "report.md").exists()
    more = run_generate(GenerateSetup("Cu", calculator="emt", n=2, max_atoms=1, fmax=0.05, steps=80), tmp_path)
    assert more["resumed"] == 1 and more["relaxations"] == 2
    assert more["energy_evaluations"] > first["energy_evaluations"]


def test_crystal_flow_symmetries_training_and_sampling():
    from molfree.crystals.generative import CrystalFlow

    torch.manual_seed(0)
    model = CrystalFlow(hidden=16, layers=1, frequencies=2)
    species = torch.tensor([[11, 11, 17, 17]])
    frac, lattice, t = torch.rand(1, 4, 3), torch.randn(1, 6), torch.tensor([0.3])
    v_frac, v_lat = model(species, frac, lattice, t)
    shifted = model(species, (frac + torch.tensor([0.3, 0.7, 0.1])) % 1.0, lattice, t)
    torch.testing.assert_close(shifted[0], v_frac, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(shifted[1], v_lat, atol=1e-5, rtol=1e-4)
    perm = torch.tensor([2, 0, 3, 1])
    permuted = model(species[:, perm], frac[:, perm], lattice, t)
    torch.testing.assert_close(permuted[0], v_frac[:, perm], atol=1e-5, rtol=1e-4)

    data = []
    for k in range(8):
        atoms = bulk("NaCl", "rocksalt", a=5.64 + 0.05 * k, cubic=True)
        atoms.rattle(0.02, seed=k)
        data.append(atoms)
    losses = model.fit(data, steps=60, batch_size=8)
    assert np.isfinite(losses).all() and np.mean(losses[-10:]) < np.mean(losses[:10])
    samples = model.sample(data[0].get_chemical_symbols(), 6, steps=4)
    assert samples and all(a.pbc.all() and a.get_chemical_formula() == "Cl4Na4" for a in samples)
    assert all(to_structure(a).is_ordered for a in samples)
    with pytest.raises(ValueError):
        model.fit([])


@pytest.mark.parametrize("element, a, energy", [("C", 3.566, -7.37), ("Ge", 5.657, -3.85)])
def test_tersoff_carbon_and_germanium_diamond(element, a, energy):
    atoms = bulk(element, "diamond", a=a)
    atoms.calc = make_calculator("tersoff", [element])
    assert atoms.get_potential_energy() / len(atoms) == pytest.approx(energy, abs=0.02)


def test_born_mayer_alkali_halides_have_their_minimum_within_2_percent_of_the_lattice_constant():
    from molfree.crystals.calculators import ROCK_SALT_A0

    for cation, anion in (("Li", "F"), ("K", "Br")):  # the extremes of the table
        a = ROCK_SALT_A0[cation, anion]
        calc = make_calculator("born-mayer", [anion, cation])
        energies = []
        for scale in (0.98, 1.0, 1.02):
            atoms = bulk(cation + anion, "rocksalt", a=a * scale)
            atoms.calc = calc
            energies.append(atoms.get_potential_energy())
        assert energies[1] < min(energies[0], energies[2]), cation + anion


def test_crystal_flow_mixed_compositions_save_load_and_errors(tmp_path):
    import json

    from molfree.crystals.generative import CrystalFlow
    from molfree.potentials.serialization import FORMAT, VERSION

    data = [bulk("Cu", "fcc", a=3.6), bulk("Au", "fcc", a=4.08), bulk("NaCl", "rocksalt", a=5.64),
            bulk("NaCl", "rocksalt", a=5.64, cubic=True)]
    model = CrystalFlow(hidden=8, layers=1, frequencies=2)
    model.fit(data, steps=5, batch_size=2)
    assert model.metadata["elements"] == ["Au", "Cl", "Cu", "Na"]
    assert model.metadata["formula_units"] == {"1": 3, "4": 1}
    path = model.save(tmp_path / "flow.pt", {"calculator": "emt"})
    payload = torch.load(path, weights_only=True)
    assert json.loads(payload["header"])["architecture"] == "CrystalFlow"
    loaded = CrystalFlow.load(path)
    assert loaded.provenance == {"calculator": "emt"}
    a = model.eval().sample_composition({"Na": 1, "Cl": 1}, 3, max_atoms=8, steps=3, seed=4)
    b = loaded.sample_composition({"Na": 1, "Cl": 1}, 3, max_atoms=8, steps=3, seed=4)
    assert [x.get_chemical_formula() for x in a] == [x.get_chemical_formula() for x in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.positions, y.positions, atol=1e-4)
        assert x.pbc.all() and to_structure(x).is_ordered
    # The training formula units decide the cell sizes (1 or 4 of 1..4 allowed): never 2 or 3.
    assert {len(x) for x in a} <= {2, 8}
    free = loaded.sample_free(6, steps=2)
    assert free and {x.get_chemical_formula() for x in free} <= {"Cu", "Au", "ClNa", "Cl4Na4"}
    with pytest.raises(ValueError, match="never seen"):
        loaded.sample_composition({"Si": 1}, 2, max_atoms=4)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a molfree model file"):
        CrystalFlow.load(tmp_path / "junk.pt")
    torch.save({"format": FORMAT, "version": VERSION, "state_dict": {},
                "header": json.dumps({"architecture": "EquivariantPotential"})}, tmp_path / "potential.pt")
    with pytest.raises(ValueError, match="not a CrystalFlow"):
        CrystalFlow.load(tmp_path / "potential.pt")
    with pytest.raises(ValueError, match="not been trained"):
        CrystalFlow().sample_free(1)


def test_csp_match_takes_the_best_of_several_candidates():
    cu, fe = bulk("Cu", "fcc", a=3.61), bulk("Fe", "bcc", a=2.87)
    assert metrics.csp_match([[bulk("Cu", "bcc", a=2.9), bulk("Cu", "fcc", a=3.7)]], [cu])["match_rate"] == 1.0
    assert metrics.csp_match([[bulk("Fe", "fcc", a=3.6)], fe], [fe, fe])["match_rate"] == 0.5


def test_cli_train_evaluate_generate_flow_round_trip(tmp_path, capsys):
    import json

    from ase.io import read

    from molfree.cli import main

    run = tmp_path / "train"
    assert main(["crystal", "train", "--compositions", "Cu", "Au", "--per-composition", "2", "--max-atoms", "1",
                 "--fmax", "0.1", "--relax-steps", "40", "--train-steps", "20", "--batch-size", "4", "--hidden", "8",
                 "--layers", "1", "--checkpoint-every", "10", "--holdout", "0.5", "--quiet", "--out", str(run)]) == 0
    for name in ("model.pt", "checkpoint.pt", "metrics.json", "learning_curve.png", "data/train.extxyz",
                 "data/test.extxyz", "report.md"):
        assert (run / name).is_file(), name
    train = read(run / "data" / "train.extxyz", index=":")
    assert train and all(np.isfinite(a.info["energy_per_atom"]) for a in train)
    # A rerun resumes: nothing is relaxed or trained again.
    relaxed = run / "data" / "candidates" / "Cu" / "0000.extxyz"
    stamp = relaxed.stat().st_mtime_ns
    assert main(["crystal", "train", "--compositions", "Cu", "Au", "--per-composition", "2", "--max-atoms", "1",
                 "--fmax", "0.1", "--relax-steps", "40", "--train-steps", "20", "--batch-size", "4", "--hidden", "8",
                 "--layers", "1", "--checkpoint-every", "10", "--holdout", "0.5", "--quiet", "--out", str(run)]) == 0
    assert relaxed.stat().st_mtime_ns == stamp
    assert len(torch.load(run / "checkpoint.pt", weights_only=True)["state"]["losses"]) == 20

    assert main(["crystal", "evaluate", "--model", str(run / "model.pt"), "--n-samples", "4"]) == 0
    result = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert result["ground_truth_validity"] == {"valid_structural": 1.0, "valid_compositional": 1.0,
                                               "valid_overall": 1.0}
    assert result["n_generated"] == 4 and 0.0 <= result["csp"]["match_rate"] <= 1.0
    assert set(result["generation"]) >= {"cov_r", "cov_p", "wdist_density", "wdist_energy_per_atom"}

    out = tmp_path / "gen"
    assert main(["crystal", "generate", "--composition", "Cu", "--generator", "flow", "--model", str(run / "model.pt"),
                 "-n", "1", "--max-atoms", "1", "--fmax", "0.1", "--steps", "40", "--out", str(out)]) == 0
    generated = read(out / "candidates" / "0000.extxyz")
    assert generated.pbc.all() and generated.get_chemical_formula() == "Cu" and to_structure(generated).is_ordered
    assert json.loads((out / "results.json").read_text())["generator"] == "flow"

    capsys.readouterr()
    assert main(["crystal", "generate", "--composition", "NaCl", "--generator", "flow", "--model",
                 str(run / "model.pt"), "-n", "1", "--out", str(tmp_path / "nacl")]) == 2
    assert "never seen ['Cl', 'Na']" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_text("junk")
    assert main(["crystal", "generate", "--composition", "Cu", "--generator", "flow", "--model",
                 str(tmp_path / "bad.pt"), "-n", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "not a molfree model file" in capsys.readouterr().err
    assert main(["crystal", "generate", "--free", "--composition", "Cu", "--model", str(run / "model.pt")]) == 2
    assert main(["crystal", "generate", "--composition", "Cu", "--generator", "flow"]) == 2
