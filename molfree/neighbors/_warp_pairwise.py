"""Warp kernels for pair potentials, registered as ``torch.library`` custom ops.

One kernel source serves CPU and CUDA (dispatched by the tensor's device) and float32 /
float64 (generic overloads). Each kernel runs one thread per pair of a half neighbor list and
accumulates, in the same pass, the energy per configuration and its derivatives with respect to
positions and box vectors (and lambda for the soft-core kernel).

Op convention (shared by every op here, relied on by the autograd wiring): the first inputs are
the differentiable ones, ``positions [B, N, 3]``, ``box [B, 3, 3]`` (zeros for no box) and, for
the soft-core op, ``lambda_sterics`` (0-d); the outputs are ``energy [B]`` followed by the
derivative of the energy of each configuration with respect to each differentiable input, in
the same order (``dE/dx [B, N, 3]``, ``dE/dbox [B, 3, 3]``, ``dE/dlambda [B]``).
"""
from __future__ import annotations

from typing import Any

import torch

from ..units import ONE_4PI_EPS0
from ._warp import wp

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------------
# Shared Warp functions: geometry, accumulation, switching function.
# --------------------------------------------------------------------------------------------


@wp.func
def pair_geometry(
    x: wp.array(dtype=Any),
    box: wp.array(dtype=Any),
    shifts: wp.array2d(dtype=wp.int64),
    p: int,
    i: wp.int64,
    j: wp.int64,
    b: wp.int64,
):
    """Lattice shift ``s`` (as a float vector) and separation ``d = x[j] - x[i] + s @ box[b]``."""
    v = x[i]
    s = type(v)(type(v[0])(shifts[p, 0]), type(v[0])(shifts[p, 1]), type(v[0])(shifts[p, 2]))
    d = x[j] - v + wp.transpose(box[b]) @ s
    return s, d


@wp.func
def accumulate(
    energy: wp.array(dtype=Any),
    grad_x: wp.array(dtype=Any),
    grad_box: wp.array(dtype=Any),
    b: wp.int64,
    i: wp.int64,
    j: wp.int64,
    s: Any,
    d: Any,
    r: Any,
    u: Any,
    du_dr: Any,
):
    """Add the pair energy ``u`` and the derivatives implied by ``du/dr`` to configuration ``b``."""
    wp.atomic_add(energy, b, u)
    g = d * (du_dr / r)
    wp.atomic_add(grad_x, j, g)
    wp.atomic_sub(grad_x, i, g)
    wp.atomic_add(grad_box, b, wp.outer(s, g))


@wp.func
def openmm_switch(r: Any, r_switch: Any, r_cut: Any):
    """OpenMM's switching function ``S(r)`` and ``dS/dr``: 1 below ``r_switch``, 0 at ``r_cut``."""
    one = type(r)(1.0)
    zero = type(r)(0.0)
    if r <= r_switch:
        return one, zero
    width = r_cut - r_switch
    t = (r - r_switch) / width
    s = one + t * t * t * (type(r)(-10.0) + t * (type(r)(15.0) - type(r)(6.0) * t))
    ds = t * t * (type(r)(-30.0) + t * (type(r)(60.0) - type(r)(30.0) * t)) / width
    return s, ds


@wp.func
def lj_pair(r: Any, sigma: Any, epsilon: Any):
    """Lennard-Jones ``4 eps [(sig/r)^12 - (sig/r)^6]`` and its derivative in ``r``."""
    sr = sigma / r
    sr6 = sr * sr * sr * sr * sr * sr
    four_eps = type(r)(4.0) * epsilon
    u = four_eps * (sr6 * sr6 - sr6)
    du_dr = four_eps * (type(r)(6.0) * sr6 - type(r)(12.0) * sr6 * sr6) / r
    return u, du_dr


@wp.func
def softcore_pair(r: Any, sigma: Any, epsilon: Any, lam: Any, alpha: Any):
    """Beutler soft-core LJ ``lam 4 eps [1/q^2 - 1/q]``, ``q = alpha (1 - lam) + (r/sig)^6``.

    Returns the energy and its derivatives in ``r`` and ``lam``.
    """
    rs = r / sigma
    rs6 = rs * rs * rs * rs * rs * rs
    q = alpha * (type(r)(1.0) - lam) + rs6
    inv_q = type(r)(1.0) / q
    four_eps = type(r)(4.0) * epsilon
    w = four_eps * (inv_q * inv_q - inv_q)
    dw_dq = four_eps * inv_q * inv_q * (type(r)(1.0) - type(r)(2.0) * inv_q)
    u = lam * w
    du_dr = lam * dw_dq * type(r)(6.0) * rs6 / r
    du_dlam = w - lam * alpha * dw_dq
    return u, du_dr, du_dlam


