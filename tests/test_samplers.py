"""Adjoint sampler: SDE and path weights against exact Gaussians, equivariance, metrics, MCMC, targets."""
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from molfree import units
from molfree.energies.analytic import DoubleWellEnergy, GaussianMixtureEnergy, HarmonicEnergy, LennardJonesClusterEnergy
from molfree.samplers import (
    AdjointConfig,
    AdjointSampler,
    EGNNDrift,
    GeometricSchedule,
    MemorylessSDE,
    MLPDrift,
    aligned_w2,
    distance_w2,
    energy_w2,
    equal_budget_hmc,
    equal_budget_metropolis,
    hamiltonian_monte_carlo,
    lattice_start,
    log_mean_exp,
    metropolis,
    normalised_ess,
    wasserstein_1d,
)
from molfree.samplers.adjoint import ReplayBuffer
from molfree.samplers.metrics import aligned_distance, importance_resample
from molfree.samplers.networks import GaussianDistances

T = units.REDUCED_TEMPERATURE
SYSTEMS = Path(__file__).resolve().parents[1] / "systems"
#: Mean reduced energies E/kT of the stored reference samples (documented in systems/make_reference_samples.py).
REFERENCE_MEANS = {"dw4": (DoubleWellEnergy.dw4, -22.49), "lj13": (LennardJonesClusterEnergy.lj13, -42.73)}


pytestmark = pytest.mark.usefixtures("one_thread")


def assert_close(actual, expected, rtol=1e-7, atol=1e-9):
    """Elementwise |a − e| ≤ atol + rtol |e| (torch.testing imports torch.distributed: seconds)."""
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), (actual - expected).abs().max()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- targets ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFERENCE_MEANS))
def test_reference_samples_have_documented_mean_energy(name):
    factory, documented = REFERENCE_MEANS[name]
    data = np.load(SYSTEMS / f"{name}-reference.npz")
    x = torch.tensor(data["positions"], dtype=torch.float64)
    reduced = factory().reduced(x, temperature=float(data["temperature"]))
    assert float(reduced.mean()) == pytest.approx(documented, abs=0.05)
    assert float(data["temperature"]) == pytest.approx(T)
    assert (SYSTEMS / f"{name}-reference.npz").stat().st_size < 1e6


@pytest.mark.parametrize("name", sorted(REFERENCE_MEANS))
def test_reference_samples_are_in_equilibrium(name):
    """Independent of how the reference was made: no drift between the first and second half of each chain's
    kept states, and the virial identity ⟨(x − x̄)·∇E/kT⟩ = (N − 1)·dim of exp(−E/kT) (integration by
    parts in the COM-free subspace). Errors are standard errors over the independent chains."""
    factory, _ = REFERENCE_MEANS[name]
    data = np.load(SYSTEMS / f"{name}-reference.npz")
    n_chains = int(data["settings"][0])
    x = torch.tensor(data["positions"], dtype=torch.float64)
    energy, forces = factory().energy_and_forces(x)
    kt = units.kT(float(data["temperature"]))
    per_state = energy.reshape(-1, n_chains) / kt  # [kept step, chain]
    half = per_state.shape[0] // 2
    drift = per_state[half:].mean(0) - per_state[:half].mean(0)
    assert abs(float(drift.mean())) < 4 * float(drift.std()) / n_chains**0.5
    virial = (-(x - x.mean(1, keepdim=True)) * forces / kt).sum((1, 2)).reshape(-1, n_chains).mean(0)
    n_free = (x.shape[1] - 1) * x.shape[2]
    assert abs(float(virial.mean()) - n_free) < 4 * float(virial.std()) / n_chains**0.5


def pair_gradient(x, dphi):
    """Analytic ∇ of Σ_{i<j} φ(d_ij) given φ'(d) as a function, x [N, dim]."""
    diff = x[:, None] - x[None]
    d = diff.norm(dim=-1) + torch.eye(len(x), dtype=x.dtype)
    coef = dphi(d) / d * (1 - torch.eye(len(x), dtype=x.dtype))
    return (coef[..., None] * diff).sum(1)


def test_analytic_gradients_equal_autograd():
    x = torch.randn(4, 2, generator=gen(1), dtype=torch.float64) * 2
    dw = DoubleWellEnergy.dw4()
    expected = pair_gradient(x, lambda d: 2 * dw.b * (d - dw.d0) + 4 * dw.c * (d - dw.d0) ** 3)
    assert_close(-dw.forces(x), expected)

    y = torch.randn(13, 3, generator=gen(2), dtype=torch.float64) + 2 * torch.randn(13, 1, generator=gen(3))
    lj = LennardJonesClusterEnergy.lj13()
    expected = pair_gradient(y, lambda d: 2 * (-12 / d**13 + 12 / d**7)) + (y - y.mean(0))
    assert_close(-lj.forces(y), expected)

    gmm = GaussianMixtureEnergy.grid()
    z = torch.randn(5, 1, 2, generator=gen(4), dtype=torch.float64) * 5
    resp = torch.softmax(-0.5 * (z.reshape(5, 1, 2) - gmm.means).pow(2).sum(-1), -1)
    expected = units.kT(T) * (resp[..., None] * (z.reshape(5, 1, 2) - gmm.means)).sum(1)
    assert_close(-gmm.forces(z).reshape(5, 2), expected)


