"""Adjoint Sampling (Havens et al. 2025): reciprocal adjoint matching with a replay buffer.

For the memoryless process of :mod:`molfree.samplers.sde` the terminal cost is
g(x) = E(x)/kT + ln p_ref(x) with p_ref = N(0, ν(1) I); the lean adjoint is constant along a
path (the reference drift is zero), so the optimal control is u* = −σ(t) E[∇g(X₁) | X_t].
Training alternates: simulate terminal points with the current drift, evaluate the
(norm-clipped) energy gradient once per sample, store ``(x₁, −∇g(x₁))`` in a replay buffer,
then regress ``v_θ(X_t, t)`` (u = σ v) onto ``−∇g(x₁)`` for X_t drawn from the reference
Brownian bridge between 0 and x₁ — many regression steps per energy evaluation. Regressing
``v = u/σ`` with t drawn half uniformly, half with density ∝ σ(t)², has the same minimiser as
the paper's loss on ``u`` (a per-time reweighting of the same conditional expectation).

The buffer also keeps each sample's exact path log-weight (the energy comes with the gradient, so
at no extra evaluation). With ``AdjointConfig.replay_ess`` < 1, batches are drawn ∝ w^β, β tempered
adaptively: this gives the regression a pull on the basins' weights, to which the plain objective
is blind.
"""
from __future__ import annotations

import io as _io
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..averaging import WeightAverage
from ..energy import Energy
from ..io import atomic_write_bytes
from .metrics import log_mean_exp, normalised_ess
from .probability_flow import ProbabilityFlow
from .sde import GeometricSchedule, MemorylessSDE


