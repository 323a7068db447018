"""Training-data pipeline and training of the equivariant potential: files, labels, resumption, learning."""
import json

import numpy as np
import pytest
import torch

from molfree import systems, units
from molfree.potentials import load, read_header
from molfree.potentials.data import (collate, load_dataset, make_atoms, read_xyz, structure_pairs, to_dataset,
                                     write_xyz)
from molfree.potentials.labelling import OpenMMReference, label_file
from molfree.potentials.sampling import sample_md
from molfree.potentials.training import Trainer, TrainingConfig, load_config, train

TINY_MODEL = {"channels": 8, "l_max": 1, "n_layers": 2, "radial_hidden": 16}
#: Learning test: force MAE (meV/Å) on the test structures after LEARN_STEPS steps must be below this
#: fraction of the MAE of predicting zero forces. Measured 0.52 (this seed; 0.55 and 0.60 with seeds 2 and 3).
LEARN_STEPS = 100
LEARN_FRACTION = 0.75


class CountingReference:
    """Wraps a reference, counts calls, and raises after ``fail_after`` calls (a simulated kill)."""

    def __init__(self, reference, fail_after=None):
        self.reference, self.fail_after, self.calls = reference, fail_after, 0
        self.description = reference.description

    def __call__(self, atoms):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        return self.reference(atoms)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def alanine():
    return systems.load("alanine-dipeptide-vacuum")


@pytest.fixture(scope="module")
def unlabelled(alanine, tmp_path_factory):
    """60 alanine-dipeptide frames from OpenMM MD at 300 and 600 K."""
    path = tmp_path_factory.mktemp("data") / "frames.xyz"
    write_xyz(path, sample_md(alanine, [300, 600], 30, interval_ps=0.1, seed=3))
    return path


@pytest.fixture(scope="module")
def labelled(alanine, unlabelled):
    out = unlabelled.with_name("labelled.xyz")
    return label_file(unlabelled, out, OpenMMReference.from_system(alanine), chunk_size=25, progress=False)


def test_extxyz_round_trip_units(tmp_path):
    from ase.build import molecule
    from ase.calculators.lj import LennardJones

    frames = [molecule("CH3CH2OH"), molecule("H2O")]
    frames[1].cell = np.diag([6.0, 7.0, 8.0])
    frames[1].pbc = True
    expected = []
    for atoms in frames:
        atoms.calc = LennardJones(sigma=2.5, epsilon=0.01, rc=4.0)
        expected.append((atoms.get_potential_energy(), atoms.get_forces()))
    with pytest.raises(ValueError, match="mix periodic"):
        to_dataset(frames)
    write_xyz(tmp_path / "one.xyz", frames[:1])
    write_xyz(tmp_path / "two.xyz", frames[1:])
    for k, name in enumerate(["one.xyz", "two.xyz"]):
        data = load_dataset(tmp_path / name)
        energy, forces = expected[k]
        assert data.energies[0] == pytest.approx(energy * units.EV_TO_KJ_PER_MOL, rel=1e-12)
        np.testing.assert_allclose(data.forces, forces * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM, atol=1e-6)
        np.testing.assert_allclose(data.positions, frames[k].positions * units.ANGSTROM_TO_NM, atol=1e-9)
        assert data.numbers.tolist() == frames[k].numbers.tolist()
    periodic = load_dataset(tmp_path / "two.xyz")
    np.testing.assert_allclose(periodic.boxes[0], np.diag([0.6, 0.7, 0.8]))
    assert load_dataset(tmp_path / "one.xyz").boxes is None
    # the hash identifies content
    data = load_dataset(tmp_path / "one.xyz")
    assert data.content_hash() == load_dataset(tmp_path / "one.xyz").content_hash()
    data.energies[0] += 1e-9
    assert data.content_hash() != load_dataset(tmp_path / "one.xyz").content_hash()


def test_unlabelled_and_missing_files(tmp_path):
    write_xyz(tmp_path / "raw.xyz", [make_atoms(["O", "H", "H"], np.eye(3) * 0.1)])
    with pytest.raises(ValueError, match="no energy"):
        load_dataset(tmp_path / "raw.xyz")
    assert len(load_dataset(tmp_path / "raw.xyz", require_labels=False)) == 1
    with pytest.raises(FileNotFoundError):
        read_xyz(tmp_path / "absent.xyz")
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "absent.yaml")


def test_collate_with_cached_pairs_matches_model(labelled):
    from molfree.potentials import EquivariantPotential

    data = load_dataset(labelled)
    mixed = to_dataset(read_xyz(labelled)[:2] + [make_atoms(["O", "H", "H"], np.eye(3) * 0.1)],
                       require_labels=False)  # structures of different sizes
    torch.manual_seed(0)
    model = EquivariantPotential(data.elements(), cutoff=0.4, **TINY_MODEL).double()
    pairs = structure_pairs(mixed, model.cutoff)
    batch = collate(mixed, mixed.species(model.elements), pairs, [2, 0, 1], torch.float64)
    cached = model(batch.positions, batch.species, batch.batch, batch.n_structures, batch.box, batch.pairs)
    fresh = model(batch.positions, batch.species, batch.batch, batch.n_structures, batch.box)
    torch.testing.assert_close(cached, fresh)
    assert batch.counts.tolist() == [3, 22, 22]