# -- SDE and weights ----------------------------------------------------------------------------------------------


def test_schedule_variance_is_integral_of_sigma_squared():
    sched = GeometricSchedule(0.01, 3.0)
    t = torch.linspace(0, 1, 20001, dtype=torch.float64)
    integral = torch.cumulative_trapezoid(sched.sigma(t) ** 2, t)
    assert_close(integral, sched.variance(t[1:]), rtol=1e-6, atol=1e-7)
    assert float(sched.variance(torch.tensor(0.0))) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("com_free", [False, True])
def test_uncontrolled_terminal_marginal_is_the_analytic_gaussian(com_free):
    sde = MemorylessSDE(GeometricSchedule(0.05, 2.0), com_free=com_free, n_steps=20)
    x1, log_ratio = sde.simulate(None, 20000, (3, 2), generator=gen(), dtype=torch.float64)
    assert torch.all(log_ratio == 0)
    var = sde.terminal_variance()
    flat = sde.project(x1).reshape(len(x1), -1)
    assert_close(x1, sde.project(x1))
    cov = torch.cov(flat.T)
    expected = var * (torch.eye(6, dtype=torch.float64) - (torch.kron(torch.ones(3, 3), torch.eye(2)) / 3
                                                            if com_free else 0))
    assert_close(cov, expected, atol=0.06 * var, rtol=0)
    # squared norm / var is chi-squared with the subspace's degrees of freedom
    chi2 = x1.pow(2).sum((-1, -2)) / var
    assert scipy.stats.kstest(chi2.numpy(), scipy.stats.chi2(sde.n_dof((3, 2))).cdf).pvalue > 1e-3


def test_bridge_marginal_matches_reference_process():
    sde = MemorylessSDE(GeometricSchedule(0.05, 2.0))
    x1 = sde.sample_reference(40000, (1, 2), generator=gen(), dtype=torch.float64)
    t = torch.full((40000,), 0.3, dtype=torch.float64)
    xt = sde.bridge(x1, t, gen(1))
    nu_t = float(sde.schedule.variance(torch.tensor(0.3)))
    assert float(xt.var()) == pytest.approx(nu_t, rel=0.03)
    assert float((xt * x1).mean()) == pytest.approx(nu_t, rel=0.03)  # Cov(X_t, X_1) = ν_t


def test_bridge_log_kernel_is_the_bridge_density_up_to_a_row_constant():
    sde = MemorylessSDE(GeometricSchedule(0.05, 2.0))
    x1 = torch.randn((6, 2, 2), generator=gen(), dtype=torch.float64)
    t = torch.tensor([0.05, 0.4, 0.9], dtype=torch.float64)
    xt = torch.randn((3, 2, 2), generator=gen(1), dtype=torch.float64)
    nu_t, nu_1 = sde.schedule.variance(t)[:, None, None, None], sde.terminal_variance()
    exact = torch.distributions.Normal(nu_t / nu_1 * x1[None], (nu_t * (nu_1 - nu_t) / nu_1).sqrt()).log_prob(
        xt[:, None]).sum((-1, -2))
    difference = sde.bridge_log_kernel(xt, t, x1) - exact
    assert_close(difference, difference[:, :1].expand_as(difference), rtol=0, atol=1e-9)


@pytest.mark.parametrize("t", [0.0, 0.1, 0.3, 0.6, 0.8])
def test_posterior_target_matches_conjugate_gaussian(t):
    """Buffer of exact samples of N(m, τ² I): the posterior of X₁ given X_t is Gaussian, so the buffer's
    posterior mean of −∇g = −(x − m)/τ² + x/ν₁ has a closed form."""
    sde = MemorylessSDE(GeometricSchedule(0.05, 2.0))
    nu_1, tau2 = sde.terminal_variance(), 0.25
    m = torch.tensor([[0.7, -0.4]], dtype=torch.float64)
    x1 = m + tau2**0.5 * torch.randn((40000, 1, 2), generator=gen(), dtype=torch.float64)
    buffer = ReplayBuffer(40000)
    buffer.add(x1, -(x1 - m) / tau2 + x1 / nu_1, torch.zeros(40000, dtype=torch.float64))
    times = torch.full((200,), t, dtype=torch.float64)
    xt = sde.bridge(m + tau2**0.5 * torch.randn((200, 1, 2), generator=gen(1), dtype=torch.float64), times, gen(2))
    nu_t = float(sde.schedule.variance(torch.tensor(t, dtype=torch.float64)))
    a, s2 = nu_t / nu_1, nu_t * (nu_1 - nu_t) / nu_1
    mean = (m / tau2 + a * xt / s2) / (1 / tau2 + a * a / s2) if t > 0 else m.expand_as(xt)
    expected = -(mean - m) / tau2 + mean / nu_1
    got = buffer.posterior_mean(sde.bridge_log_kernel(xt, times, buffer.x))
    assert_close(got, expected, rtol=0, atol=0.05 * float(expected.abs().max()) + 0.02)


