"""Boltzmann-generator workflow pieces: the replica-exchange reference and the ML training data."""
from __future__ import annotations

from dataclasses import asdict

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
    assert setup.replica_temperatures == [300.0, 390.0, 510.0, 660.0, 860.0, 1120.0]  # vacuum: up to 1120 K
    assert data["positions"].shape == (6, 20, system.n_atoms, 3) and data["energies"].shape == (6, 20)
    assert int(data["md_steps"]) == 6 * 200 and data["acceptance"].shape == (5,)
    assert len(np.unique(data["energies"][0])) == 20  # distinct frames, not copies
    log_w = reference_log_weights(data["energies"], setup.replica_temperatures, [300.0, 650.0])
    assert log_w.shape == (2, 120) and np.isfinite(log_w).all()
    with pytest.raises(ValueError, match="frame_ps must not exceed"):
        BGSetup(frame_ps=0.2, exchange_ps=0.1).check()


def test_ml_training_data_takes_the_major_basin_from_replicas_and_the_minor_from_umbrella_windows():
    """Replica frames with φ < 0 keep their MBAR weights' shape; umbrella frames with φ > 0 get ``share`` of the
    weight with their unbiased weights' shape (or their true share, if larger); all other frames get none."""
    from molfree.freeenergy.umbrella import UmbrellaSamples

    rng = np.random.default_rng(0)
    phi = np.array([-2.0, -1.0, -1.5, 1.0, 1.2, -0.5])
    log_w = np.append(np.log([0.3, 0.3, 0.38, 0.01, 0.01]) + 5.0, -np.inf)
    # two windows at ±π/2 of two frames each; the φ > 0 pair is symmetric about its centre: equal weights
    theta = np.array([[-np.pi / 2, -np.pi / 2], [np.pi / 2 - 0.1, np.pi / 2 + 0.1]])
    umbrella = UmbrellaSamples(theta, np.array([-np.pi / 2, np.pi / 2]), 1.0, 300.0, rng.normal(size=(2, 2, 4, 3)))
    reference = {"log_w": log_w, "angles": np.stack([phi, phi], -1), "positions": rng.normal(size=(2, 3, 4, 3)),
                 "umbrella": umbrella, "umbrella_angles": np.stack([theta.reshape(-1)] * 2, -1)}
    frames, weights = ml_training_data(reference, 0.6)
    assert frames.shape == (8, 4, 3) and frames.dtype == torch.float32
    assert torch.equal(frames[6:], torch.as_tensor(umbrella.positions[1], dtype=torch.float32))
    assert weights.sum().item() == pytest.approx(1.0)
    assert weights[:3].tolist() == pytest.approx([0.4 * 0.3 / 0.98, 0.4 * 0.3 / 0.98, 0.4 * 0.38 / 0.98])
    assert weights[3:6].tolist() == [0, 0, 0] and weights[6:].tolist() == pytest.approx([0.3, 0.3])
    _, true_share = ml_training_data(reference, 0.2)
    p_minor = np.exp(umbrella.log_weights())[theta.reshape(-1) > 0].sum()
    assert 0.2 < p_minor and true_share[6:].sum().item() == pytest.approx(p_minor)  # the umbrella's own P(φ > 0)
    reference["umbrella"] = UmbrellaSamples(-np.abs(theta), umbrella.centres, 1.0, 300.0, umbrella.positions)
    reference["umbrella_angles"] = -np.abs(reference["umbrella_angles"])
    frames, weights = ml_training_data(reference, 0.2)  # no umbrella frame in φ > 0: the replica frames alone
    assert frames.shape == (6, 4, 3) and weights.sum().item() == pytest.approx(1.0)


def test_minor_basin_bias_gives_the_kl_target_the_ml_share():
    """−ln(0.2/0.8 · 0.98/0.02) kT where φ > 0, 0 where φ < 0: p·exp(−bias) holds 20 % in φ > 0."""
    bias = minor_basin_bias(0.02, 0.2, np.array([0, 1, 2, 3]))
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


def test_a_run_directory_from_an_older_setup_is_refused_by_name(tmp_path):
    import json

    from molfree.workflows.bg import run_sample

    setup = {**asdict(BGSetup()), "ml_minor_temperature": 500.0}
    (tmp_path / "setup.json").write_text(json.dumps({"setup": setup}))
    with pytest.raises(ValueError, match="older molfree .*ml_minor_temperature"):
        run_sample(tmp_path)


def test_report_warns_when_replicas_and_umbrella_disagree():
    from molfree.workflows.bg import _reference_warning

    assert _reference_warning({"delta_f_kt": 6.9, "umbrella_delta_f_kt": 6.2}) == []
    (line,) = _reference_warning({"delta_f_kt": 8.8, "umbrella_delta_f_kt": 2.1})
    assert "differ by 6.7 kT" in line and "not meaningful" in line
    assert _reference_warning({"delta_f_kt": float("inf"), "umbrella_delta_f_kt": 2.1})
