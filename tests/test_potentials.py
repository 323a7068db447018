"""NequIP-style battery for the equivariant potential: symmetry, gradients, batching, PBC, files."""
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from molfree.potentials import EquivariantPotential, load, read_header

SYMBOLS = ["C", "H", "H", "O", "N", "H", "C", "O"]


@pytest.fixture(scope="module", params=[{"correlation": 1, "readout": "last"}, {"correlation": 3, "readout": "all"}],
                ids=["two-body", "body-order-4"])
def model(request):
    torch.manual_seed(0)
    m = EquivariantPotential(["H", "C", "N", "O"], cutoff=0.45, channels=8, l_max=2, n_layers=2,
                             radial_hidden=16, **request.param).double()
    m.energy_scale.fill_(0.1)
    return m


def random_molecule(n, seed, spread=0.35):
    rng = np.random.default_rng(seed)
    while True:
        x = rng.uniform(-spread, spread, (n, 3))
        d = np.linalg.norm(x[:, None] - x[None], axis=-1) + np.eye(n)
        if d.min() > 0.09:
            return torch.tensor(x)


def test_rotation_translation_permutation(model):
    energy = model.bind(SYMBOLS)
    x = random_molecule(len(SYMBOLS), 1)
    e, f = energy.energy_and_forces(x)
    rot = torch.tensor(Rotation.random(random_state=2).as_matrix())
    e_rot, f_rot = energy.energy_and_forces(x @ rot.T + torch.tensor([0.3, -1.2, 2.0]))
    assert float(e_rot) == pytest.approx(float(e), rel=1e-10, abs=1e-10)
    assert torch.allclose(f_rot, f @ rot.T, atol=1e-9)
    # inversion: energies are O(3) invariant
    assert float(energy(-x)) == pytest.approx(float(e), rel=1e-10)
    perm = torch.tensor([0, 6, 2, 1, 4, 5, 3, 7])  # swaps C<->C and H<->H, O<->O... keep species consistent
    symbols_perm = [SYMBOLS[k] for k in perm]
    e_perm, f_perm = model.bind(symbols_perm).energy_and_forces(x[perm])
    assert float(e_perm) == pytest.approx(float(e), rel=1e-10)
    assert torch.allclose(f_perm, f[perm], atol=1e-9)


def test_forces_match_finite_differences(model):
    energy = model.bind(SYMBOLS)
    x = random_molecule(len(SYMBOLS), 3)
    forces = energy.forces(x)
    h = 1e-6
    for atom, axis in [(0, 0), (3, 1), (7, 2)]:
        xp, xm = x.clone(), x.clone()
        xp[atom, axis] += h
        xm[atom, axis] -= h
        fd = -(float(energy(xp)) - float(energy(xm))) / (2 * h)
        assert float(forces[atom, axis]) == pytest.approx(fd, rel=1e-5, abs=1e-7)


def test_batched_equals_single(model):
    energy = model.bind(SYMBOLS)
    xs = torch.stack([random_molecule(len(SYMBOLS), s) for s in range(3)])
    e_batch, f_batch = energy.energy_and_forces(xs)
    for k in range(3):
        e, f = energy.energy_and_forces(xs[k])
        assert float(e) == pytest.approx(float(e_batch[k]), rel=1e-12)
        assert torch.allclose(f, f_batch[k], atol=1e-12)


def periodic_system(seed):
    rng = np.random.default_rng(seed)
    box = torch.tensor([[0.9, 0, 0], [0.2, 0.85, 0], [-0.1, 0.3, 0.95]], dtype=torch.float64)
    frac = rng.uniform(0, 1, (8, 3))
    return torch.tensor(frac) @ box, box


def test_wrapped_equals_unwrapped_and_supercell(model):
    model.periodic_data = True
    energy = model.bind(SYMBOLS)
    x, box = periodic_system(4)
    e = energy(x, box)
    shifts = torch.tensor(np.random.default_rng(5).integers(-2, 3, (8, 3)), dtype=torch.float64)
    assert float(energy(x + shifts @ box, box)) == pytest.approx(float(e), rel=1e-10)
    # 2x1x1 supercell has twice the energy
    x2 = torch.cat([x, x + box[0]])
    box2 = box.clone()
    box2[0] *= 2
    e2 = model.bind(SYMBOLS * 2)(x2, box2)
    assert float(e2) == pytest.approx(2 * float(e), rel=1e-10)