def test_labelling_resumes_after_kill(alanine, unlabelled, labelled, tmp_path):
    out = tmp_path / "resumed.xyz"
    killed = CountingReference(OpenMMReference.from_system(alanine), fail_after=30)  # dies inside chunk 2
    with pytest.raises(KeyboardInterrupt):
        label_file(unlabelled, out, killed, chunk_size=25, progress=False)
    assert not out.exists()
    assert len(list(tmp_path.glob("resumed.xyz.parts-*/part-*.xyz"))) == 1
    rerun = CountingReference(OpenMMReference.from_system(alanine))
    label_file(unlabelled, out, rerun, chunk_size=25, progress=False)
    assert rerun.calls == 60 - 25  # the finished chunk was skipped
    assert out.read_bytes() == labelled.read_bytes()
    assert not list(tmp_path.glob("resumed.xyz.parts-*"))
    energies = load_dataset(out).energies
    reference = alanine.energy(torch.tensor(load_dataset(out).positions.reshape(60, 22, 3))).numpy()
    np.testing.assert_allclose(energies, reference, atol=1e-6)


def test_openmm_reference_rejects_other_molecules(alanine):
    with pytest.raises(ValueError, match="does not match"):
        OpenMMReference.from_system(alanine)(make_atoms(["O", "H", "H"], np.eye(3) * 0.1))


def config_for(data, **options):
    return {"data": str(data), "model": TINY_MODEL, "batch_size": 4, "learning_rate": 0.01,
            "progress": False, "seed": 1, **options}


def test_training_learns_forces(labelled, tmp_path):
    metrics = train(config_for(labelled, max_steps=LEARN_STEPS), tmp_path / "run")
    data = load_dataset(labelled)
    trainer = Trainer(TrainingConfig.from_dict(config_for(labelled)), data)
    test_atoms = data.atom_indices(trainer.split["test"])
    zero_mae = np.abs(data.forces[test_atoms]).mean() * units.KJ_PER_MOL_NM_TO_EV_PER_ANGSTROM * 1e3
    force_mae = metrics["test"]["force_mae_mev_per_angstrom"]
    print(f"force MAE after {LEARN_STEPS} steps: {force_mae:.1f} meV/Å (zero forces: {zero_mae:.1f} meV/Å)")
    assert metrics["steps"] == LEARN_STEPS
    assert force_mae < LEARN_FRACTION * zero_mae
    history = metrics["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    run = tmp_path / "run"
    assert json.loads((run / "metrics.json").read_text())["test"] == metrics["test"]
    assert (run / "learning_curves.png").stat().st_size > 1000
    header = read_header(run / "model.pt")
    assert header["metadata"]["dataset_hash"] == data.content_hash()
    assert header["metadata"]["test_metrics"] == metrics["test"]
    model = load(run / "model.pt")
    assert model.periodic_data is False and model.elements == data.elements()
    assert float(model.energy_scale) != 1.0


def test_checkpoint_resume_matches_uninterrupted_run(labelled, tmp_path, monkeypatch):
    """Killed after 11 of 16 steps (checkpoints every 5 steps): the rerun continues from step 10 and ends
    with exactly the history and test metrics of an uninterrupted run with the same seed."""
    config = config_for(labelled, max_steps=16, checkpoint_every=5)
    reference = train(config, tmp_path / "straight")
    original = Trainer.train_step
    calls = []

    def counting_step(self, indices):
        calls.append(self.state["step"])
        if len(calls) == 12 and killing:
            raise KeyboardInterrupt("simulated kill")
        original(self, indices)

    monkeypatch.setattr(Trainer, "train_step", counting_step)
    killing = True
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "killed")
    calls.clear()
    killing = False
    resumed = train(config, tmp_path / "killed")
    assert calls[0] == 10 and len(calls) == 6
    assert resumed["history"] == reference["history"]
    assert resumed["test"] == reference["test"]


def test_bad_configs(labelled, tmp_path):
    with pytest.raises(ValueError, match="learning_rat"):
        TrainingConfig.from_dict({"data": "x.xyz", "learning_rat": 0.1})
    with pytest.raises(ValueError, match="model.width"):
        TrainingConfig.from_dict({"data": "x.xyz", "model": {"width": 3}})
    (tmp_path / "c.yaml").write_text("data: labelled.xyz\nepochs: 3\n")
    with pytest.raises(ValueError, match="epochs"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(FileNotFoundError):
        train({"data": str(tmp_path / "absent.xyz")}, tmp_path / "run")
    with pytest.raises(ValueError, match=r"\['N', 'O'\]"):
        train(config_for(labelled, elements=["H", "C"]), tmp_path / "run")