@wp.func
def mixed_lj_parameters(sigma: wp.array(dtype=Any), epsilon: wp.array(dtype=Any), ai: wp.int64, aj: wp.int64):
    """Lorentz-Berthelot mixing: arithmetic mean of sigma, geometric mean of epsilon."""
    return type(sigma[ai])(0.5) * (sigma[ai] + sigma[aj]), wp.sqrt(epsilon[ai] * epsilon[aj])


# --------------------------------------------------------------------------------------------
# Kernels: one thread per pair; padding entries (i < 0) and pairs at r >= cutoff are skipped.
# --------------------------------------------------------------------------------------------


@wp.kernel
def lennard_jones_kernel(
    x: wp.array(dtype=Any),
    box: wp.array(dtype=Any),
    pair_i: wp.array(dtype=wp.int64),
    pair_j: wp.array(dtype=wp.int64),
    shifts: wp.array2d(dtype=wp.int64),
    n_atoms: wp.int64,
    sigma: wp.array(dtype=Any),
    epsilon: wp.array(dtype=Any),
    cutoff: Any,
    switch_distance: Any,
    energy: wp.array(dtype=Any),
    grad_x: wp.array(dtype=Any),
    grad_box: wp.array(dtype=Any),
):
    p = wp.tid()
    i = pair_i[p]
    j = pair_j[p]
    if i < wp.int64(0):
        return
    b = i // n_atoms
    s, d = pair_geometry(x, box, shifts, p, i, j, b)
    r = wp.length(d)
    if r >= cutoff:
        return
    sig, eps = mixed_lj_parameters(sigma, epsilon, i - b * n_atoms, j - b * n_atoms)
    if sig == type(r)(0.0) or eps == type(r)(0.0):
        return
    u, du_dr = lj_pair(r, sig, eps)
    sw, dsw_dr = openmm_switch(r, switch_distance, cutoff)
    accumulate(energy, grad_x, grad_box, b, i, j, s, d, r, sw * u, sw * du_dr + dsw_dr * u)


@wp.kernel
def softcore_lennard_jones_kernel(
    x: wp.array(dtype=Any),
    box: wp.array(dtype=Any),
    pair_i: wp.array(dtype=wp.int64),
    pair_j: wp.array(dtype=wp.int64),
    shifts: wp.array2d(dtype=wp.int64),
    n_atoms: wp.int64,
    lam: wp.array(dtype=Any),
    sigma: wp.array(dtype=Any),
    epsilon: wp.array(dtype=Any),
    alchemical: wp.array(dtype=wp.int32),
    cutoff: Any,
    alpha: Any,
    energy: wp.array(dtype=Any),
    grad_x: wp.array(dtype=Any),
    grad_box: wp.array(dtype=Any),
    grad_lam: wp.array(dtype=Any),
):
    p = wp.tid()
    i = pair_i[p]
    j = pair_j[p]
    if i < wp.int64(0):
        return
    b = i // n_atoms
    s, d = pair_geometry(x, box, shifts, p, i, j, b)
    r = wp.length(d)
    if r >= cutoff:
        return
    ai = i - b * n_atoms
    aj = j - b * n_atoms
    sig, eps = mixed_lj_parameters(sigma, epsilon, ai, aj)
    if sig == type(r)(0.0) or eps == type(r)(0.0):
        return
    if alchemical[ai] != alchemical[aj]:
        u, du_dr, du_dlam = softcore_pair(r, sig, eps, lam[0], alpha)
        wp.atomic_add(grad_lam, b, du_dlam)
        accumulate(energy, grad_x, grad_box, b, i, j, s, d, r, u, du_dr)
    else:
        u, du_dr = lj_pair(r, sig, eps)
        accumulate(energy, grad_x, grad_box, b, i, j, s, d, r, u, du_dr)