def test_path_log_weights_exact_for_optimal_drift_of_tilted_gaussian():
    """Target N(m, ν₁ I): p/p_ref ∝ exp(m·x/ν₁), whose optimal drift v = m/ν₁ is exact even in discrete time."""
    sde = MemorylessSDE(GeometricSchedule(0.05, 1.5), n_steps=7)
    var = sde.terminal_variance()
    m = torch.tensor([[1.0, -2.0], [0.5, 0.3]], dtype=torch.float64)
    target = HarmonicEnergy(m, units.kT(T) / var)
    x1, log_ratio = sde.simulate(lambda x, t: (m / var).expand_as(x), 2000, (2, 2), generator=gen(),
                                 dtype=torch.float64)
    logw = sde.log_weights(x1, log_ratio, target.reduced(x1, temperature=T))
    assert_close(logw, torch.full_like(logw, target.log_partition_function(T)), rtol=0, atol=1e-9)
    assert float(normalised_ess(logw)) == pytest.approx(1.0)


class GaussianOptimalDrift(torch.nn.Module):
    """The exact continuous optimal drift of the target N(0, s² I): v*(x, t) = −a x / (1 + a (ν₁ − ν_t)),
    a = 1/s² − 1/ν₁."""

    def __init__(self, sde, s2):
        super().__init__()
        self.sde, self.a = sde, 1 / s2 - 1 / sde.terminal_variance()
        self.unused = torch.nn.Parameter(torch.zeros(()))  # the sampler's optimiser needs a parameter

    def forward(self, x, t):
        remaining = self.sde.terminal_variance() - self.sde.schedule.variance(t.double())
        return (-self.a * x / (1 + self.a * remaining)[:, None, None]).to(x.dtype)


def test_path_log_weights_converge_for_continuous_optimal_drift():
    """Target N(0, s² I): Euler steps with the continuous-time optimal drift leave an O(√Δt) spread of ln w
    that shrinks with the step count; the reweighted ln Z is exact in expectation.
    """
    sde = MemorylessSDE(GeometricSchedule(0.01, 2.0))
    s2 = 0.3
    drift = GaussianOptimalDrift(sde, s2)
    target = HarmonicEnergy(torch.zeros(1, 2), units.kT(T) / s2)
    spread = {}
    for n_steps in (50, 400):
        x1, log_ratio = sde.simulate(drift, 2000, (1, 2), n_steps=n_steps, generator=gen(), dtype=torch.float64)
        logw = sde.log_weights(x1, log_ratio, target.reduced(x1, temperature=T))
        spread[n_steps] = float(logw.std())
    assert spread[400] < 0.45 * spread[50]
    assert float(torch.logsumexp(logw, 0) - math.log(len(logw))) == pytest.approx(
        target.log_partition_function(T), abs=0.02)


# -- adjoint training ---------------------------------------------------------------------------------------------


def mode_counts(samples, gmm):
    return torch.bincount(torch.cdist(samples.reshape(-1, 2).double(), gmm.means).argmin(1),
                          minlength=gmm.means.shape[0])


def train_gmm(n_per_side, iterations, train_steps=50, seed=0):
    torch.manual_seed(seed)
    gmm = GaussianMixtureEnergy.grid(n_per_side)
    scale = 2.5 * n_per_side
    cfg = AdjointConfig(sigma_max=2.0 * n_per_side, n_steps=100, samples_per_iteration=500,
                        train_steps_per_iteration=train_steps, max_grad_norm=10.0)
    sampler = AdjointSampler(gmm, MLPDrift(1, 2, hidden=128, n_layers=3, length_scale=scale), T, cfg, seed=seed)
    sampler.train(max_iterations=iterations, progress=False)
    return gmm, sampler


def test_gmm_small_finds_all_modes_and_log_z():
    gmm, sampler = train_gmm(3, 25, train_steps=30)
    est = sampler.log_z(6000)
    print(f"3x3 GMM: {est}")
    assert abs(est.reweighted) <= 0.1
    assert est.lower_bound <= est.reweighted + 1e-9
    assert est.energy_evaluations == 25 * 500 + 6000
    assert (mode_counts(sampler.sample(2000).samples, gmm) > 0).all()


