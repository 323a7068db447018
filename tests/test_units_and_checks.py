"""Units against OpenMM's and ASE's own constants; box and position validation."""
import numpy as np
import openmm.unit as ou
import pytest
import torch
from ase import units as au

from molfree import units
from molfree.checks import as_box, as_positions, check_cutoff, reduce_box


def test_constants_agree_with_openmm_and_ase():
    assert units.kT(300.0) == pytest.approx(
        (ou.MOLAR_GAS_CONSTANT_R * 300 * ou.kelvin).value_in_unit(ou.kilojoule_per_mole), rel=1e-9)
    assert units.EV_TO_KJ_PER_MOL == pytest.approx(au.eV * au.mol / au.kJ, rel=1e-7)
    assert units.HARTREE_TO_KJ_PER_MOL == pytest.approx(au.Hartree * au.mol / au.kJ, rel=1e-7)
    assert units.BOHR_TO_NM * 10 == pytest.approx(au.Bohr, rel=1e-8)
    assert units.KCAL_TO_KJ == pytest.approx((1 * ou.kilocalorie).value_in_unit(ou.kilojoule))
    vacuum_permittivity = 8.8541878128e-12 * ou.farad / ou.meter
    coulomb = ou.AVOGADRO_CONSTANT_NA * ou.elementary_charge**2 / (4 * np.pi * vacuum_permittivity)
    assert units.ONE_4PI_EPS0 == pytest.approx(
        coulomb.value_in_unit(ou.kilojoule_per_mole * ou.nanometer), rel=1e-7)
    assert units.kT(units.REDUCED_TEMPERATURE) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="temperature"):
        units.kT(-1.0)


def test_reduce_box_gives_the_same_lattice_in_openmm_form():
    rng = np.random.default_rng(3)
    for _ in range(20):
        cell = np.diag(rng.uniform(1, 3, 3)) + rng.uniform(-1.5, 1.5, (3, 3))
        if np.linalg.det(cell) <= 0.2:
            continue
        reduced = reduce_box(cell)
        as_box(torch.tensor(reduced), 1, torch.zeros(1, dtype=torch.float64))  # passes the check
        assert abs(np.linalg.det(reduced)) == pytest.approx(abs(np.linalg.det(cell)), rel=1e-10)
        # same lattice: reduced = M @ L with L the lower-triangular (rotated) form of cell, M unimodular
        lower = np.linalg.cholesky(cell @ cell.T)
        m = reduced @ np.linalg.inv(lower)
        assert np.allclose(m, np.round(m), atol=1e-8)
        assert abs(np.linalg.det(np.round(m))) == pytest.approx(1.0)


def test_position_and_box_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"shape \[N, 3\]"):
        as_positions(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="NaN"):
        as_positions(torch.tensor([[0.0, float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="floating"):
        as_positions(torch.zeros(3, 3, dtype=torch.int64))
    like = torch.zeros(1, dtype=torch.float64)
    with pytest.raises(ValueError, match="reduced form"):
        as_box(torch.tensor([[1.0, 0, 0], [0.8, 1, 0], [0, 0, 1]]), 1, like)
    with pytest.raises(ValueError, match="upper triangle"):
        as_box(torch.tensor([[1.0, 0.1, 0], [0, 1, 0], [0, 0, 1]]), 1, like)
    with pytest.raises(ValueError, match="shape"):
        as_box(torch.eye(2), 1, like)
    with pytest.raises(ValueError, match="batch size"):
        as_box(torch.eye(3).expand(2, 3, 3), 3, like)
    for bad in (-1.0, 0.0, float("nan")):
        with pytest.raises(ValueError, match="cutoff"):
            check_cutoff(bad)