@wp.kernel
def reaction_field_kernel(
    x: wp.array(dtype=Any),
    box: wp.array(dtype=Any),
    pair_i: wp.array(dtype=wp.int64),
    pair_j: wp.array(dtype=wp.int64),
    shifts: wp.array2d(dtype=wp.int64),
    n_atoms: wp.int64,
    charges: wp.array(dtype=Any),
    cutoff: Any,
    k_rf: Any,
    c_rf: Any,
    prefactor: Any,
    energy: wp.array(dtype=Any),
    grad_x: wp.array(dtype=Any),
    grad_box: wp.array(dtype=Any),
):
    p = wp.tid()
    i = pair_i[p]
    j = pair_j[p]
    if i < wp.int64(0):
        return
    b = i // n_atoms
    s, d = pair_geometry(x, box, shifts, p, i, j, b)
    r = wp.length(d)
    if r >= cutoff:
        return
    qq = prefactor * charges[i - b * n_atoms] * charges[j - b * n_atoms]
    u = qq * (type(r)(1.0) / r + k_rf * r * r - c_rf)
    du_dr = qq * (type(r)(2.0) * k_rf * r - type(r)(1.0) / (r * r))
    accumulate(energy, grad_x, grad_box, b, i, j, s, d, r, u, du_dr)


_WARP_TYPES = {
    torch.float32: (wp.float32, wp.vec3f, wp.mat33f),
    torch.float64: (wp.float64, wp.vec3d, wp.mat33d),
}

for _scalar, _vec, _mat in _WARP_TYPES.values():
    _common = {
        "x": wp.array(dtype=_vec),
        "box": wp.array(dtype=_mat),
        "sigma": wp.array(dtype=_scalar),
        "epsilon": wp.array(dtype=_scalar),
        "cutoff": _scalar,
        "energy": wp.array(dtype=_scalar),
        "grad_x": wp.array(dtype=_vec),
        "grad_box": wp.array(dtype=_mat),
    }
    wp.overload(lennard_jones_kernel, {**_common, "switch_distance": _scalar})
    wp.overload(
        softcore_lennard_jones_kernel,
        {**_common, "lam": wp.array(dtype=_scalar), "alpha": _scalar, "grad_lam": wp.array(dtype=_scalar)},
    )
    _rf = {k: v for k, v in _common.items() if k not in ("sigma", "epsilon")}
    wp.overload(
        reaction_field_kernel,
        {**_rf, "charges": wp.array(dtype=_scalar), "k_rf": _scalar, "c_rf": _scalar, "prefactor": _scalar},
    )


# --------------------------------------------------------------------------------------------
# Launch helpers.
# --------------------------------------------------------------------------------------------


def _launch(kernel, positions: Tensor, box: Tensor, pairs: tuple[Tensor, Tensor, Tensor],
            parameters: list, outputs: list[Tensor]) -> None:
    """Launch ``kernel(x, box, i, j, shifts, n_atoms, *parameters, energy, grad_x, grad_box, *rest)``.

    ``parameters`` are tensors (passed with their own scalar type) or floats (cast to the
    precision of ``positions``); ``outputs`` are ``energy [B]``, ``grad_x [B, N, 3]``,
    ``grad_box [B, 3, 3]`` and any further per-configuration outputs ``[B]``, zero-initialised.
    """
    scalar, vec, mat = _WARP_TYPES[positions.dtype]
    device = wp.device_from_torch(positions.device)
    stream = wp.stream_from_torch(positions.device) if device.is_cuda else None
    pair_i, pair_j, shifts = pairs
    energy, grad_x, grad_box, *rest = outputs

    def array(t: Tensor, dtype=None):
        return wp.from_torch(t.contiguous(), dtype=dtype, requires_grad=False)

    args = [
        array(positions.reshape(-1, 3), vec),
        array(box, mat),
        array(pair_i),
        array(pair_j),
        array(shifts),
        wp.int64(positions.shape[1]),
        *(array(v) if isinstance(v, Tensor) else scalar(v) for v in parameters),
        array(energy),
        array(grad_x.view(-1, 3), vec),
        array(grad_box, mat),
        *(array(t) for t in rest),
    ]
    wp.launch(kernel, dim=pair_i.shape[0], inputs=args, device=device, stream=stream)


def _new_outputs(positions: Tensor, box: Tensor, n_extra: int, make=torch.zeros) -> list[Tensor]:
    """``energy [B]``, ``dE/dx [B, N, 3]``, ``dE/dbox [B, 3, 3]`` and ``n_extra`` further ``[B]``."""
    batch = positions.shape[0]
    options = {"dtype": positions.dtype, "device": positions.device}
    return [make(batch, **options), make(positions.shape, **options), make(box.shape, **options),
            *(make(batch, **options) for _ in range(n_extra))]