def test_posterior_target_training_learns_a_gaussian():
    """Training on the buffer's posterior-mean target: the samples of N(m, s² I) and its ln Z."""
    torch.manual_seed(0)
    target = HarmonicEnergy(torch.tensor([[1.0, -0.5]]), units.kT(T) / 0.3**2)
    cfg = AdjointConfig(sigma_max=2.0, n_steps=40, samples_per_iteration=200, buffer_size=1000,
                        train_steps_per_iteration=20, train_batch_size=128, posterior_target=True)
    sampler = AdjointSampler(target, MLPDrift(1, 2, hidden=32, n_layers=2), T, cfg)
    sampler.train(max_iterations=60, progress=False)
    result = sampler.sample(4000)
    assert_close(result.samples.mean(0).double(), target.center, rtol=0, atol=0.05)
    assert float(result.samples.std(0).mean()) == pytest.approx(0.3, abs=0.03)
    assert float(log_mean_exp(result.log_weights)) == pytest.approx(target.log_partition_function(T), abs=0.05)


def test_refine_is_langevin_on_the_learned_terminal_score():
    """Unadjusted Langevin on the score of N(0, s² I) has the stationary variance s²/(1 − ε/(2s²)), exactly."""
    s2, eps = 0.3, 0.03
    target = HarmonicEnergy(torch.zeros(1, 2), units.kT(T) / s2)
    cfg = AdjointConfig(sigma_max=2.0)
    sde = MemorylessSDE(GeometricSchedule(cfg.sigma_min, cfg.sigma_max))
    sampler = AdjointSampler(target, GaussianOptimalDrift(sde, s2), T, cfg, seed=0)
    x = torch.full((20000, 1, 2), 3.0, dtype=torch.float64)
    assert_close(sampler.terminal_score(x), -x / s2)
    refined = sampler.refine(x, 300, eps, progress=False)
    assert sampler.energy_evaluations == 0
    assert_close(refined.mean((0, 1)), torch.zeros(2), rtol=0, atol=0.02)
    variance = float(refined.var(0).mean())
    assert variance == pytest.approx(s2 / (1 - eps / (2 * s2)), rel=0.02)  # the step's bias: 5 % above s²
    assert abs(variance - s2) > 0.025 * s2
    with pytest.raises(ValueError, match="shape"):
        sampler.refine(x[:, :, :1], 10, eps)
    with pytest.raises(ValueError, match="non-finite"):
        sampler.refine(torch.full_like(x, math.nan), 10, eps)
    with pytest.raises(ValueError, match="step_size"):
        sampler.refine(x, 10, 0.0)


@pytest.mark.slow
def test_gmm_25_modes_log_z_within_005():
    gmm, sampler = train_gmm(5, 150)
    est = sampler.log_z(20000)
    print(f"5x5 GMM: {est}")
    counts = mode_counts(sampler.sample(5000).samples, gmm)
    print("samples per mode:", counts.tolist())
    assert (counts > 0).all()
    assert abs(est.reweighted) <= 0.05


def test_checkpoint_resume(tmp_path):
    gmm = GaussianMixtureEnergy.grid(2)
    cfg = AdjointConfig(sigma_max=5.0, n_steps=10, samples_per_iteration=50, train_steps_per_iteration=2,
                        train_batch_size=32)
    a = AdjointSampler(gmm, MLPDrift(1, 2, hidden=16), T, cfg)
    res = a.train(max_energy_evaluations=100, checkpoint=tmp_path / "ckpt.pt", progress=False)
    assert (res.iterations, res.energy_evaluations) == (2, 100)
    b = AdjointSampler(gmm, MLPDrift(1, 2, hidden=16), T, cfg).load(tmp_path / "ckpt.pt")
    assert (b.iterations, b.energy_evaluations, len(b.buffer)) == (2, 100, 100)
    for p, q in zip(a.net.parameters(), b.net.parameters()):
        assert_close(p, q)
    assert b.train(max_energy_evaluations=200, progress=False).energy_evaluations == 200
    with pytest.raises(ValueError):
        AdjointSampler(gmm, MLPDrift(1, 2, hidden=16), T, AdjointConfig(n_steps=11)).load(tmp_path / "ckpt.pt")



