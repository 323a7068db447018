"""Neural thermodynamic integration and FEAT against analytic free energies.

Gaussians in d = 10 (exact ΔF = −½ log det Σ₁/Σ₀ + offset), exact endpoints, ∂u/∂λ by autograd vs
finite differences, checkpoint/resume, φ⁴ sectors (ΔF = 0 by symmetry) and bad input.
"""
import numpy as np
import pytest
import torch

from molfree import units
from molfree.freeenergy.feat import (
    Transport,
    VelocityField,
    controlled_crooks,
    escorted_jarzynski,
)
from molfree.freeenergy.neural_ti import (
    LambdaPotential,
    MLPCorrection,
    PairCorrection,
    estimate,
    mala,
    train,
)

torch.set_num_threads(1)
D = 10


def gaussian_problem():
    """u₀ = ½|x|², u₁ = ½(x − μ)ᵀΣ₁⁻¹(x − μ) + c; 4000 exact samples of each."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(D, D, generator=g, dtype=torch.float64) * 0.3
    cov = a @ a.T + 0.5 * torch.eye(D, dtype=torch.float64)
    mean = torch.randn(D, generator=g, dtype=torch.float64) * 0.5
    precision, offset = torch.linalg.inv(cov), 0.3

    def u0(x):
        return 0.5 * (x**2).sum(-1)

    def u1(x):
        y = x - mean
        return 0.5 * ((y @ precision) * y).sum(-1) + offset

    x0 = torch.randn(4000, D, generator=g, dtype=torch.float64)
    x1 = mean + torch.randn(4000, D, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    return u0, u1, x0, x1, exact_delta_f(cov, offset)


@pytest.fixture(scope="module")
def gaussians():
    return gaussian_problem()


def exact_delta_f(cov: torch.Tensor, offset: float) -> float:
    """F₁ − F₀ = −ln(Z₁/Z₀) = −½ log det Σ₁ + c for unit Σ₀."""
    return -0.5 * float(torch.logdet(cov)) + offset


def test_endpoints_exact_and_dudl_matches_finite_differences(gaussians):
    u0, u1, x0, x1, _ = gaussians
    potential = LambdaPotential(u0, u1, MLPCorrection(D, 16, 2))
    with torch.no_grad():
        potential.schedule.raw.copy_(torch.linspace(-1, 1, 5, dtype=torch.float64))
    x = torch.cat([x0[:5], x1[:5]])
    assert torch.equal(potential(x, 0.0), u0(x)) and torch.equal(potential(x, 1.0), u1(x))
    energy = potential.at(1.0, temperature=300.0, dim=1)
    assert torch.allclose(energy(x[:, :, None]), units.kT(300.0) * u1(x), rtol=1e-14, atol=0)
    h = 1e-6
    for lam in (0.2, 0.5, 0.9):
        fd = (potential(x, lam + h) - potential(x, lam - h)) / (2 * h)
        assert torch.allclose(potential.dudl(x, lam), fd, rtol=1e-6, atol=1e-6)


def test_neural_ti_gaussian_within_a_tenth_kt(gaussians, tmp_path):
    """d = 10: TSM training (~20 s), interpolant samples refined by 20 MALA steps at 10 GL nodes."""
    u0, u1, x0, x1, exact = gaussians
    torch.manual_seed(0)
    potential = LambdaPotential(u0, u1, MLPCorrection(D, 64, 2))
    train(potential, x0, x1, steps=1000, progress=False, checkpoint=tmp_path / "nti.pt")
    result = estimate(potential, x0, x1, n_lambdas=10, n_samples=1500, langevin_steps=20, step_size=0.1)
    print(f"neural TI {result.delta_f:.4f} ± {result.error:.4f} kT, exact {exact:.4f} kT, "
          f"{result.details['energy_evaluations']} u_θ evaluations")
    assert abs(result.delta_f - exact) <= 0.1
    assert abs(result.delta_f - exact) <= 4 * result.error + 0.02


def test_checkpoint_resume_is_exact(gaussians, tmp_path, monkeypatch):
    """Interrupted at step 25 with checkpoints every 10: resuming reproduces the uninterrupted run."""
    u0, u1, x0, x1, _ = gaussians

    def model():
        torch.manual_seed(3)
        return LambdaPotential(u0, u1, MLPCorrection(D, 8, 1))

    reference = model()
    train(reference, x0, x1, steps=30, batch_size=32, progress=False)
    interrupted, calls = model(), {"n": 0}
    step = torch.optim.Adam.step

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 25:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", failing)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, x0, x1, steps=30, batch_size=32, progress=False, checkpoint=tmp_path / "c.pt",
              checkpoint_every=10)
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    resumed = model()
    losses = train(resumed, x0, x1, steps=30, batch_size=32, progress=False, checkpoint=tmp_path / "c.pt",
                   checkpoint_every=10)
    assert len(losses) == 10
    for a, b in zip(reference.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_feat_gaussian_within_a_tenth_kt(gaussians):
    """Velocity field (1000 steps) and energy (300 TSM steps) fitted; 500 + 500 trajectories of 20 steps,
    deterministic (Heun) and stochastic (ε = 0.05, Euler–Maruyama); the bounds bracket ΔF."""
    u0, u1, x0, x1, exact = gaussians
    torch.manual_seed(0)
    transport = Transport(VelocityField(D, 64, 2), LambdaPotential(u0, u1, MLPCorrection(D, 16, 1)))
    transport.fit(x0, x1, steps=1000, energy_steps=300, progress=False)
    crooks = controlled_crooks(transport, x0[:500], x1[:500], n_steps=20)
    escorted = escorted_jarzynski(transport, x0[500:1000], n_steps=20)
    stochastic = controlled_crooks(transport, x0[1000:1500], x1[1000:1500], n_steps=20, epsilon=0.05)
    print(f"FEAT Crooks {crooks.delta_f:.4f} ± {crooks.error:.4f}, escorted Jarzynski {escorted.delta_f:.4f} ± "
          f"{escorted.error:.4f}, exact {exact:.4f} kT; bounds [{crooks.details['lower_bound']:.3f}, "
          f"{crooks.details['upper_bound']:.3f}]")
    print(f"FEAT stochastic (ε = 0.05) Crooks {stochastic.delta_f:.4f} ± {stochastic.error:.4f} kT")
    for result in (crooks, escorted, stochastic):
        assert abs(result.delta_f - exact) <= 0.1
    for result in (crooks, stochastic):
        assert result.details["lower_bound"] <= exact <= result.details["upper_bound"]
    assert escorted.details["upper_bound"] >= exact


def phi4_action(kappa: float, coupling: float, side: int):
    """Lattice φ⁴ action S(φ) on a periodic ``side × side`` lattice, ``[B, side²] -> [B]``."""
    def action(phi):
        grid = phi.reshape(-1, side, side)
        hopping = grid * (torch.roll(grid, 1, 1) + torch.roll(grid, 1, 2))
        return (-2 * kappa * hopping + grid**2 + coupling * (grid**2 - 1) ** 2).flatten(1).sum(-1)
    return action


def phi4_sector_delta_f(side: int, fit_steps: int):
    """ΔF(+ → −) (kT) on a ``side × side`` φ⁴ lattice (κ = 0.25, λ₄ = 0.5), sectors selected by a field ±0.3.

    u± = S ∓ h Σφ, so ΔF = 0 by φ → −φ symmetry. Estimator: FEAT controlled Crooks (BAR,
    molfree.freeenergy.bar) on works of a learned transport; endpoint samples by MALA on the exact
    endpoints (2000 for training, 1000 + 1000 for the works).
    """
    h, dim = 0.3, side * side
    action = phi4_action(0.25, 0.5, side)
    torch.manual_seed(0)
    energy = LambdaPotential(lambda p: action(p) - h * p.sum(-1), lambda p: action(p) + h * p.sum(-1),
                             MLPCorrection(dim, 16, 1))
    start = torch.randn(3000, dim, dtype=torch.float64) * 0.1
    plus, _ = mala(energy, start + 1.0, 0.0, 200, 0.05, seed=1)
    minus, _ = mala(energy, start - 1.0, 1.0, 200, 0.05, seed=2)
    assert plus.mean() > 0.4 and minus.mean() < -0.4
    transport = Transport(VelocityField(dim, 64, 2), energy)
    transport.fit(plus[:2000], minus[:2000], steps=fit_steps, progress=False)
    result = controlled_crooks(transport, plus[2000:], minus[2000:], n_steps=20)
    print(f"φ⁴ {side}×{side}: ΔF(+ → −) = {result.delta_f:.4f} ± {result.error:.4f} kT")
    return result


def test_phi4_sectors_have_equal_free_energy_fast():
    """3 × 3 lattice: ΔF = 0 within 3σ."""
    result = phi4_sector_delta_f(3, 600)
    assert abs(result.delta_f) <= 3 * result.error


@pytest.mark.slow
def test_phi4_sectors_have_equal_free_energy():
    """4 × 4 lattice: ΔF = 0 within 3σ and 0.1 kT."""
    result = phi4_sector_delta_f(4, 1000)
    assert abs(result.delta_f) <= 3 * result.error and abs(result.delta_f) <= 0.1


def test_pair_correction_is_permutation_invariant_and_periodic():
    torch.manual_seed(0)
    box = torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64)
    net = PairCorrection(0.9, box=box, solute=[0])
    x = torch.rand(3, 6, 3, dtype=torch.float64) * 2
    lam = torch.tensor(0.3, dtype=torch.float64)
    permuted = x[:, [0, 3, 1, 5, 2, 4]]
    shifted = x + box * torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    assert torch.allclose(net(x, lam), net(permuted, lam)) and torch.allclose(net(x, lam), net(shifted, lam))


def test_bad_input_is_rejected(gaussians):
    u0, u1, x0, x1, _ = gaussians
    potential = LambdaPotential(u0, u1, MLPCorrection(D, 8, 1))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            potential(x0[:4], bad)
    broken = LambdaPotential(u0, lambda x: u1(x) * float("nan"), MLPCorrection(D, 8, 1))
    with pytest.raises(ValueError, match="NaN"):
        broken(x0[:4], 0.5)
    with pytest.raises(ValueError, match="NaN"):
        train(broken, x0, x1, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        potential.at(1.2, 300.0)
    with pytest.raises(ValueError):
        Transport(VelocityField(D, 8, 1), potential).work(x0[:4], n_steps=0)


def particle_potential() -> LambdaPotential:
    """Five particles in a 2 nm box: harmonic wells u₀, u₁ (kT) and a pair network with minimum image."""
    box = torch.full((3,), 2.0, dtype=torch.float64)
    torch.manual_seed(5)
    return LambdaPotential(lambda x: 0.5 * ((x - 1.0) ** 2).flatten(1).sum(-1),
                           lambda x: 2.0 * ((x - 0.8) ** 2).flatten(1).sum(-1),
                           PairCorrection(0.9, box=box))


def test_openmm_force_and_ase_calculator_follow_lambda():
    """NeuralTIForce (Context parameter ``lambda``) and NeuralTICalculator (``lam``) reproduce kT·u_θ and −∇."""
    import openmm
    from ase import Atoms
    from molfree.ase import NeuralTICalculator
    from molfree.openmm import NeuralTIForce
    from openmm import unit

    potential, temperature = particle_potential(), 300.0
    x = torch.rand(1, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2
    system = openmm.System()
    for _ in range(5):
        system.addParticle(1.0)
    system.addForce(NeuralTIForce(potential, temperature, lam=0.0))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(x[0].numpy() * unit.nanometer)
    calculator = NeuralTICalculator(potential, temperature)
    atoms = Atoms("X5", positions=x[0].numpy() * units.NM_TO_ANGSTROM, calculator=calculator)
    for lam in (0.0, 0.4, 1.0):
        context.setParameter("lambda", lam)
        state = context.getState(getEnergy=True, getForces=True)
        u, force = potential.score(x, lam)
        expected = units.kT(temperature) * float(u[0])
        assert state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == pytest.approx(expected, rel=1e-12)
        np.testing.assert_allclose(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer),
                                   units.kT(temperature) * force[0].numpy(), rtol=1e-10, atol=1e-10)
        calculator.set(lam=lam)
        assert atoms.get_potential_energy() == pytest.approx(expected * units.KJ_PER_MOL_TO_EV, rel=1e-12)
        np.testing.assert_allclose(atoms.get_forces(), units.kT(temperature) * force[0].numpy()
                                   * units.KJ_PER_MOL_TO_EV * units.ANGSTROM_TO_NM, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calculator.set(lam=-0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        NeuralTIForce(potential, temperature, lam=2.0)
