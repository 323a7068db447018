"""Boltzmann-generator building blocks: transforms, internal coordinates, metrics, generator, training."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from molfree import units
from molfree.energies.analytic import GaussianMixtureEnergy, HarmonicEnergy
from molfree.energy import Energy
from molfree.flows import (AffineCoupling, BoltzmannGenerator, Chirality, InternalCoordinates, NormalDistribution,
                           Permutation, ProductDistribution, Reshape, SequentialFlow, SplineCoupling, Stage,
                           Standardize, Trainer, UniformTorus, VonMisesTorus, basin_free_energy, build_zmatrix,
                           kish_ess, log_mean_exp, regularized_energy, spline_flow, wasserstein2_torus)


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _check_transform(transform, x: torch.Tensor) -> None:
    """Inverse to 1e-5 and log-det equal to the autograd Jacobian, sample by sample (float64)."""
    y, log_det = transform(x)
    x_back, log_det_inverse = transform.inverse(y)
    assert torch.allclose(x_back.reshape(x.shape), x, atol=1e-5)
    assert torch.allclose(log_det, -log_det_inverse, atol=1e-5)
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v: transform(v[None])[0].reshape(-1), x[i])
        jac = jac.reshape(-1, x[i].numel())
        assert torch.allclose(torch.linalg.slogdet(jac)[1], log_det[i], atol=1e-5)


_C5 = [False, True, False, True, True]


@pytest.mark.parametrize("make, circular", [
    (lambda: AffineCoupling(4, [0, 2]), [False] * 4),
    (lambda: SplineCoupling(4, [1, 3], bound=2.0), [False] * 4),
    (lambda: SplineCoupling(5, [0, 3, 4], circular=_C5, bound=2.0), _C5),
    (lambda: SplineCoupling(5, [1, 2], circular=_C5, bound=2.0), _C5),
    (lambda: Permutation([2, 0, 3, 1, 4]), [False] * 5),
    (lambda: Standardize([0.1, -1.0, 2.0, 0.0, 3.0], [0.5, 2.0, 1.0, 0.01, 4.0]), [False] * 5),
    (lambda: spline_flow(5, circular=_C5, n_layers=4, hidden=8, bound=2.0), _C5),
])
def test_transform_inverts_and_log_det_matches_autograd(make, circular):
    """Non-circular inputs ~ N(0, 1.5²) reach the linear tails (bound 2); angles are uniform on the circle."""
    torch.manual_seed(0)
    transform = make().double()
    _randomize(transform)
    circular = torch.tensor(circular)
    x = 1.5 * torch.randn(6, len(circular), dtype=torch.float64)
    x[:, circular] = (torch.rand(6, int(circular.sum()), dtype=torch.float64) * 2 - 1) * math.pi
    _check_transform(transform, x)


def test_reshape_and_affine_rejects_angles():
    _check_transform(Reshape(2, 3).double(), torch.randn(3, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="circular"):
        AffineCoupling(3, [0], circular=[True, False, False])
    with pytest.raises(ValueError, match="permutation"):
        Permutation([0, 0, 1])


def test_circular_spline_is_periodic():
    layer = SplineCoupling(2, [1], circular=[False, True]).double()
    _randomize(layer, seed=3)
    c = torch.full((2,), 0.3, dtype=torch.float64)
    ends = torch.stack([c, torch.tensor([-math.pi, math.pi], dtype=torch.float64)], -1)
    y, log_det = layer(ends)
    assert torch.allclose(y[:, 1], torch.full((2,), -math.pi, dtype=torch.float64))  # both ends map to -π ≡ π
    assert torch.allclose(log_det[0], log_det[1])


def test_distributions_are_normalised():
    torch.manual_seed(0)
    prior = ProductDistribution([NormalDistribution(2, std=0.5), UniformTorus(1),
                                 VonMisesTorus([0.5], [2.0])]).double()
    z = prior.sample(5)
    assert z.shape == (5, 4) and (z[:, 2:].abs() <= math.pi).all()
    grid = torch.linspace(-math.pi, math.pi, 4001, dtype=torch.float64)
    density = VonMisesTorus([0.5], [2.0]).double().log_prob(grid[:, None]).exp()
    assert abs(float(torch.trapezoid(density, grid)) - 1) < 1e-6
    expected = (-0.5 * (z[:, :2] / 0.5) ** 2 - math.log(0.5 * math.sqrt(2 * math.pi))).sum(-1) - math.log(2 * math.pi)
    assert torch.allclose(prior.log_prob(z), expected + VonMisesTorus([0.5], [2.0]).double().log_prob(z[:, 3:]))


# ----------------------------------------------------------------------------------------------- internal coordinates


@pytest.fixture(scope="module")
def alanine():
    """Alanine dipeptide (implicit) and 4 frames of short, differently rotated MD (nm)."""
    import openmm
    from openmm import unit

    from molfree import systems

    system = systems.load("alanine-dipeptide-implicit")
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(system.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(system.positions)
    frames = []
    for _ in range(4):
        integrator.step(25)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return system, np.array(frames)


def test_internal_coordinates_round_trip_on_alanine(alanine):
    system, frames = alanine
    ic = InternalCoordinates(system.topology)
    assert ic.dim == 3 * 22 - 6 and int(ic.circular.sum()) == 19
    for dtype in (torch.float64, torch.float32):
        x = torch.as_tensor(frames, dtype=dtype)
        q, log_det = ic.inverse(x)
        canonical, log_det_forward = ic(q)
        back = ic.place(canonical, *ic.frame(x))
        assert (back - x).abs().max() < 1e-4
        assert torch.allclose(log_det, -log_det_forward)
    phi = ic.split(q.double())[2]
    assert ((phi.abs() <= math.pi + 1e-6)).all()


def _rotation_zyz(a: torch.Tensor) -> torch.Tensor:
    def rz(t):
        c, s, o, one = torch.cos(t), torch.sin(t), torch.zeros_like(t), torch.ones_like(t)
        return torch.stack([torch.stack([c, -s, o]), torch.stack([s, c, o]), torch.stack([o, o, one])])

    def ry(t):
        c, s, o, one = torch.cos(t), torch.sin(t), torch.zeros_like(t), torch.ones_like(t)
        return torch.stack([torch.stack([c, o, s]), torch.stack([o, one, o]), torch.stack([-s, o, c])])

    return rz(a[0]) @ ry(a[1]) @ rz(a[2])


def test_internal_coordinates_log_jacobian_matches_autograd(alanine):
    """Full map (translation, ZYZ Euler angles, ICs) → R^{3N}: log|det| = IC log-det + ln sin β (Haar)."""
    system, frames = alanine
    ic = InternalCoordinates(system.topology)
    q, _ = ic.inverse(torch.as_tensor(frames[:1]))
    rigid = torch.tensor([0.1, -0.2, 0.3, 0.4, 1.1, -2.0], dtype=torch.float64)
    params = torch.cat([rigid, q[0]])

    def cartesian(p):
        canonical, _ = ic(p[6:][None])
        return (canonical[0] @ _rotation_zyz(p[3:6]).T + p[:3]).reshape(-1)

    jac = torch.autograd.functional.jacobian(cartesian, params)
    expected = ic(q)[1][0] + math.log(math.sin(1.1))
    assert abs(float(torch.linalg.slogdet(jac)[1]) - float(expected)) < 1e-6


def test_zmatrix_rejects_unusable_topologies():
    from openmm import app

    top = app.Topology()
    residue = top.addResidue("X", top.addChain())
    atoms = [top.addAtom(f"C{i}", app.element.carbon, residue) for i in range(4)]
    top.addBond(atoms[0], atoms[1])
    with pytest.raises(ValueError, match="fewer|at least 3"):
        small = app.Topology()
        r = small.addResidue("X", small.addChain())
        small.addBond(small.addAtom("C", app.element.carbon, r), small.addAtom("O", app.element.oxygen, r))
        build_zmatrix(small)
    with pytest.raises(ValueError, match="not connected"):
        build_zmatrix(top)


def test_chirality_detects_mirror_image(alanine):
    system, frames = alanine
    check = Chirality(system.topology, system.positions)
    assert len(check.centres) == 1  # Cα
    x = torch.as_tensor(frames)
    mirrored = x * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    assert check(x).all() and not check(mirrored).any()


# ---------------------------------------------------------------------------------------------------------- metrics


def test_ess_and_log_mean_exp_exact():
    assert kish_ess(torch.zeros(10)) == pytest.approx(1.0)
    one = torch.full((10,), -math.inf)
    one[3] = 2.0
    assert kish_ess(one) == pytest.approx(0.1)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert kish_ess(w.log()) == pytest.approx(100 / (4 * 30))
    assert log_mean_exp(torch.tensor([0.0, math.log(3.0)])) == pytest.approx(math.log(2.0))
    assert log_mean_exp(torch.tensor([1000.0, 1000.0, -math.inf, -math.inf])) == pytest.approx(1000 - math.log(2))
    assert kish_ess(torch.full((3,), -math.inf)) == 0.0


def test_ess_and_log_mean_exp_on_gaussians():
    """Proposal N(0, 1), target N(μ, 1): log w = μx − μ²/2, so ln Z = 0 and ESS/n → exp(−μ²)."""
    torch.manual_seed(0)
    mu = 0.6
    x = torch.randn(400_000, dtype=torch.float64)
    log_w = mu * x - mu**2 / 2
    assert abs(log_mean_exp(log_w)) < 0.01
    assert kish_ess(log_w) == pytest.approx(math.exp(-mu**2), rel=0.02)


def test_basin_free_energy_and_w2():
    phi = np.array([-1.0] * 75 + [1.0] * 25)
    df, err = basin_free_energy(phi)
    assert df == pytest.approx(math.log(3.0)) and err > 0
    log_w = np.where(phi > 0, math.log(3.0), 0.0)  # reweight to equal populations
    assert basin_free_energy(phi, log_w)[0] == pytest.approx(0.0, abs=1e-12)
    a = np.random.default_rng(0).uniform(-np.pi, np.pi, (300, 2))
    assert wasserstein2_torus(a, a, n=300) == pytest.approx(0.0, abs=1e-12)
    shifted = (a + np.pi + 0.1) % (2 * np.pi) - np.pi  # a rigid shift on the torus: W2 ≤ 0.1·√2
    assert 0 < wasserstein2_torus(a, shifted, n=300) <= 0.1 * math.sqrt(2) + 1e-9


def test_regularized_energy_is_continuous_and_capped():
    u = torch.tensor([0.0, 10.0, 10.0 + 1e-9, 1e6])
    r = regularized_energy(u, cap=10.0)
    assert r[0] == 0 and r[1] == 10 and abs(float(r[2] - 10)) < 1e-6 and float(r[3]) < 30


# -------------------------------------------------------------------------------------------- generator and training


def test_generator_weights_constant_when_flow_is_exact():
    """Harmonic target N(c, kT/k): a standardisation flow is exact, so log w = ln Z for every sample."""
    temperature, k = 300.0, 500.0
    centre = torch.tensor([[0.1, -0.2, 0.3], [1.0, 0.5, -0.5]], dtype=torch.float64)
    target = HarmonicEnergy(centre, k)
    std = math.sqrt(units.kT(temperature) / k)
    flow = SequentialFlow([Standardize(centre.reshape(-1), torch.full((6,), std)), Reshape(2, 3)]).double()
    bg = BoltzmannGenerator(NormalDistribution(6).double(), flow, target, temperature)
    x, log_w = bg.sample(50)
    assert x.shape == (50, 2, 3) and bg.energy_evaluations == 50
    assert torch.allclose(log_w, torch.full_like(log_w, target.log_partition_function(temperature)), atol=1e-8)
    assert kish_ess(log_w) == pytest.approx(1.0)
    assert torch.allclose(bg.log_prob(x) + bg.reduced_energy(x), -log_w, atol=1e-8)
    x2, log_q = bg.propose(4)
    assert torch.allclose(log_q, bg.log_prob(x2), atol=1e-8)


class _SometimesNaN(Energy):
    """E = ½‖x‖², but NaN when the first coordinate is positive."""

    def __init__(self):
        super().__init__(n_atoms=1)

    def energy(self, positions, box):
        e = 0.5 * positions.pow(2).sum((-1, -2))
        return torch.where(positions[:, 0, 0] > 0, torch.full_like(e, math.nan), e)


def test_nan_energies_are_counted_not_propagated():
    torch.manual_seed(0)
    bg = BoltzmannGenerator(NormalDistribution(3).double(), Reshape(1, 3), _SometimesNaN(), 300.0)
    x, log_w = bg.sample(200)
    nan = x[:, 0, 0] > 0
    assert bg.n_nonfinite == int(nan.sum()) > 0
    assert torch.isneginf(log_w[nan]).all() and torch.isfinite(log_w[~nan]).all()
    bad = torch.full((2, 1, 3), math.nan, dtype=torch.float64)
    assert torch.isinf(bg.reduced_energy(bad)).all() and bg.n_nonfinite == int(nan.sum()) + 2


def _gmm_generator(n_per_side: int) -> tuple[BoltzmannGenerator, GaussianMixtureEnergy]:
    target = GaussianMixtureEnergy.grid(n_per_side=n_per_side)
    half = 2.5 * n_per_side
    flow = SequentialFlow([spline_flow(2, n_layers=2, hidden=32, n_bins=4 * n_per_side, bound=3.0),
                           Standardize([0.0, 0.0], [half / 3] * 2), Reshape(1, 2)])
    return BoltzmannGenerator(NormalDistribution(2), flow, target, units.REDUCED_TEMPERATURE), target


@pytest.mark.parametrize("n_per_side, steps", [(2, 150), (5, 300)])
def test_flow_recovers_gmm_log_partition_function(tmp_path, n_per_side, steps):
    """ML on exact samples, then ln Z (= 0) from importance weights, within 0.1."""
    torch.manual_seed(0)
    bg, target = _gmm_generator(n_per_side)
    data = target.sample(20000, generator=torch.Generator().manual_seed(1)).float()
    Trainer(bg, tmp_path, "gmm", data=data, batch_size=512, progress=False).fit([Stage("ml", steps, lr=3e-3)])
    _, log_w = bg.sample(20000)
    assert abs(log_mean_exp(log_w)) < 0.1
    assert kish_ess(log_w) > 0.5
    assert (tmp_path / "training.json").exists() and (tmp_path / "learning_curves.png").exists()


def test_training_resumes_and_rejects_other_systems_checkpoint(tmp_path):
    torch.manual_seed(0)
    bg, target = _gmm_generator(2)
    data = target.sample(1000).float()
    stages = [Stage("ml", 4), Stage("kl", 3, ml_weight=0.5, kl_weight=1.0)]
    history = Trainer(bg, tmp_path, "gmm-4", data=data, progress=False, log_every=1).fit(stages)
    assert [h["step"] for h in history] == list(range(1, 8)) and history[-1]["energy_evaluations"] == 3 * 128
    again, _ = _gmm_generator(2)
    assert Trainer(again, tmp_path, "gmm-4", data=data, progress=False).fit(stages) == history
    assert again.energy_evaluations == 3 * 128
    with pytest.raises(ValueError, match="trained for system 'gmm-4'"):
        Trainer(_gmm_generator(2)[0], tmp_path, "alanine-dipeptide-implicit", data=data, progress=False).fit(stages)
    with pytest.raises(ValueError, match="no data"):
        Trainer(bg, tmp_path / "other", "gmm-4").fit([Stage("ml", 1)])


def test_ml_stage_ends_at_best_validation_loss(tmp_path):
    """Early stopping: a flow overfitting 60 points ends with the parameters of its lowest held-out −log q."""
    torch.manual_seed(0)
    bg, target = _gmm_generator(2)
    data = target.sample(60, generator=torch.Generator().manual_seed(2)).float()
    trainer = Trainer(bg, tmp_path, "gmm-4", data=data, batch_size=54, progress=False, log_every=5,
                      validation_fraction=0.1)
    history = trainer.fit([Stage("ml", 300, lr=1e-2)])
    validation = [h["loss_ml_validation"] for h in history if "loss_ml_validation" in h]
    assert len(trainer.validation) == 6 and len(trainer.data) == 54
    assert validation[-1] > min(validation) + 0.1  # it did overfit
    with torch.no_grad():
        final = float(-bg.log_prob(trainer.validation).mean())
    assert final == pytest.approx(min(validation), abs=1e-5) == history[-1]["restored_best_validation"]
    with pytest.raises(ValueError, match="validation_fraction"):
        Trainer(bg, tmp_path, "gmm-4", data=data, validation_fraction=1.0)


def test_ml_draws_data_by_weight_and_cosine_rate(tmp_path):
    """Frames of weight 0 are never drawn: ML on a GMM sample weighted to x > 0 learns only that half."""
    torch.manual_seed(0)
    bg, target = _gmm_generator(2)
    data = target.sample(4000, generator=torch.Generator().manual_seed(1)).float()
    weights = (data[:, 0, 0] > 0).double()
    Trainer(bg, tmp_path, "gmm", data=data, data_weights=weights, batch_size=256,
            progress=False).fit([Stage("ml", 150, lr=3e-3, cosine=True)])
    x, _ = bg.sample(2000)
    assert (x[:, 0, 0] > 0).float().mean() > 0.9
    with pytest.raises(ValueError, match="data_weights"):
        Trainer(bg, tmp_path, "gmm", data=data, data_weights=torch.zeros(len(data)))
    stage = Stage("ml", 100, lr=1e-3, cosine=True)
    assert [stage.rate(s) for s in (0, 50)] == pytest.approx([1e-3, 5e-4])
    assert Stage("ml", 100, lr=1e-3).rate(99) == 1e-3


def test_kl_bias_offsets_the_kl_loss_only(tmp_path):
    """A constant bias c shifts the KL loss by c (same samples); the step's ESS uses the true energy."""
    bg, _ = _gmm_generator(2)
    losses, stats = [], []
    for bias in (None, lambda x: torch.full(x.shape[:1], 5.0, dtype=x.dtype)):
        torch.manual_seed(3)
        loss, stat = Trainer(bg, tmp_path, "gmm", kl_batch_size=64, kl_bias=bias)._kl_loss()
        losses.append(float(loss.detach()))
        stats.append(stat)
    assert losses[1] - losses[0] == pytest.approx(5.0, abs=1e-4) and stats[0] == stats[1]
