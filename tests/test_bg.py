"""Boltzmann-generator workflow pieces: the replica-exchange reference and the ML training data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from molfree.flows.internal import dihedral
from molfree.workflows.bg import (BGSetup, minor_basin_bias, ml_training_data, reference_delta_f, reference_log_weights,
                                  replica_exchange)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_replica_exchange_saves_frames_between_exchanges():
    """Frames every ``frame_ps``, exchanges every ``exchange_ps``: 0.4 ps / 0.02 ps = 20 frames per replica."""
    from molfree import systems

    setup = BGSetup(system="alanine-dipeptide-vacuum", reference_ps=0.4, exchange_ps=0.1, frame_ps=0.02)
    system = systems.load(setup.system, temperature=setup.temperature, platform="CPU")
    data = replica_exchange(system, setup)
    assert data["positions"].shape == (4, 20, system.n_atoms, 3) and data["energies"].shape == (4, 20)
    assert int(data["md_steps"]) == 4 * 200 and data["acceptance"].shape == (3,)
    assert len(np.unique(data["energies"][0])) == 20  # distinct frames, not copies
    log_w = reference_log_weights(data["energies"], setup.replica_temperatures, [300.0, 650.0])
    assert log_w.shape == (2, 80) and np.isfinite(log_w).all()
    with pytest.raises(ValueError, match="frame_ps must not exceed"):
        BGSetup(frame_ps=0.2, exchange_ps=0.1).check()


def test_ml_training_data_raises_the_minor_basin():
    """φ > 0 frames get ``share`` of the weight with their ``log_w_minor`` shape, φ < 0 frames keep their MBAR
    weights' shape; all frames kept."""
    rng = np.random.default_rng(0)
    phi = np.array([-2.0, -1.0, -1.5, 1.0, 1.2, -0.5])
    log_w = np.append(np.log([0.3, 0.3, 0.38, 0.01, 0.01]) + 5.0, -np.inf)
    log_w_minor = np.log([0.1, 0.1, 0.1, 0.3, 0.1, 0.1])
    reference = {"log_w": log_w, "log_w_minor": log_w_minor, "angles": np.stack([phi, phi], -1),
                 "positions": rng.normal(size=(2, 3, 4, 3))}
    frames, weights = ml_training_data(reference, 0.2)
    assert frames.shape == (6, 4, 3) and frames.dtype == torch.float32
    assert weights.sum().item() == pytest.approx(1.0)
    assert weights[3:5].tolist() == pytest.approx([0.15, 0.05]) and weights[5] == 0
    assert (weights[:3] / weights[:3].sum()).tolist() == pytest.approx([0.3 / 0.98, 0.3 / 0.98, 0.38 / 0.98])
    _, unbiased = ml_training_data(reference, 0.0)
    assert unbiased[3:5].tolist() == pytest.approx([0.015, 0.005])  # the target share 0.02, minor shape


def test_minor_basin_bias_gives_the_kl_target_the_ml_share():
    """−ln(0.2/0.8 · 0.98/0.02) kT where φ > 0, 0 where φ < 0: p·exp(−bias) holds 20 % in φ > 0."""
    phi = np.array([-1.0, 1.0])
    reference = {"log_w": np.log([0.98, 0.02]), "angles": np.stack([phi, phi], -1)}
    bias = minor_basin_bias(reference, 0.2, np.array([0, 1, 2, 3]))
    x = torch.randn(64, 4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    positive = dihedral(x[:, 0], x[:, 1], x[:, 2], x[:, 3]) > 0
    expected = torch.where(positive, -np.log(0.25 * 0.98 / 0.02), 0.0).double()
    assert 0 < positive.sum() < 64 and torch.allclose(bias(x), expected)


def test_reference_delta_f_error_is_the_spread_of_time_blocks():
    """Two replicas at the target temperature (uniform MBAR weights): block b has φ > 0 fractions 0.1, 0.2, 0.1,
    0.2, so its ΔF is ln 9 or ln 4, and the error is their standard error, not the pooled delta-method one."""
    setup = BGSetup(replica_temperatures=[300.0, 300.0])
    fractions = [0.1, 0.2, 0.1, 0.2]
    phi = np.concatenate([np.where(np.arange(50) < 50 * f, 1.0, -1.0) for f in fractions])
    energies = np.random.default_rng(0).normal(size=(2, 200))
    reference = {"energies": energies, "angles": np.stack([np.tile(phi, 2)] * 2, -1),
                 "log_w": reference_log_weights(energies, setup.replica_temperatures, [300.0])[0]}
    pooled, error, blocks = reference_delta_f(reference, setup, blocks=4)
    assert blocks == pytest.approx([np.log(9), np.log(4), np.log(9), np.log(4)])
    assert pooled == pytest.approx(-np.log(0.15 / 0.85))
    assert error == pytest.approx(np.std(blocks, ddof=1) / 2)
    reference["angles"][:, 0] = np.tile(np.where(np.arange(200) < 10, 1.0, -1.0), 2)  # φ > 0 only in block 1
    assert reference_delta_f(reference, setup, blocks=4)[1] == np.inf
