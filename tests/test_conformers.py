"""Conformers: torsion map geometry, torsional gradients, wrapped reference, exact torus weights, RMSD/coverage,
MMFF units, the workflow's outputs (connectivity, stereochemistry, SDF energies) and its errors."""
import json
import math

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolAlign

from molfree import Energy, units
from molfree.cli import main
from molfree.samplers import conformer_metrics as cm
from molfree.samplers.adjoint import AdjointConfig
from molfree.samplers.metrics import log_mean_exp, normalised_ess, reweighted_mean
from molfree.samplers.sde import GeometricSchedule
from molfree.samplers.torsional import (
    RotatableTorsions,
    TorsionalAdjointSampler,
    TorsionalEnergy,
    TorusDrift,
    WrappedSDE,
    dihedrals,
    farthest_point_subset,
)
from molfree.workflows import conformers as wf

pytestmark = pytest.mark.usefixtures("one_thread")

IBUPROFEN = "CC(C)Cc1ccc(cc1)[C@H](C)C(=O)O"
#: a stereocentre and an E double bond, four rotatable heavy-atom bonds and a hydroxyl
SMALL = "C/C=C/C[C@H](O)CCC"


@pytest.fixture(scope="module")
def ibuprofen():
    molecule, fixes = wf.prepare_molecule(IBUPROFEN)
    assert fixes == []
    return molecule, RotatableTorsions.from_molecule(molecule), wf.MMFFEnergy(molecule)