def test_weight_averaged_drift_resumes_exactly_and_old_checkpoints_load(tmp_path):
    """With ema_decay the averaged drift samples; a resumed run continues the average as if never stopped, and a
    checkpoint written before the field existed loads as ema_decay = 0."""
    gmm = GaussianMixtureEnergy.grid(2)
    cfg = AdjointConfig(sigma_max=5.0, n_steps=10, samples_per_iteration=50, train_steps_per_iteration=3,
                        train_batch_size=32, ema_decay=0.9)
    torch.manual_seed(0)
    straight = AdjointSampler(gmm, MLPDrift(1, 2, hidden=16), T, cfg)
    straight.train(max_energy_evaluations=200, progress=False)
    torch.manual_seed(0)
    first = AdjointSampler(gmm, MLPDrift(1, 2, hidden=16), T, cfg)
    first.train(max_energy_evaluations=100, checkpoint=tmp_path / "ckpt.pt", progress=False)
    resumed = AdjointSampler(gmm, MLPDrift(1, 2, hidden=16), T, cfg).load(tmp_path / "ckpt.pt")
    resumed.train(max_energy_evaluations=200, progress=False)
    assert resumed.average.n_averaged == straight.average.n_averaged == 1 + 4 * 3
    for a, b in zip(straight.average.module.parameters(), resumed.average.module.parameters()):
        assert torch.equal(a, b)
    trained, averaged = list(straight.net.parameters()), list(straight.average.module.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(trained, averaged))
    x = torch.randn(20, 1, 2, generator=gen())
    t1 = torch.ones(20)
    assert_close(straight.terminal_score(x), straight.sde.project(
        straight._drift(x, t1, straight.average.module) + straight.sde.reference_score(x)))

    plain = AdjointConfig(sigma_max=5.0, n_steps=10, samples_per_iteration=50, train_steps_per_iteration=3,
                          train_batch_size=32)
    AdjointSampler(gmm, MLPDrift(1, 2, hidden=16), T, plain).train(max_iterations=1, checkpoint=tmp_path / "old.pt",
                                                                    progress=False)
    state = torch.load(tmp_path / "old.pt", weights_only=True)
    del state["config"]["ema_decay"], state["average"], state["device_type"]  # as written before these existed
    torch.save(state, tmp_path / "old.pt")
    assert AdjointSampler(gmm, MLPDrift(1, 2, hidden=16), T, plain).load(tmp_path / "old.pt").iterations == 1
    with pytest.raises(ValueError, match="different config"):
        AdjointSampler(gmm, MLPDrift(1, 2, hidden=16), T, cfg).load(tmp_path / "old.pt")


def test_checkpoint_from_another_device_type_keeps_own_random_stream(tmp_path):
    """Generator states do not carry across device types: such a checkpoint restores everything else."""
    gmm = GaussianMixtureEnergy.grid(2)
    cfg = AdjointConfig(sigma_max=5.0, n_steps=10, samples_per_iteration=50, train_steps_per_iteration=2,
                        train_batch_size=32)
    a = AdjointSampler(gmm, MLPDrift(1, 2, hidden=16), T, cfg, seed=1)
    a.train(max_energy_evaluations=100, progress=False)
    state = torch.load(a.save(tmp_path / "ckpt.pt"), weights_only=True)
    state["device_type"] = "cuda"  # as written by a GPU run
    torch.save(state, tmp_path / "gpu.pt")
    b = AdjointSampler(gmm, MLPDrift(1, 2, hidden=16), T, cfg, seed=7).load(tmp_path / "gpu.pt")
    assert (b.iterations, b.energy_evaluations, len(b.buffer)) == (2, 100, 100)
    assert torch.equal(b.generator.get_state(), torch.Generator().manual_seed(7).get_state())
    c = AdjointSampler(gmm, MLPDrift(1, 2, hidden=16), T, cfg, seed=7).load(tmp_path / "ckpt.pt")
    assert torch.equal(c.generator.get_state(), a.generator.get_state())


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="runs the sampler on CUDA and this machine has no GPU; benchmarks/gpu_check_adjoint.sh runs it")
def test_cuda_sampler_trains_samples_and_hands_its_checkpoint_to_the_cpu(tmp_path):
    """DW-4 with an EGNN drift, tempered replay and posterior targets on the GPU; the checkpoint then loads on
    the CPU with the same drift."""
    dw4 = DoubleWellEnergy.dw4()
    cfg = AdjointConfig(sigma_max=3.0, n_steps=20, samples_per_iteration=100, train_steps_per_iteration=5,
                        train_batch_size=64, max_grad_norm=50.0, com_free=True, replay_ess=0.5,
                        posterior_target=True)
    gpu = AdjointSampler(dw4, EGNNDrift(hidden=16, n_layers=2, length_scale=4.0), T, cfg, device="cuda")
    gpu.train(max_energy_evaluations=400, checkpoint=tmp_path / "ckpt.pt", progress=False)
    res = gpu.sample(200)
    assert res.samples.device.type == "cuda" and res.energy_evaluations == 600
    assert torch.isfinite(res.log_weights).sum() > 100
    assert_close(res.samples.mean(1).cpu(), torch.zeros(200, 2), atol=1e-5)  # centre-of-mass free
    refined = gpu.refine(res.samples.cpu(), 5, 1e-3, progress=False)
    assert refined.device.type == "cuda" and torch.isfinite(refined).all()
    cpu = AdjointSampler(dw4, EGNNDrift(hidden=16, n_layers=2, length_scale=4.0), T, cfg).load(tmp_path / "ckpt.pt")
    assert cpu.buffer.x.device.type == "cpu" and cpu.energy_evaluations == 400
    x = res.samples[:50].cpu()
    assert_close(cpu.terminal_score(x), gpu.terminal_score(x).cpu(), rtol=1e-4, atol=1e-4)
    assert cpu.train(max_energy_evaluations=500, progress=False).energy_evaluations == 500