@dataclass
class AdjointConfig:
    """Hyper-parameters (lengths in nm, the target's unit).

    sigma_min, sigma_max: noise schedule; n_steps: Euler–Maruyama steps;
    samples_per_iteration: new terminal samples (= energy evaluations) per iteration;
    buffer_size: replay buffer capacity; train_steps_per_iteration, train_batch_size: regression steps;
    lr: Adam learning rate; clip_param_grad: norm clip of the parameter gradient;
    drift_length: ℓ of the drift's time profile (see :meth:`AdjointSampler._drift`), about the width
    of the target's features; max_grad_norm: per-sample norm clip of ∇E/kT (1/nm), None for no clip;
    com_free: sample in the centre-of-mass-free subspace (particle systems);
    replay_ess: regression batches are drawn from the buffer ∝ w^β, w each sample's exact path weight,
    with the largest β ∈ [0, 1] whose normalised effective sample size over the buffer is at least
    ``replay_ess`` (adaptive tempering; 1 keeps β = 0, uniform draws, plain adjoint sampling). The plain
    objective leaves any density ∝ exp(−E/kT) within each basin where it is, whatever the basins'
    weights, so the weights drift; β > 0 pulls them towards the target's.
    posterior_target: regress onto the mean of −∇g over the whole buffer under the bridge posterior of the
    end points given X_t, instead of the one drawn end point's −∇g: the same minimiser (the conditional
    expectation under the buffer's distribution) with less variance where the remaining noise spans
    several buffer points (the "stable target field" of Xu et al. 2023). Costs a [batch, buffer] kernel
    per regression step, no energy evaluations.
    ema_decay: decay per regression step of an exponential moving average of the drift's weights (with
    warm-up, :class:`~molfree.averaging.WeightAverage`); 0 for none. When > 0, :meth:`AdjointSampler.sample`,
    ``log_z``, ``terminal_score`` and ``refine`` use the averaged drift, while training keeps filling the
    buffer with the current one: the average damps the drift's swings between iterations.
    """

    sigma_min: float = 0.01
    sigma_max: float = 3.0
    n_steps: int = 100
    samples_per_iteration: int = 500
    buffer_size: int = 10_000
    train_steps_per_iteration: int = 50
    train_batch_size: int = 512
    lr: float = 1e-3
    max_grad_norm: float | None = 100.0
    clip_param_grad: float = 1.0
    drift_length: float = 1.0
    com_free: bool = False
    replay_ess: float = 1.0
    posterior_target: bool = False
    ema_decay: float = 0.0

    def __post_init__(self):
        for name in ("n_steps", "samples_per_iteration", "buffer_size", "train_steps_per_iteration",
                     "train_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.clip_param_grad > 0 and self.drift_length > 0) or (
                self.max_grad_norm is not None and not self.max_grad_norm > 0):
            raise ValueError("lr, clip_param_grad, drift_length and max_grad_norm must be positive")
        if not 0.0 < self.replay_ess <= 1.0:
            raise ValueError(f"replay_ess must be in (0, 1], got {self.replay_ess}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class TrainResult:
    """Summary of a :meth:`AdjointSampler.train` call; counters are totals over resumes."""

    iterations: int
    energy_evaluations: int
    wall_time_s: float
    losses: list[float] = field(default_factory=list)


@dataclass
class SampleResult:
    """Samples ``[n, N, dim]`` (nm), log importance weights ``[n]`` and reduced energies E/kT ``[n]``."""

    samples: torch.Tensor
    log_weights: torch.Tensor
    reduced_energies: torch.Tensor
    energy_evaluations: int


@dataclass
class LogZEstimate:
    """ln Z on the sampled subspace: ``lower_bound`` = mean ln w, ``reweighted`` = ln mean w; ESS ∈ (0, 1]."""

    lower_bound: float
    reweighted: float
    ess: float
    n_samples: int
    energy_evaluations: int


class ReplayBuffer:
    """FIFO store of terminal points ``[M, N, dim]``, their regression targets ``[M, N, dim]`` and their
    path log-weights ``[M]``."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.x: torch.Tensor | None = None
        self.target: torch.Tensor | None = None
        self.log_weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.x is None else self.x.shape[0]

    def add(self, x: torch.Tensor, target: torch.Tensor, log_weights: torch.Tensor) -> None:
        """Append a batch and drop the oldest entries beyond capacity."""
        if self.x is None:
            self.x, self.target, self.log_weights = x, target, log_weights
        else:
            self.x, self.target = torch.cat([self.x, x]), torch.cat([self.target, target])
            self.log_weights = torch.cat([self.log_weights, log_weights])
        self.x, self.target = self.x[-self.capacity:], self.target[-self.capacity:]
        self.log_weights = self.log_weights[-self.capacity:]

    def sample(self, n: int, generator=None, power: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` entries drawn with replacement, with probability ∝ w^power (uniformly for 0)."""
        if power == 0.0:
            idx = torch.randint(len(self), (n,), generator=generator, device=self.x.device)
        else:
            probs = torch.softmax(power * self.log_weights, dim=0)
            idx = torch.multinomial(probs, n, replacement=True, generator=generator)
        return self.x[idx], self.target[idx]

    def posterior_mean(self, log_kernel: torch.Tensor, power: float = 0.0) -> torch.Tensor:
        """Mean target ``[B, N, dim]`` under weights ∝ exp(``log_kernel`` ``[B, M]``) w^power over the buffer."""
        weights = torch.softmax(log_kernel + power * self.log_weights.double(), dim=1)
        return (weights.to(self.target.dtype) @ self.target.flatten(1)).view(-1, *self.target.shape[1:])

    def tempering_power(self, min_ess: float, tolerance: float = 1e-3) -> float:
        """Largest β ∈ [0, 1] with normalised ESS of w^β over the buffer ≥ ``min_ess`` (bisection; the
        ESS falls as β grows)."""
        if min_ess >= 1.0:
            return 0.0
        if normalised_ess(self.log_weights) >= min_ess:
            return 1.0
        low, high = 0.0, 1.0
        while high - low > tolerance:
            mid = 0.5 * (low + high)
            low, high = (mid, high) if normalised_ess(mid * self.log_weights) >= min_ess else (low, mid)
        return low


class AdjointSampler:
    """Adjoint sampler of exp(−E/kT) for an :class:`~molfree.Energy` with fixed ``n_atoms`` and ``dim``.

    Args:
        energy: the target (kJ/mol, positions nm).
        drift_net: ``v(x [B, N, dim], t [B]) -> [B, N, dim]`` (e.g. :class:`~.networks.EGNNDrift`).
        temperature: K (``molfree.units.REDUCED_TEMPERATURE`` for kT = 1 kJ/mol).
        config: :class:`AdjointConfig`.
        seed: seeds the sampler's random generator.
        device: where the drift, the paths, the replay buffer and the random generator live (e.g. ``"cuda"``);
            the energy is called on positions there, so it must accept them (molfree's analytic energies do).

    Every result reports ``energy_evaluations``: the running total of energy (and gradient)
    evaluations of the target made by this sampler, across checkpoints.
    """

    def __init__(self, energy: Energy, drift_net: torch.nn.Module, temperature: float,
                 config: AdjointConfig | None = None, seed: int = 0, device: torch.device | str = "cpu"):
        if energy.n_atoms is None:
            raise ValueError("the energy must have a fixed number of particles (n_atoms)")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive (K), got {temperature!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: torch sees no CUDA device (a CPU build of torch, or no GPU)")
        self.energy = energy
        self.net = drift_net.to(self.device)
        self.temperature = float(temperature)
        self.config = config or AdjointConfig()
        self.shape = (energy.n_atoms, energy.dim)
        self.sde = MemorylessSDE(GeometricSchedule(self.config.sigma_min, self.config.sigma_max),
                                 com_free=self.config.com_free, n_steps=self.config.n_steps)
        self.buffer = ReplayBuffer(self.config.buffer_size)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)
        self.average = WeightAverage(self.net, self.config.ema_decay) if self.config.ema_decay > 0 else None
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.iterations = 0
        self.replay_power = 0.0
        self.energy_evaluations = 0
        self.wall_time_s = 0.0

    # -- target -------------------------------------------------------------------------------------------

    def reduced_energy(self, x: torch.Tensor) -> torch.Tensor:
        """E/kT ``[B]`` of positions ``[B, N, dim]`` in float64 (+inf for non-finite positions, which
        are not evaluated); counts the evaluations."""
        finite = torch.isfinite(x).flatten(1).all(1)
        self.energy_evaluations += int(finite.sum())
        out = torch.full((x.shape[0],), math.inf, dtype=torch.float64, device=x.device)
        with torch.no_grad():
            out[finite] = self.energy.reduced(x[finite].double(), temperature=self.temperature)
        return out

    def _reduced_energy_and_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E/kT ``[B]`` (float64) and ∇(E/kT) ``[B, N, dim]`` (1/nm), the gradient norm-clipped per sample;
        one evaluation each, counts ``B``."""
        self.energy_evaluations += x.shape[0]
        with torch.enable_grad():
            xd = x.detach().double().requires_grad_(True)
            reduced = self.energy.reduced(xd, temperature=self.temperature)
            (grad,) = torch.autograd.grad(reduced.sum(), xd)
        grad = self.sde.project(grad)
        if self.config.max_grad_norm is not None:
            norm = grad.flatten(1).norm(dim=1).clamp_min(1e-30)[:, None, None]
            grad = grad * (self.config.max_grad_norm / norm).clamp(max=1.0)
        return reduced.detach(), grad.to(x.dtype)

    # -- training -----------------------------------------------------------------------------------------

    def _shrink(self, t: torch.Tensor) -> torch.Tensor:
        """c(t) = ℓ² / (ℓ² + ν(1) − ν(t)) ∈ (0, 1], ``[B]`` float64."""
        ell2 = self.config.drift_length**2
        return ell2 / (ell2 + self.sde.terminal_variance() - self.sde.schedule.variance(t.double()))

    def _drift(self, x: torch.Tensor, t: torch.Tensor, net: torch.nn.Module | None = None) -> torch.Tensor:
        """v(x, t) = c(t) net(x, t), ``[B, N, dim]`` (1/nm), with the training network unless ``net`` is given.

        The optimal v* = (E[X₁ | X_t = x] − x)/(ν(1) − ν(t)) shrinks at early, high-noise times; the
        factor gives the network that shape, so a step s² v stays stable (s² ≲ 0.3 (ν(1) − ν(t)))
        while the network is still poor.
        """
        return self.sde.project((self.net if net is None else net)(x, t)) * self._shrink(t).to(x.dtype)[:, None, None]

    def _sampling_drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The drift that samples: the weight average's when ``config.ema_decay`` > 0, else the training one."""
        return self._drift(x, t, None if self.average is None else self.average.module)

    def _collect(self) -> None:
        """Simulate new terminal points, evaluate their gradients once, fill the buffer."""
        x1, log_ratio = self.sde.simulate(self._drift, self.config.samples_per_iteration, self.shape,
                                          generator=self.generator)
        finite = torch.isfinite(x1).flatten(1).all(1)
        x1, log_ratio = x1[finite], log_ratio[finite]
        if not len(x1):
            raise RuntimeError("every simulated path diverged (non-finite terminal points); lower lr or sigma_max, "
                               "or raise n_steps")
        reduced, grad = self._reduced_energy_and_gradient(x1)
        target = -self.sde.reference_score(x1) - grad  # −∇g = −∇E/kT − ∇ ln p_ref
        log_weights = self.sde.log_weights(x1, log_ratio, reduced)
        finite = torch.isfinite(target).flatten(1).all(1) & torch.isfinite(log_weights)
        self.buffer.add(x1[finite], target[finite], log_weights[finite])
        self.replay_power = self.buffer.tempering_power(self.config.replay_ess)

    def _training_times(self, n: int) -> torch.Tensor:
        """Times ``[n]`` from ½ U(0, 1) + ½ (density ∝ σ(t)²): the early, high-noise times carry most of
        the path KL ½ E ∫ σ² ‖v − v*‖² dt, the late ones the fine structure."""
        u = torch.rand(n, generator=self.generator, dtype=torch.float64, device=self.device)
        by_variance = self.sde.schedule.time_of_variance(u * self.sde.terminal_variance())
        return torch.where(torch.rand(n, generator=self.generator, device=self.device) < 0.5, u, by_variance)

    def _regress(self) -> float:
        """One adjoint-matching step on a replay-buffer batch; returns the loss."""
        x1, target = self.buffer.sample(self.config.train_batch_size, self.generator, self.replay_power)
        t = self._training_times(x1.shape[0]).to(x1.dtype)
        xt = self.sde.bridge(x1, t, self.generator)
        if self.config.posterior_target:
            target = self.buffer.posterior_mean(self.sde.bridge_log_kernel(xt, t, self.buffer.x), self.replay_power)
        # weight 1/c(t) partly undoes the c² damping of the network's gradient at early times
        loss = ((self._drift(xt, t) - target).pow(2).sum((-1, -2)) / self._shrink(t).to(xt.dtype)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.clip_param_grad)
        self.optimizer.step()
        if self.average is not None:
            self.average.update(self.net)
        return float(loss.detach())

    def train(self, max_energy_evaluations: int | None = None, max_iterations: int | None = None,
              checkpoint: str | Path | None = None, checkpoint_every: int = 50, progress: bool = True) -> TrainResult:
        """Train until the total energy evaluations or iterations reach the given budgets.

        Budgets are totals, so calling again after :meth:`load` resumes towards the same budget.
        ``checkpoint`` is written atomically every ``checkpoint_every`` iterations and at the end.
        """
        if max_energy_evaluations is None and max_iterations is None:
            raise ValueError("give max_energy_evaluations and/or max_iterations")
        cfg = self.config

        def done() -> bool:
            return ((max_iterations is not None and self.iterations >= max_iterations) or
                    (max_energy_evaluations is not None and
                     self.energy_evaluations + cfg.samples_per_iteration > max_energy_evaluations))

        losses: list[float] = []
        start = time.perf_counter()
        bar = tqdm(total=max_energy_evaluations or max_iterations, initial=min(
            self.energy_evaluations if max_energy_evaluations else self.iterations,
            max_energy_evaluations or max_iterations), disable=not progress, desc="adjoint sampling",
            unit="evals" if max_energy_evaluations else "it")
        while not done():
            before = self.energy_evaluations
            self._collect()
            loss = sum(self._regress() for _ in range(cfg.train_steps_per_iteration)) / cfg.train_steps_per_iteration
            losses.append(loss)
            self.iterations += 1
            bar.update(self.energy_evaluations - before if max_energy_evaluations else 1)
            bar.set_postfix(loss=f"{loss:.3g}", evals=self.energy_evaluations,
                            **({"beta": f"{self.replay_power:.2f}"} if cfg.replay_ess < 1 else {}))
            if checkpoint is not None and self.iterations % checkpoint_every == 0:
                self.wall_time_s += time.perf_counter() - start
                start = time.perf_counter()
                self.save(checkpoint)
        bar.close()
        self.wall_time_s += time.perf_counter() - start
        if checkpoint is not None:
            self.save(checkpoint)
        return TrainResult(self.iterations, self.energy_evaluations, self.wall_time_s, losses)

    # -- sampling and estimates ---------------------------------------------------------------------------

    def sample(self, n: int, n_steps: int | None = None, batch_size: int = 2000) -> SampleResult:
        """``n`` samples with importance log-weights (counts ``n`` energy evaluations)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        xs, logws, us = [], [], []
        for i in range(0, n, batch_size):
            x1, log_ratio = self.sde.simulate(self._sampling_drift, min(batch_size, n - i), self.shape, n_steps,
                                              generator=self.generator)
            u = self.reduced_energy(x1)
            xs.append(x1)
            us.append(u)
            logws.append(self.sde.log_weights(x1, log_ratio, u))
        return SampleResult(torch.cat(xs), torch.cat(logws), torch.cat(us), self.energy_evaluations)

    def terminal_score(self, x: torch.Tensor) -> torch.Tensor:
        """The learned score of the target, ∇ ln p(x) ≈ −∇E/kT: v(x, 1) + ∇ ln p_ref(x), ``[B, N, dim]`` (1/nm).

        At t = 1 the bridge has no noise left, so the regression target there is −∇g(x₁) at x₁ itself:
        the drift's terminal value is a force-matching fit of −∇E/kT − ∇ ln p_ref on the buffer.
        """
        x = x.to(self.device)
        with torch.no_grad():
            v = self._sampling_drift(x, torch.ones(x.shape[0], dtype=x.dtype, device=x.device))
            return self.sde.project(v + self.sde.reference_score(x))

    def refine(self, x: torch.Tensor, n_steps: int, step_size: float, progress: bool = True) -> torch.Tensor:
        """Langevin corrector: ``n_steps`` unadjusted Langevin steps x ← x + ε s(x) + √(2ε) ξ on the learned
        :meth:`terminal_score` s, from samples ``x`` ``[B, N, dim]``; returns ``[B, N, dim]``.

        Makes no energy evaluations. It relaxes each sample towards the Boltzmann distribution of the learned
        score within its basin; over barriers it can cross in ``n_steps`` ε, the basin weights become the learned
        score's too, elsewhere they stay the SDE's. The refined samples have no importance weights, and the
        step's bias grows with ``step_size`` ε (nm²), which must stay well below the squared width of the
        target's narrowest feature.
        """
        if x.ndim != 3 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have shape [B, {self.shape[0]}, {self.shape[1]}], got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("x holds non-finite coordinates")
        if n_steps < 0 or not step_size > 0:
            raise ValueError(f"need n_steps >= 0 and step_size > 0, got {n_steps} and {step_size}")
        x = x.to(self.device)
        noise_scale = math.sqrt(2 * step_size)
        for _ in tqdm(range(n_steps), disable=not progress, desc="Langevin corrector", unit="step"):
            noise = self.sde.project(torch.randn(x.shape, generator=self.generator, dtype=x.dtype))
            x = x + step_size * self.terminal_score(x) + noise_scale * noise
        return x

    def probability_flow(self, n_steps: int = 100, batch_size: int = 256) -> ProbabilityFlow:
        """The sampling drift's probability-flow ODE (:class:`~.probability_flow.ProbabilityFlow`): a deterministic
        generator with an exact density, e.g. the proposal of ``molfree.openmm.GeneratorMove``. It shares this
        sampler's drift (later training changes it) and random generator, and makes no energy evaluations."""
        dtype = next(self.net.parameters()).dtype
        return ProbabilityFlow(self.sde, self._sampling_drift, self.shape, self.temperature, n_steps, dtype,
                               self.device, self.generator, batch_size)

    def log_z(self, n: int = 10_000, n_steps: int | None = None) -> LogZEstimate:
        """ln Z of exp(−E/kT) from ``n`` weighted samples: ELBO lower bound and the reweighted estimate."""
        logw = self.sample(n, n_steps).log_weights
        return LogZEstimate(float(logw.mean()), float(log_mean_exp(logw)), float(normalised_ess(logw)), n,
                            self.energy_evaluations)

    # -- checkpoints --------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write network, optimiser, buffer, counters and RNG state atomically to ``path`` (tensors as they are,
        on the sampler's device)."""
        state = {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "buffer": (self.buffer.x, self.buffer.target, self.buffer.log_weights), "iterations": self.iterations,
                 "energy_evaluations": self.energy_evaluations, "wall_time_s": self.wall_time_s,
                 "generator": self.generator.get_state(), "config": asdict(self.config),
                 "temperature": self.temperature, "device_type": self.device.type,
                 "average": None if self.average is None else self.average.state_dict()}
        data = _io.BytesIO()
        torch.save(state, data)
        return atomic_write_bytes(path, data.getvalue())

    def load(self, path: str | Path) -> AdjointSampler:
        """Restore a :meth:`save` checkpoint (same network architecture and config) to resume or sample.

        Loads with ``weights_only=True``: the file holds only tensors and plain containers, so
        loading never executes code from it. Tensors are mapped onto this sampler's device; a checkpoint from
        another kind of device (e.g. trained on a GPU, sampled on the CPU) keeps this sampler's own random
        stream, since generator states do not carry across device types.
        """
        state = torch.load(path, weights_only=True, map_location=self.device)
        saved_config = {**asdict(AdjointConfig()), **state["config"]}  # fields added since ran at their defaults
        if saved_config != asdict(self.config) or not math.isclose(state["temperature"], self.temperature):
            raise ValueError(f"checkpoint {path} was written with a different config or temperature")
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        self.buffer.x, self.buffer.target, self.buffer.log_weights = state["buffer"]
        self.iterations = state["iterations"]
        self.energy_evaluations = state["energy_evaluations"]
        self.wall_time_s = state["wall_time_s"]
        if state.get("device_type", "cpu") == self.device.type:
            self.generator.set_state(state["generator"].cpu())
        return self