class _ScaledDerivative(torch.autograd.Function):
    """``weight * derivative``, where ``derivative`` (an op output) depends on ``sources``.

    Differentiable in ``weight`` only: differentiating through ``derivative`` (second derivatives
    of the potentials) raises instead of silently returning zero.
    """

    @staticmethod
    def forward(weight, derivative, *sources):
        return weight * derivative

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1])

    @staticmethod
    def backward(ctx, grad):
        if any(ctx.needs_input_grad[2:]):
            raise NotImplementedError("second derivatives of the molfree pair potentials are not implemented")
        weight, derivative = ctx.saved_tensors
        return (grad * derivative).sum_to_size(weight.shape), *(None,) * (len(ctx.needs_input_grad) - 1)


def _register(op, n_differentiable: int, n_inputs: int) -> None:
    """Register the fake implementation and the autograd formula of ``op`` (see module docstring)."""

    @op.register_fake
    def _(positions, box, *args):
        return tuple(_new_outputs(positions, box, n_differentiable - 2, make=torch.empty))

    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(*inputs[:n_differentiable], *output[1:])

    def backward(ctx, grad_energy, *unused):
        sources = ctx.saved_tensors[:n_differentiable]
        derivatives = ctx.saved_tensors[n_differentiable:]
        grads = [None] * n_inputs
        for k, (source, derivative) in enumerate(zip(sources, derivatives)):
            if ctx.needs_input_grad[k]:
                weight = grad_energy.reshape(-1, *(1,) * (derivative.ndim - 1))
                grads[k] = _ScaledDerivative.apply(weight, derivative, *sources).sum_to_size(source.shape)
        return tuple(grads)

    op.register_autograd(backward, setup_context=setup_context)


@torch.library.custom_op("molfree::lennard_jones", mutates_args=())
def lennard_jones_op(positions: Tensor, box: Tensor, pair_i: Tensor, pair_j: Tensor, shifts: Tensor,
                     sigma: Tensor, epsilon: Tensor, cutoff: float,
                     switch_distance: float) -> tuple[Tensor, Tensor, Tensor]:
    """LJ energies ``[B]`` and their derivatives in positions and box (see module docstring)."""
    outputs = _new_outputs(positions, box, 0)
    _launch(lennard_jones_kernel, positions, box, (pair_i, pair_j, shifts),
            [sigma, epsilon, cutoff, switch_distance], outputs)
    return tuple(outputs)


@torch.library.custom_op("molfree::softcore_lennard_jones", mutates_args=())
def softcore_lennard_jones_op(positions: Tensor, box: Tensor, lambda_sterics: Tensor, pair_i: Tensor,
                              pair_j: Tensor, shifts: Tensor, sigma: Tensor, epsilon: Tensor,
                              alchemical: Tensor, cutoff: float,
                              alpha: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Soft-core LJ energies ``[B]`` and their derivatives in positions, box and lambda."""
    outputs = _new_outputs(positions, box, 1)
    _launch(softcore_lennard_jones_kernel, positions, box, (pair_i, pair_j, shifts),
            [lambda_sterics.reshape(1), sigma, epsilon, alchemical.to(torch.int32), cutoff, alpha], outputs)
    return tuple(outputs)


@torch.library.custom_op("molfree::coulomb_reaction_field", mutates_args=())
def coulomb_reaction_field_op(positions: Tensor, box: Tensor, pair_i: Tensor, pair_j: Tensor,
                              shifts: Tensor, charges: Tensor, cutoff: float, k_rf: float,
                              c_rf: float) -> tuple[Tensor, Tensor, Tensor]:
    """Reaction-field Coulomb energies ``[B]`` and their derivatives in positions and box."""
    outputs = _new_outputs(positions, box, 0)
    _launch(reaction_field_kernel, positions, box, (pair_i, pair_j, shifts),
            [charges, cutoff, k_rf, c_rf, ONE_4PI_EPS0], outputs)
    return tuple(outputs)


_register(lennard_jones_op, n_differentiable=2, n_inputs=9)
_register(softcore_lennard_jones_op, n_differentiable=3, n_inputs=11)
_register(coulomb_reaction_field_op, n_differentiable=2, n_inputs=9)