class _Exploding(torch.nn.Module):
    """A drift whose paths all diverge."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x, t):
        return torch.full_like(x, math.inf) * self.w


def test_diverged_paths_stop_training_with_a_clear_error():
    sampler = AdjointSampler(GaussianMixtureEnergy.grid(2), _Exploding(), T, AdjointConfig(n_steps=5))
    with pytest.raises(RuntimeError, match="diverged"):
        sampler.train(max_iterations=1, progress=False)


def test_importance_resampling_follows_the_weights():
    idx = importance_resample(torch.tensor([0.0, math.log(3.0), -math.inf]), 40_000, gen())
    assert torch.bincount(idx, minlength=3).tolist() == pytest.approx([10_000, 30_000, 0], rel=0.03, abs=0)


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_replay_batches_follow_the_tempered_path_weights(power):
    buffer = ReplayBuffer(capacity=3)
    buffer.add(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), torch.tensor([5.0]))  # pushed out by capacity
    buffer.add(torch.arange(3.0).reshape(3, 1, 1), -torch.arange(3.0).reshape(3, 1, 1),
               torch.tensor([0.0, math.log(3.0), -math.inf]))
    x, target = buffer.sample(40_000, gen(), power)
    assert torch.equal(target, -x)
    expected = np.array([1.0, 3.0**power, 0.0 if power else 1.0])
    counts = torch.bincount(x.flatten().long(), minlength=3).numpy()
    assert counts == pytest.approx(40_000 * expected / expected.sum(), rel=0.03, abs=0)


def test_replay_tempering_power_meets_the_ess_floor():
    """Gaussian log-weights with variance s²: the normalised ESS of w^β is exp(−β²s²)."""
    buffer = ReplayBuffer(capacity=200_000)
    log_w = 2.0 * torch.randn(200_000, generator=gen(), dtype=torch.float64)
    buffer.add(torch.zeros(200_000, 1, 1), torch.zeros(200_000, 1, 1), log_w)
    assert buffer.tempering_power(0.5) == pytest.approx(math.sqrt(math.log(2.0)) / 2.0, abs=0.01)
    assert buffer.tempering_power(1.0) == 0.0
    assert buffer.tempering_power(1e-9) == 1.0


def benchmark_module() -> dict:
    """The adjoint-sampling benchmark's globals (its targets and helpers), without running it."""
    import runpy
    return runpy.run_path(str(SYSTEMS.parent / "benchmarks" / "adjoint_sampling.py"))


def test_benchmark_summary_is_mean_and_spread_over_seeds():
    summarise = benchmark_module()["summarise"]
    runs = [{"target": "dw4", "seed": seed, "adjoint": {"energy_w2": w2}, "mcmc": {"energy_w2": 2 * w2},
             "hmc": {"energy_w2": 3 * w2}} for seed, w2 in enumerate([1.0, 2.0, 3.0])]
    summary = summarise(runs)
    assert summary["seeds"] == [0, 1, 2]
    assert summary["adjoint"]["energy_w2"] == {"mean": 2.0, "std": 1.0}
    assert summary["mcmc"]["energy_w2"] == {"mean": 4.0, "std": 2.0}
    assert summary["hmc"]["energy_w2"] == {"mean": 6.0, "std": 3.0}


class _NotPlainData:
    """An object a weights-only checkpoint load must refuse to unpickle."""


def test_checkpoint_load_refuses_arbitrary_objects(tmp_path):
    torch.save({"config": _NotPlainData()}, tmp_path / "ckpt.pt")
    sampler = AdjointSampler(GaussianMixtureEnergy.grid(2), MLPDrift(1, 2, hidden=16), T)
    with pytest.raises(pickle.UnpicklingError):
        sampler.load(tmp_path / "ckpt.pt")


def dw4_reference():
    data = np.load(SYSTEMS / "dw4-reference.npz")
    return torch.tensor(data["positions"], dtype=torch.float64)