def bond_geometry(molecule, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All bond lengths ``[B, M]`` and bond angles ``[B, K]`` of the molecular graph in ``x [B, N, 3]``."""
    bonds = torch.tensor([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in molecule.GetBonds()])
    angles = torch.tensor([(i, j, k) for j in range(molecule.GetNumAtoms())
                           for i in [a.GetIdx() for a in molecule.GetAtomWithIdx(j).GetNeighbors()]
                           for k in [a.GetIdx() for a in molecule.GetAtomWithIdx(j).GetNeighbors()] if i < k])
    lengths = (x[:, bonds[:, 0]] - x[:, bonds[:, 1]]).norm(dim=-1)
    u, v = x[:, angles[:, 0]] - x[:, angles[:, 1]], x[:, angles[:, 2]] - x[:, angles[:, 1]]
    return lengths, torch.atan2(torch.cross(u, v, dim=-1).norm(dim=-1), (u * v).sum(-1))


# -- torsion map and gradients ----------------------------------------------------------------------------------


def test_torsion_map_keeps_bonds_and_angles_and_sets_dihedrals(ibuprofen):
    molecule, torsions, _ = ibuprofen
    assert torsions.n_torsions == 5  # four heavy-atom torsions and the carboxylic O–H
    theta = (torch.rand(8, torsions.n_torsions, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
             * 2 - 1) * math.pi
    x = torsions.positions(theta)
    seed_lengths, seed_angles = bond_geometry(molecule, torsions.seed[None])
    lengths, angles = bond_geometry(molecule, x)
    assert torch.allclose(lengths, seed_lengths.expand_as(lengths), atol=1e-12, rtol=0)
    assert torch.allclose(angles, seed_angles.expand_as(angles), atol=1e-10, rtol=0)
    change = dihedrals(x, torsions.quads) - dihedrals(torsions.seed[None], torsions.quads)
    assert torch.allclose(torch.remainder(change - theta + math.pi, 2 * math.pi) - math.pi,
                          torch.zeros_like(theta), atol=1e-10)
    # the seed's dihedrals are RDKit's
    conformer = molecule.GetConformer()
    rdkit_dihedrals = [AllChem.GetDihedralRad(conformer, *map(int, q)) for q in torsions.quads]
    assert torch.allclose(dihedrals(torsions.seed[None], torsions.quads)[0],
                          torch.tensor(rdkit_dihedrals, dtype=torch.float64), atol=1e-10)


def test_torsional_energy_gradient_matches_finite_differences(ibuprofen):
    _, torsions, mmff = ibuprofen
    target = TorsionalEnergy(mmff, torsions)
    theta = torch.tensor([[0.4], [-1.1], [2.0], [0.7], [-2.5]], dtype=torch.float64)[None].requires_grad_(True)
    (grad,) = torch.autograd.grad(target(theta).sum(), theta)
    h = 1e-5
    fd = []
    for k in range(torsions.n_torsions):
        step = torch.zeros_like(theta)
        step[0, k, 0] = h
        fd.append(float((target(theta.detach() + step) - target(theta.detach() - step))[0]) / (2 * h))
    assert np.allclose(grad.flatten().numpy(), fd, rtol=1e-5, atol=1e-4)
    assert np.abs(fd).max() > 1.0  # not a flat point


def test_mmff_energy_units_against_rdkit(ibuprofen):
    molecule, _, mmff = ibuprofen
    properties = AllChem.MMFFGetMoleculeProperties(molecule)
    kcal = AllChem.MMFFGetMoleculeForceField(molecule, properties, nonBondedThresh=1e4).CalcEnergy()
    x = torch.tensor(molecule.GetConformer().GetPositions() * units.ANGSTROM_TO_NM)
    assert float(mmff(x)) == pytest.approx(kcal * units.KCAL_TO_KJ, rel=1e-10)
    # forces are −dE/dx in kJ/mol/nm: central differences along one direction, away from the minimum
    generator = torch.Generator().manual_seed(1)
    x = x + 0.005 * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    _, forces = mmff.energy_and_forces(x)
    direction = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    h = 1e-6
    slope = (mmff(x + h * direction) - mmff(x - h * direction)) / (2 * h)
    assert float(slope) == pytest.approx(float(-(forces * direction).sum()), rel=1e-5)


# -- wrapped reference and exact weights on the torus -----------------------------------------------------------


def test_wrapped_reference_is_a_normalised_periodic_density_with_its_score():
    sde = WrappedSDE(GeometricSchedule(0.01, math.pi), n_steps=10)
    grid = torch.linspace(-math.pi, math.pi, 4001, dtype=torch.float64)[:-1]
    density = sde.reference_log_prob(grid[:, None, None]).exp()
    assert float(density.sum() * (2 * math.pi / 4000)) == pytest.approx(1.0, abs=1e-10)
    x = torch.randn(5, 3, 1, dtype=torch.float64) * 5
    assert torch.allclose(sde.reference_log_prob(x), sde.reference_log_prob(x + 2 * math.pi), atol=1e-12)
    xr = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(sde.reference_log_prob(xr).sum(), xr)
    assert torch.allclose(sde.reference_score(x), auto, atol=1e-12)


class VonMises(Energy):
    """E/kT = −κ cos θ on a single torsion (radians as the "position"); Z = 2π I₀(κ)."""

    dim = 1

    def __init__(self, kappa: float, temperature: float):
        super().__init__(n_atoms=1)
        self.scale = kappa * units.kT(temperature)

    def energy(self, positions, box):
        return -self.scale * positions[:, 0, 0].cos()


def test_torus_weights_are_exact_and_training_reaches_the_von_mises():
    from scipy.special import i0, i1

    kappa, temperature = 4.0, 300.0
    config = AdjointConfig(sigma_max=math.pi, n_steps=30, samples_per_iteration=200, train_steps_per_iteration=20,
                           train_batch_size=256, drift_length=0.5, buffer_size=4000)
    torch.manual_seed(0)
    sampler = TorsionalAdjointSampler(VonMises(kappa, temperature), TorusDrift(1, hidden=32, n_layers=2),
                                      temperature, config, seed=0)
    log_z = math.log(2 * math.pi * i0(kappa))
    untrained = sampler.sample(3000).log_weights
    assert float(log_mean_exp(untrained)) == pytest.approx(log_z, abs=0.1)  # exact weights, any drift
    sampler.train(max_iterations=12, progress=False)
    result = sampler.sample(3000)
    assert float(log_mean_exp(result.log_weights)) == pytest.approx(log_z, abs=0.06)  # ~3 standard errors
    assert result.samples.abs().max() <= math.pi
    mean_cos = i1(kappa) / i0(kappa)
    assert float(reweighted_mean(result.samples.cos().flatten(), result.log_weights)) == pytest.approx(mean_cos, abs=0.02)
    assert float(result.samples.cos().mean()) == pytest.approx(mean_cos, abs=0.06)  # trained: close unweighted
    assert float(normalised_ess(result.log_weights)) > float(normalised_ess(untrained)) + 0.15
    # the Langevin corrector on the learned terminal score stays on the torus and keeps the von Mises mean
    evaluations = sampler.energy_evaluations
    refined = sampler.refine(result.samples, 400, 0.01, progress=False)
    assert refined.abs().max() <= math.pi and sampler.energy_evaluations == evaluations
    assert float(refined.cos().mean()) == pytest.approx(mean_cos, abs=0.03)


def test_farthest_point_subset_starts_low_and_spreads():
    theta = torch.tensor([[0.0, 0.0], [0.1, 0.0], [3.0, 3.0], [0.0, 0.1], [-1.5, 1.5], [0.0, 0.05]])
    energies = torch.tensor([2.0, 1.0, 5.0, 3.0, 4.0, math.inf])
    chosen = farthest_point_subset(theta, energies, 3).tolist()
    assert chosen == [1, 2, 4]
    assert sorted(farthest_point_subset(theta, energies, 6).tolist()) == list(range(6))
    assert farthest_point_subset(theta, energies, 6)[-1] == 5  # infinite energy last
    with pytest.raises(ValueError):
        farthest_point_subset(theta, energies, 7)


def test_relaxation_with_the_chosen_energy_reaches_a_minimum():
    molecule = wf.etkdg(wf.prepare_molecule("CCCCO")[0], 2, seed=5)
    mmff = wf.MMFFEnergy(molecule)
    relaxed = wf.relax(molecule, "energy", mmff)
    before, after = wf.energies_of(molecule, mmff), wf.energies_of(relaxed, mmff)
    assert (after < before - 1.0).all()
    forces = mmff.forces(torch.tensor(wf.conformer_positions(relaxed)))
    assert float(forces.abs().max()) < 5.0  # kJ/mol/nm
    rdkit_relaxed = wf.energies_of(wf.relax(molecule, "mmff", mmff), mmff)
    assert np.allclose(after, rdkit_relaxed, atol=0.5)  # same MMFF94 minima (kJ/mol)


def test_reference_energy_marks_failed_evaluations_infinite():
    from ase.calculators.calculator import CalculationFailed

    def reference(atoms):
        if atoms.positions[0, 0] > 0:
            raise CalculationFailed("SCF not converged")
        return 1.0, np.zeros((len(atoms), 3))

    molecule, _ = wf.prepare_molecule("CCO")
    energy = wf.ReferenceEnergy(reference, wf.to_ase_atoms(molecule)[0])
    x = np.zeros((2, molecule.GetNumAtoms(), 3))
    x[1, 0, 0] = 0.1
    energies, forces = energy.evaluate(x, None)
    assert energies.tolist() == [1.0, math.inf] and np.isnan(forces[1]).all() and (forces[0] == 0).all()


def test_xtb_energy_reuses_the_labelling_reference():
    from molfree.potentials.labelling import XTBReference

    molecule, _ = wf.prepare_molecule("CCO")
    energy, description = wf.make_energy("xtb", molecule)
    assert "GFN2-xTB" in description
    x = torch.tensor(molecule.GetConformer().GetPositions() * units.ANGSTROM_TO_NM)
    e, forces = energy.energy_and_forces(x)
    expected_e, expected_f = XTBReference()(wf.to_ase_atoms(molecule)[0])
    assert float(e) == pytest.approx(expected_e, rel=1e-10) and np.allclose(forces.numpy(), expected_f)


# -- RMSD, coverage ---------------------------------------------------------------------------------------------


def test_rmsd_matrix_equals_rdkit_best_rms_and_coverage_of_itself_is_perfect():
    molecule = wf.etkdg(Chem.AddHs(Chem.MolFromSmiles("CC(C)Cc1ccc(cc1)C(C)C")), 6, seed=3)
    positions, matches = cm.heavy_positions(molecule)
    assert len(matches) > 1  # the isopropyl groups are symmetric
    rmsd = cm.rmsd_matrix(positions, positions, matches)
    heavy = Chem.RemoveHs(molecule)
    for i, j in [(0, 1), (2, 5), (4, 3)]:
        expected = rdMolAlign.GetBestRMS(Chem.Mol(heavy), heavy, i, j, symmetrizeConjugatedTerminalGroups=False)
        assert rmsd[i, j] == pytest.approx(expected, abs=1e-6)
    cov = cm.coverage(positions, positions, matches)
    assert cov["recall"]["0.5"] == 1.0 and cov["precision"]["0.5"] == 1.0 and cov["amr_recall"] < 1e-6
    kept = cm.deduplicate(positions, matches, threshold=float(np.sort(rmsd[0])[2]) + 1e-9)
    assert 0 not in kept[1:] and len(kept) < len(positions)


# -- ring puckers ------------------------------------------------------------------------------------------------

#: a cyclohexene (two half-chair puckers) with three rotatable bonds
RING = "CC[C@H]1CC=CC[C@@H]1CCO"


@pytest.fixture(scope="module")
def ring_molecule():
    molecule, _ = wf.prepare_molecule(RING)
    return molecule, RotatableTorsions.from_molecule(molecule), wf.MMFFEnergy(molecule)


def test_ring_pucker_seeds_find_both_half_chairs_and_none_without_a_ring(ring_molecule, ibuprofen):
    molecule, _, mmff = ring_molecule
    seeds, evaluations = wf.ring_pucker_seeds(molecule, mmff, n_embeddings=60, seed=1)
    assert evaluations == 60 and len(seeds) >= 2
    assert np.allclose(seeds[0], wf.conformer_positions(molecule)[0])  # the molecule's own seed comes first
    puckers = dihedrals(torch.as_tensor(seeds), torch.as_tensor(wf.ring_torsion_quads(molecule)))
    signs = {tuple(np.sign(p[np.abs(p) > math.radians(20)]).tolist()) for p in puckers.numpy()}
    assert len(signs) >= 2  # the ring torsions change sign between half-chairs
    molecule, _, mmff = ibuprofen  # an aromatic ring only: nothing to add, nothing evaluated
    seeds, evaluations = wf.ring_pucker_seeds(molecule, mmff)
    assert len(seeds) == 1 and evaluations == 0


def test_torsions_carry_over_to_another_seed_keeping_its_ring(ring_molecule):
    molecule, torsions, mmff = ring_molecule
    seeds, _ = wf.ring_pucker_seeds(molecule, mmff, n_embeddings=60, seed=1)
    other = torsions.with_seed(torch.as_tensor(seeds[1]))
    theta = (torch.rand(6, torsions.n_torsions, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
             * 2 - 1) * math.pi
    x, y = torsions.positions(theta), other.positions(other.offsets_from(torsions, theta))
    gap = dihedrals(x, torsions.quads) - dihedrals(y, torsions.quads)
    assert torch.allclose(torch.remainder(gap + math.pi, 2 * math.pi) - math.pi, torch.zeros_like(gap), atol=1e-10)
    ring = torch.as_tensor(wf.ring_torsion_quads(molecule))
    assert torch.allclose(dihedrals(y, ring), dihedrals(other.seed[None], ring).expand(6, -1), atol=1e-10)
    with pytest.raises(ValueError, match="seed must be"):
        torsions.with_seed(torch.zeros(3, 3))


class _PuckerEnergy(Energy):
    """Two-state toy: 0 kJ/mol when the first ring torsion is positive, ``gap`` kJ/mol otherwise."""

    def __init__(self, n_atoms: int, quad: torch.Tensor, gap: float):
        super().__init__(n_atoms)
        self.quad, self.gap = quad, gap

    def energy(self, positions, box):
        return torch.where(dihedrals(positions, self.quad[None])[:, 0] > 0, 0.0, self.gap).to(positions)


def test_rebuilt_pucker_is_drawn_with_boltzmann_weights(ring_molecule):
    molecule, torsions, mmff = ring_molecule
    seeds, _ = wf.ring_pucker_seeds(molecule, mmff, n_embeddings=60, seed=1)
    quad = torch.as_tensor(wf.ring_torsion_quads(molecule))[0]
    first = dihedrals(torch.as_tensor(seeds), quad[None])[:, 0]
    pair = np.stack([seeds[int(first.argmax())], seeds[int(first.argmin())]])  # positive, then negative pucker
    assert first.max() > 0 > first.min()
    temperature, gap = 300.0, 1.5 * units.kT(300.0)
    theta = torch.zeros(4000, torsions.n_torsions, dtype=torch.float64)
    toy = _PuckerEnergy(molecule.GetNumAtoms(), quad, gap)
    positions, evaluations = wf.rebuild_on_seeds(torsions, theta, pair, toy, temperature,
                                                 torch.Generator().manual_seed(0))
    assert evaluations == 8000
    negative = float((dihedrals(torch.as_tensor(positions), quad[None])[:, 0] < 0).double().mean())
    expected = math.exp(-1.5) / (1 + math.exp(-1.5))
    assert negative == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / 4000))


# -- MD reference ------------------------------------------------------------------------------------------------


def test_md_frames_sample_the_thermostat_temperature():
    """Benzene at 300 K is nearly harmonic: ⟨E − E_min⟩ ≈ (3N − 6)/2 kT = 15 kT, whatever the force constants, if
    the forces OpenMM integrates are −∇E of the energy in consistent units."""
    molecule, _ = wf.prepare_molecule("c1ccccc1")
    mmff = wf.MMFFEnergy(molecule)
    e_min = wf.energies_of(wf.relax(molecule, "mmff", mmff), mmff)[0]
    frames = wf.md_frames(molecule, mmff, 150, seed=0, temperature=300.0, frame_interval_ps=0.1, progress=False)
    assert frames.GetNumConformers() == 150
    excess = (wf.energies_of(frames, mmff) - e_min) / units.kT(300.0)
    assert excess.mean() == pytest.approx(15.0, rel=0.25)


def test_md_reference_in_the_workflow(tmp_path):
    options = wf.SamplerOptions(max_energy_evaluations=200, samples_per_iteration=100, train_steps_per_iteration=5,
                                n_steps=10, hidden=16)
    metrics = wf.run_conformers(SMALL, tmp_path, n=8, relax_method="mmff", options=options, reference_embeddings=5,
                                progress=False, reference="md")
    assert metrics["reference"]["kind"] == "md" and 1 <= metrics["reference"]["n_kept"] <= 5
    assert "MD frames" in (tmp_path / "report.md").read_text()


# -- the workflow ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("conformers")
    options = wf.SamplerOptions(max_energy_evaluations=400, samples_per_iteration=100, train_steps_per_iteration=10,
                                n_steps=20, hidden=32)
    metrics = wf.run_conformers(SMALL, out, n=12, relax_method="mmff", rmsd_threshold=0.2, options=options,
                                reference_embeddings=30, progress=False)
    return out, metrics


def test_workflow_writes_valid_conformers_with_energies(small_run):
    out, _ = small_run
    expected = Chem.MolFromSmiles(SMALL)
    expected_centres = Chem.FindMolChiralCenters(expected)
    expected_bonds = {b.GetStereo() for b in expected.GetBonds() if b.GetStereo() != Chem.BondStereo.STEREONONE}
    supplier = list(Chem.SDMolSupplier(str(out / "conformers.sdf"), removeHs=False))
    assert 1 <= len(supplier) <= 12 and all(m is not None for m in supplier)
    seed_molecule, _ = wf.prepare_molecule(SMALL)
    mmff = wf.MMFFEnergy(seed_molecule)
    seed_lengths, _ = bond_geometry(seed_molecule, torch.tensor(seed_molecule.GetConformer().GetPositions())[None])
    for molecule in supplier:
        positions = molecule.GetConformer().GetPositions()
        lengths, _ = bond_geometry(seed_molecule, torch.tensor(positions)[None])
        assert torch.allclose(lengths, seed_lengths, atol=0.05)  # Å: same graph, relaxed bonds
        assert cm.connectivity_matches(molecule, -1)
        copy = Chem.Mol(molecule)
        Chem.AssignStereochemistryFrom3D(copy)
        assert Chem.FindMolChiralCenters(copy) == expected_centres
        assert {b.GetStereo() for b in copy.GetBonds() if b.GetStereo() != Chem.BondStereo.STEREONONE} == expected_bonds
        energy = float(mmff(torch.tensor(positions * units.ANGSTROM_TO_NM)))
        assert molecule.GetDoubleProp("energy_kj_mol") == pytest.approx(energy, abs=1e-3)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n_torsions"] == 5 and saved["molfree"]["energy_evaluations"] >= 400
    for method in ("molfree", "etkdg"):
        cov = saved[method]["coverage"]
        assert set(cov["recall"]) == {f"{d:g}" for d in cm.THRESHOLDS}
        assert all(0 <= v <= 1 for v in cov["recall"].values()) and cov["amr_recall"] >= 0
    assert "molfree" in (out / "report.md").read_text()


def test_openmm_and_ase_exposure(small_run):
    from openmm import unit

    out, _ = small_run
    molecule = next(iter(Chem.SDMolSupplier(str(out / "conformers.sdf"), removeHs=False)))
    quantity = wf.openmm_positions(molecule)
    array = wf.openmm_positions(molecule, quantity=False)
    assert np.allclose(quantity.value_in_unit(unit.nanometer), array)
    assert np.allclose(array * units.NM_TO_ANGSTROM, molecule.GetConformer().GetPositions())
    (atoms,) = wf.to_ase_atoms(molecule, energies=[1.5])
    assert atoms.get_chemical_symbols() == [a.GetSymbol() for a in molecule.GetAtoms()]
    assert np.allclose(atoms.positions, molecule.GetConformer().GetPositions()) and atoms.info["energy_kj_mol"] == 1.5


# -- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("smiles, kwargs, message", [
    ("C1CC(", {}, "cannot parse"),
    ("", {}, "cannot parse"),
    ("CC[Se]CC", {}, "Se not supported by --energy mmff"),
    ("CC[Se]CC", {"energy": "xtb", "relax_method": "mmff"}, "Se not supported by --energy mmff"),
    ("CCCC", {"n": 0}, "-n must be"),
    ("CCCC", {"n": -5}, "-n must be"),
    ("CCCC", {"n": 10**9}, "-n must be"),
    ("CCCC", {"energy": "nonexistent.molfree"}, "expected mmff, xtb or an existing"),
    ("CCO.CCO", {}, "several fragments"),
    ("Cc1ccncc1", {}, "no rotatable bonds"),
    ("CCCC", {"reference": "crest"}, "reference must be one of"),
])
def test_bad_requests_raise_clear_value_errors(tmp_path, smiles, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        wf.run_conformers(smiles, tmp_path, progress=False, **kwargs)


def test_model_file_energy_and_its_element_check(tmp_path):
    from molfree.potentials import EquivariantPotential, save

    path = save(EquivariantPotential(["H", "C", "O"], cutoff=0.4, channels=4, l_max=1, n_layers=1), tmp_path / "m.molfree")
    molecule, _ = wf.prepare_molecule("CCCO")
    energy, description = wf.make_energy(str(path), molecule)
    x = torch.tensor(molecule.GetConformer().GetPositions() * units.ANGSTROM_TO_NM)[None]
    e, forces = energy.energy_and_forces(x)
    assert e.shape == (1,) and torch.isfinite(e).all() and forces.shape == x.shape and "m.molfree" in description
    with pytest.raises(ValueError, match=r"cannot evaluate \['N'\]"):
        wf.make_energy(str(path), wf.prepare_molecule("CCCN")[0])


def test_xtb_rejects_elements_beyond_radon():
    molecule = Chem.AddHs(Chem.MolFromSmiles("C[U]C"))
    with pytest.raises(ValueError, match="U not supported by --energy xtb"):
        wf.check_elements(molecule, "xtb")


def test_cli_errors_are_one_line_and_nonzero(tmp_path, capsys):
    assert main(["conformers", "C1CC(", "--out", str(tmp_path)]) == 2
    assert main(["conformers", "CCCC", "-n", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["molfree conformers: error: RDKit cannot parse the SMILES 'C1CC('",
                   "molfree conformers: error: -n must be an integer between 1 and 10000, got 0"]