def test_stress_equals_strain_derivative(model):
    model.periodic_data = True
    energy = model.bind(SYMBOLS)
    x, box = periodic_system(6)
    _, _, stress = energy.energy_forces_stress(x, box)
    volume = float(torch.linalg.det(box))
    h = 1e-6
    for a, b in [(0, 0), (1, 2), (2, 2)]:
        eps = torch.zeros(3, 3, dtype=torch.float64)
        eps[a, b] = eps[b, a] = h / 2 if a != b else h
        def strained(sign):
            deform = torch.eye(3, dtype=torch.float64) + sign * eps
            return float(energy(x @ deform, box @ deform))
        fd = (strained(1) - strained(-1)) / (2 * h) / volume
        assert float(stress[0, a, b]) == pytest.approx(fd, rel=1e-5, abs=1e-6)


def test_energy_is_smooth_across_the_cutoff(model):
    energy = model.bind(["O", "H"])
    r = torch.linspace(0.40, 0.50, 201, dtype=torch.float64)
    x = torch.zeros(len(r), 2, 3, dtype=torch.float64)
    x[:, 1, 0] = r
    e, f = energy.energy_and_forces(x)
    beyond = r >= model.cutoff
    assert torch.allclose(e[beyond], e[-1].expand(int(beyond.sum())), atol=1e-12)
    # forces vanish continuously: the envelope's value and first derivatives are 0 at the cutoff
    near = f[:, 1, 0].abs()[(r > model.cutoff - 0.002) & ~beyond]
    assert float(near.max()) < 1e-3 * float(f[:, 1, 0].abs().max())
    assert float(torch.diff(e).abs().max()) < 1e-2 * float(e.abs().max() + 1)


def test_float32_close_to_float64(model):
    energy = model.bind(SYMBOLS)
    x = random_molecule(len(SYMBOLS), 9)
    model32 = EquivariantPotential(**model.config).float()
    model32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    e32 = model32.bind(SYMBOLS)(x.float())
    assert e32.dtype == torch.float32
    assert float(e32) == pytest.approx(float(energy(x)), rel=1e-4, abs=1e-4)


def test_save_load_round_trip_and_header(model, tmp_path):
    path = tmp_path / "m.molfree"
    model.periodic_data = False
    model.save(path, metadata={"dataset_hash": "abc", "metrics": {"force_mae_mev_per_a": 1.0}})
    header = read_header(path)
    assert header["config"]["elements"] == ["H", "C", "N", "O"]
    assert header["units"]["length"] == "nm"
    assert header["metadata"]["dataset_hash"] == "abc"
    payload = torch.load(path, weights_only=True)  # plain tensors and strings only
    assert payload["format"] == "molfree-potential"
    loaded = load(path, dtype=torch.float64)
    x = random_molecule(len(SYMBOLS), 11)
    assert float(loaded.bind(SYMBOLS)(x)) == pytest.approx(float(model.bind(SYMBOLS)(x)), rel=1e-12)


def test_bad_input(model, tmp_path):
    with pytest.raises(ValueError, match="cannot evaluate"):
        model.bind(["C", "Cl"])
    with pytest.raises(ValueError, match="unknown"):
        EquivariantPotential(["C", "Qq"])
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not a molfree model file"):
        load(other)
    (tmp_path / "junk.molfree").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a molfree model file"):
        load(tmp_path / "junk.molfree")
    old = tmp_path / "v1.molfree"
    model.save(old)
    payload = torch.load(old, weights_only=True)
    torch.save({**payload, "version": 1}, old)  # the radial basis and readouts changed in version 2
    with pytest.raises(ValueError, match="version 1 is not supported"):
        load(old)
    with pytest.raises(ValueError, match="correlation"):
        EquivariantPotential(["C"], correlation=0)
    with pytest.raises(ValueError, match="readout"):
        EquivariantPotential(["C"], readout="first")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.molfree")
    x = random_molecule(len(SYMBOLS), 12)
    x[2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.bind(SYMBOLS)(x)
    model.periodic_data = False
    xp, box = periodic_system(1)
    with pytest.raises(ValueError, match="without periodic data"):
        model.bind(SYMBOLS)(xp, box)