@pytest.mark.slow
def test_dw4_within_2e5_evaluations_beside_mcmc():
    """Energy-W2 ≤ 0.6 and distance-W2 ≤ 0.15 after the Langevin corrector on the learned score, which makes no
    energy evaluations (~20 min on one core: the benchmark's DW-4 target, seed 0, 2000 samples). The raw SDE
    samples are printed, not checked: they run 1-1.5 kT hot (issue 6). At 4×10⁴ evaluations the corrector gave
    0.36 and 0.28; the benchmark's seed 2 gives 0.29 and 0.60."""
    bench = benchmark_module()
    target = bench["TARGETS"]["dw4"]
    torch.manual_seed(0)
    dw = target.energy()
    sampler = AdjointSampler(dw, bench["drift"](target), T, target.config)
    sampler.train(max_energy_evaluations=target.budget - 5000, progress=False)
    res = sampler.sample(2000, n_steps=target.sample_steps)
    refined = sampler.refine(res.samples, target.refine_steps, target.refine_step_size, progress=False)
    assert res.energy_evaluations == sampler.energy_evaluations <= target.budget
    ref = dw4_reference()
    ref_e = dw.reduced(ref, temperature=T)
    e_w2, d_w2 = energy_w2(dw.reduced(refined.double(), temperature=T), ref_e), distance_w2(refined, ref)
    mcmc = equal_budget_metropolis(dw, T, res.energy_evaluations, n_chains=500, init_scale=target.length_scale / 2,
                                   com_free=True, step_size=target.mcmc_step)
    print(f"\nDW-4 adjoint raw     ({res.energy_evaluations} evals): energy-W2 "
          f"{energy_w2(res.reduced_energies, ref_e):.3f}, distance-W2 {distance_w2(res.samples, ref):.3f}"
          f"\nDW-4 adjoint refined ({res.energy_evaluations} evals): energy-W2 {e_w2:.3f}, distance-W2 {d_w2:.3f}"
          f"\nDW-4 MCMC            ({mcmc.energy_evaluations} evals): energy-W2 "
          f"{energy_w2(mcmc.reduced_energies, ref_e):.3f}, distance-W2 {distance_w2(mcmc.samples, ref):.3f}")
    assert e_w2 <= 0.6 and d_w2 <= 0.15


# -- networks -----------------------------------------------------------------------------------------------------


def random_rotation(dim, seed):
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=gen(seed), dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else q.flip(1)


@pytest.mark.parametrize("dim,n_rbf", [(2, 0), (3, 0), (2, 8), (3, 8)])
def test_egnn_is_equivariant_and_com_free(dim, n_rbf):
    torch.manual_seed(0)
    net = EGNNDrift(hidden=16, n_layers=2, length_scale=1.0, n_rbf=n_rbf).double()
    x = torch.randn(3, 5, dim, generator=gen(1), dtype=torch.float64)
    t = torch.rand(3, generator=gen(2), dtype=torch.float64)
    out = net(x, t)
    assert_close(out.sum(1), torch.zeros(3, dim, dtype=torch.float64), atol=1e-12, rtol=0)
    rot = random_rotation(dim, 3)
    assert_close(net(x @ rot.T, t), out @ rot.T)
    perm = torch.randperm(5, generator=gen(4))
    assert_close(net(x[:, perm], t), out[:, perm])
    assert_close(net(x + torch.randn(3, 1, dim, generator=gen(5), dtype=torch.float64), t), out)
    out.pow(2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_gaussian_distance_features():
    rbf = GaussianDistances(5, 2.0)
    features = rbf(torch.tensor([0.0, 0.5, 0.75]))
    assert features.shape == (3, 5)
    assert_close(features[0, 0], torch.tensor(1.0))
    assert_close(features[1], torch.exp(-0.5 * torch.tensor([1.0, 0.0, 1.0, 4.0, 9.0])))
    assert_close(features[2, 1], features[2, 2])
    far = rbf(torch.tensor([30.0]))  # 60 widths out: the floor e^-60, not the exact (underflowing) Gaussian
    assert torch.all(far > 0) and torch.all(far <= math.exp(-60.0) * (1 + 1e-6))
    with pytest.raises(ValueError, match="n >= 2"):
        EGNNDrift(n_rbf=1)


def test_mlp_drift_shape():
    assert MLPDrift(2, 3, hidden=8)(torch.randn(4, 2, 3), torch.rand(4)).shape == (4, 2, 3)


# -- MCMC and metrics ---------------------------------------------------------------------------------------------


def test_metropolis_leaves_gaussian_invariant():
    k = torch.tensor([1.0, 4.0]) * units.kT(T)  # variances 1 and 0.25 per coordinate
    energy = HarmonicEnergy(torch.tensor([[0.5, -1.0], [0.0, 2.0]]), k)
    g = gen(0)
    x0 = energy.center + torch.randn(400, 2, 2, generator=g, dtype=torch.float64) / k.sqrt()[:, None]
    res = metropolis(energy, x0, T, 400, step_size=0.6, thin=20, generator=g)
    assert res.energy_evaluations == 400 * 401
    assert_close(res.samples.mean(0), energy.center, atol=0.05, rtol=0)
    var = res.samples.var(0)
    assert_close(var, torch.tensor([[1.0, 1.0], [0.25, 0.25]], dtype=torch.float64), atol=0.08, rtol=0)
    assert 0.2 < res.acceptance < 0.9


def test_hmc_leaves_gaussian_invariant():
    k = torch.tensor([1.0, 4.0]) * units.kT(T)  # variances 1 and 0.25 per coordinate
    energy = HarmonicEnergy(torch.tensor([[0.5, -1.0], [0.0, 2.0]]), k)
    g = gen(0)
    x0 = torch.zeros(400, 2, 2)  # off the target: the chains must relax to it, not only stay there
    res = hamiltonian_monte_carlo(energy, x0, T, 60, burn_in=20, step_size=0.3, n_leapfrog=5, thin=4, generator=g)
    assert res.energy_evaluations == 400 * (60 * 5 + 1)
    assert_close(res.samples.mean(0), energy.center, atol=0.04, rtol=0)
    var = res.samples.var(0)
    assert_close(var, torch.tensor([[1.0, 1.0], [0.25, 0.25]], dtype=torch.float64), atol=0.06, rtol=0)
    assert 0.6 < res.acceptance < 0.98


def test_hmc_rejects_diverging_trajectories_from_an_overlapping_start():
    lj = LennardJonesClusterEnergy(4, pair_factor=2.0, oscillator_scale=1.0)
    x0 = lattice_start(8, 4, 3, 1.1, gen(0))
    assert float((torch.cdist(x0, x0) + 9 * torch.eye(4)).min()) > 0.9 * 1.1
    x0[0, 1] = x0[0, 0] + 1e-3  # an overlap: forces of order 1e40 kJ/mol/nm
    res = hamiltonian_monte_carlo(lj, x0, T, 30, burn_in=10, n_leapfrog=5, anneal_from=4 * T, com_free=True,
                                  generator=gen(1))
    assert torch.isfinite(res.samples).all() and torch.isfinite(res.reduced_energies).all()
    assert_close(res.samples.mean(1), torch.zeros(len(res.samples), 3, dtype=torch.float64), atol=1e-9)


def test_equal_budget_hmc_stays_within_budget_and_finds_dw4_energies():
    dw = DoubleWellEnergy.dw4()
    res = equal_budget_hmc(dw, T, 20_000, n_chains=50, spacing=4.4, step_size=0.1, com_free=True)
    assert res.energy_evaluations == 50 * (39 * 10 + 1) <= 20_000
    assert len(res.samples) == 50 * 10
    reference_mean = REFERENCE_MEANS["dw4"][1]
    assert float(res.reduced_energies.mean()) == pytest.approx(reference_mean, abs=0.5)
    with pytest.raises(ValueError, match="too small"):
        equal_budget_hmc(dw, T, 1_000, n_chains=50, spacing=4.4)


def test_wasserstein_1d_exact():
    u = torch.randn(300, generator=gen(0)).numpy()
    v = torch.randn(170, generator=gen(1)).numpy() + 0.3
    assert wasserstein_1d(u, v, p=1) == pytest.approx(scipy.stats.wasserstein_distance(u, v), rel=1e-9)
    assert wasserstein_1d(u, u + 1.5, p=2) == pytest.approx(1.5)


def test_aligned_distance_removes_rotation_translation_and_permutation():
    y = torch.randn(6, 3, generator=gen(0), dtype=torch.float64).numpy() * 2
    rot = random_rotation(3, 1).numpy()
    z = (y @ rot.T + 3.0)[np.random.default_rng(0).permutation(6)]
    assert aligned_distance(y, z) == pytest.approx(0.0, abs=1e-8)
    assert aligned_w2(torch.tensor(y[None]), torch.tensor(z[None])) == pytest.approx(0.0, abs=1e-8)


def test_bad_inputs_raise():
    gmm = GaussianMixtureEnergy.grid(2)
    with pytest.raises(ValueError):
        GeometricSchedule(1.0, 0.5)
    with pytest.raises(ValueError):
        MemorylessSDE(n_steps=0)
    with pytest.raises(ValueError):
        AdjointConfig(n_steps=0)
    with pytest.raises(ValueError):
        AdjointConfig(lr=-1.0)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="replay_ess"):
            AdjointConfig(replay_ess=bad)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="ema_decay"):
            AdjointConfig(ema_decay=bad)
    with pytest.raises(ValueError):
        AdjointSampler(gmm, MLPDrift(1, 2), temperature=-1.0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            AdjointSampler(gmm, MLPDrift(1, 2), T, device="cuda")
    sampler = AdjointSampler(gmm, MLPDrift(1, 2), T)
    with pytest.raises(ValueError):
        sampler.sample(0)
    with pytest.raises(ValueError):
        sampler.train()
    with pytest.raises(ValueError):
        metropolis(gmm, torch.zeros(2, 2), T, 10)
    with pytest.raises(ValueError):
        metropolis(gmm, torch.zeros(2, 1, 2), T, 10, burn_in=10)
    with pytest.raises(ValueError, match="n_leapfrog"):
        hamiltonian_monte_carlo(gmm, torch.zeros(2, 1, 2), T, 10, n_leapfrog=0)
    with pytest.raises(ValueError):
        lattice_start(2, 4, 3, spacing=0.0)
    with pytest.raises(ValueError):
        wasserstein_1d([], [1.0])
    with pytest.raises(ValueError):
        aligned_w2(torch.zeros(2, 3, 3), torch.zeros(3, 3, 3))
    with pytest.raises(ValueError):
        EGNNDrift()(torch.zeros(2, 1, 3), torch.zeros(2))
