"""Conformer generation with the torsional adjoint sampler, compared with RDKit ETKDG.

Pipeline (``molfree conformers``):

1. parse the SMILES, fix unspecified stereocentres / double bonds to the first enumerated isomer
   (recorded), add hydrogens; embed one ETKDG seed and relax it with MMFF94;
2. train a :class:`~molfree.samplers.torsional.TorsionalAdjointSampler` on exp(−E/kT) over the
   rotatable-bond torsions (the energy evaluated on the Cartesian coordinates rebuilt from the seed),
   draw ``pool · n`` samples and keep a farthest-point subset of ``n`` in torsion space, starting from the
   lowest energy (``SamplerOptions.pool``; 1 keeps the plain samples); torsions cannot flip a ring, so each
   sample's torsions are rebuilt on every ring pucker that 100 ETKDG + MMFF94 embeddings show
   (:func:`ring_pucker_seeds`) and one pucker is drawn ∝ exp(−E/kT) of the rebuilt geometries;
3. optionally relax them (``mmff``: RDKit MMFF94; ``energy``: L-BFGS on the chosen energy), drop
   any whose re-perceived bonds or 3D stereochemistry differ from the input, deduplicate by
   heavy-atom RMSD, write ``conformers.sdf`` with energies (kJ/mol, SD property ``energy_kj_mol``);
4. baseline: ETKDG with the same ``n`` embeddings and the same relaxation and deduplication;
   reference: ETKDG with ``reference_embeddings`` embeddings, MMFF94 relaxation and deduplication
   (an "exhaustive" ETKDG ensemble — it favours ETKDG-like geometries, note when reading the numbers),
   or (``reference="md"``) as many frames of 1000 K Langevin MD on the chosen energy, made by neither method;
5. coverage recall / precision and AMR (:mod:`molfree.samplers.conformer_metrics`) of both against the
   reference, printed side by side, in ``metrics.json`` and ``report.md``.

Energies: ``mmff`` (:class:`MMFFEnergy`, RDKit MMFF94), ``xtb`` (GFN2-xTB through
:class:`molfree.potentials.labelling.XTBReference`), or a molfree model file. Positions are nm and
energies kJ/mol inside; Å and kcal/mol only at the RDKit boundary, through :mod:`molfree.units`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import units
from ..energies.engine import engine_energy
from ..energy import Energy
from ..io import atomic_write_text, write_json
from ..samplers import conformer_metrics as cm
from ..samplers.adjoint import AdjointConfig
from ..samplers.torsional import (
    RotatableTorsions,
    TorsionalAdjointSampler,
    TorsionalEnergy,
    TorusDrift,
    dihedrals,
    farthest_point_subset,
    wrap_angle,
)

#: Most conformers one run may ask for.
MAX_CONFORMERS = 10_000
#: Elements MMFF94 has parameters for (RDKit), and the heaviest element GFN2-xTB covers (Rn).
MMFF_ELEMENTS = frozenset({"H", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Br", "I"})
XTB_MAX_Z = 86
#: Reference ensembles for the comparison, and how each is made.
REFERENCES = {"etkdg": "ETKDGv3 embeddings, MMFF94 relaxation, heavy-atom RMSD dedup",
              "md": "1000 K Langevin MD frames 1 ps apart, MMFF94 relaxation, heavy-atom RMSD dedup"}


# -- molecule and energies ----------------------------------------------------------------------------------------


def parse_smiles(smiles: str):
    """RDKit molecule (implicit hydrogens) of one-molecule ``smiles``; ValueError if it does not parse or has fragments."""
    from rdkit import Chem, rdBase

    blocker = rdBase.BlockLogs()  # RDKit's multi-line parse messages; the ValueError below says it in one line
    molecule = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) and smiles.strip() else None
    del blocker
    if molecule is None:
        raise ValueError(f"RDKit cannot parse the SMILES {smiles!r}")
    if len(Chem.GetMolFrags(molecule)) > 1:
        raise ValueError(f"the SMILES {smiles!r} has several fragments; give one molecule")
    return molecule


def prepare_molecule(smiles: str, seed: int = 0):
    """RDKit molecule with explicit hydrogens and one ETKDG + MMFF94 seed conformer, and the stereo fixes made.

    Unspecified stereocentres and stereo double bonds are set to the first isomer RDKit enumerates;
    the returned list names them (empty when the SMILES specifies all stereochemistry).
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem
    from rdkit.Chem.EnumerateStereoisomers import (
        EnumerateStereoisomers,
        StereoEnumerationOptions,
    )

    molecule = parse_smiles(smiles)
    before = Chem.MolToSmiles(molecule)
    molecule = next(iter(EnumerateStereoisomers(molecule, StereoEnumerationOptions(onlyUnassigned=True, unique=True))))
    Chem.AssignStereochemistry(molecule, cleanIt=True, force=True)
    after = Chem.MolToSmiles(molecule)
    fixes = [] if after == before else [f"unspecified stereochemistry fixed: {before} -> {after}"]
    molecule = Chem.AddHs(molecule)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(molecule, params) != 0:
        raise ValueError(f"RDKit could not embed a 3D conformer of {smiles!r}")
    if AllChem.MMFFHasAllMoleculeParams(molecule):
        AllChem.MMFFOptimizeMolecule(molecule, maxIters=2000)
    return molecule, fixes


def check_elements(molecule, energy: str) -> None:
    """ValueError naming the elements that ``energy`` ("mmff" or "xtb") cannot treat."""
    symbols = {a.GetSymbol(): a.GetAtomicNum() for a in molecule.GetAtoms()}
    if energy == "mmff":
        bad = sorted(s for s in symbols if s not in MMFF_ELEMENTS)
    elif energy == "xtb":
        bad = sorted(s for s, z in symbols.items() if z > XTB_MAX_Z or z == 0)
    else:
        return
    if bad:
        raise ValueError(f"element(s) {', '.join(bad)} not supported by --energy {energy}")


class MMFFEnergy(Energy):
    """MMFF94 (RDKit) of a molecule: positions ``[B, N, 3]`` (nm) → energies ``[B]`` (kJ/mol), forces by RDKit.

    Every pair is a non-bonded interaction (no cutoff). RDKit works in Å and kcal/mol.
    """

    def __init__(self, molecule):
        from rdkit.Chem import AllChem

        check_elements(molecule, "mmff")
        properties = AllChem.MMFFGetMoleculeProperties(molecule)
        if properties is None:
            raise ValueError("MMFF94 has no parameters for this molecule (atom types could not be assigned)")
        super().__init__(n_atoms=molecule.GetNumAtoms())
        self.force_field = AllChem.MMFFGetMoleculeForceField(molecule, properties, nonBondedThresh=1e4,
                                                             ignoreInterfragInteractions=False)

    def evaluate(self, positions: np.ndarray, box: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Energies ``[B]`` (kJ/mol) and forces ``[B, N, 3]`` (kJ/mol/nm) of ``positions [B, N, 3]`` (nm)."""
        energies = np.empty(positions.shape[0])
        forces = np.empty(positions.shape)
        for i, x in enumerate(positions):
            flat = (x * units.NM_TO_ANGSTROM).ravel().tolist()
            energies[i] = self.force_field.CalcEnergy(flat) * units.KCAL_TO_KJ
            grad = np.asarray(self.force_field.CalcGrad(flat)).reshape(x.shape)  # kcal/mol/Å
            forces[i] = -grad * units.KCAL_TO_KJ * units.NM_TO_ANGSTROM
        return energies, forces

    def energy(self, positions: torch.Tensor, box: torch.Tensor | None) -> torch.Tensor:
        return engine_energy(self.evaluate, positions, box)


class ReferenceEnergy(Energy):
    """A labelling reference (e.g. :class:`~molfree.potentials.labelling.XTBReference`) as a batched Energy of
    fixed atoms: positions ``[B, N, 3]`` (nm) → energies ``[B]`` (kJ/mol), forces from the reference."""

    def __init__(self, reference, atoms):
        super().__init__(n_atoms=len(atoms))
        self.reference = reference
        self.atoms = atoms.copy()

    def evaluate(self, positions: np.ndarray, box: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Energies ``[B]`` (kJ/mol) and forces ``[B, N, 3]`` (kJ/mol/nm); a structure the reference cannot
        evaluate (e.g. SCF not converged at a clash) gets energy +inf and NaN forces, which the sampler drops."""
        from ase.calculators.calculator import CalculationFailed

        energies = np.full(positions.shape[0], np.inf)
        forces = np.full(positions.shape, np.nan)
        for i, x in enumerate(positions):
            atoms = self.atoms.copy()
            atoms.positions = x * units.NM_TO_ANGSTROM
            try:
                energies[i], forces[i] = self.reference(atoms)
            except (CalculationFailed, ValueError):
                continue
        return energies, forces

    def energy(self, positions: torch.Tensor, box: torch.Tensor | None) -> torch.Tensor:
        return engine_energy(self.evaluate, positions, box)


def make_energy(kind: str, molecule) -> tuple[Energy, str]:
    """The Cartesian energy ``mmff``, ``xtb`` or a model-file path for ``molecule``, and its description."""
    from rdkit import Chem

    if kind == "mmff":
        return MMFFEnergy(molecule), "MMFF94 (RDKit)"
    if kind == "xtb":
        from ..potentials.labelling import XTBReference

        check_elements(molecule, "xtb")
        n_unpaired = sum(a.GetNumRadicalElectrons() for a in molecule.GetAtoms())
        reference = XTBReference(charge=Chem.GetFormalCharge(molecule), multiplicity=n_unpaired + 1)
        return ReferenceEnergy(reference, to_ase_atoms(molecule)[0]), reference.description
    from ..potentials import PotentialEnergy, load

    if not Path(kind).is_file():
        raise ValueError(f"--energy {kind!r}: expected mmff, xtb or an existing molfree model file")
    model = load(kind, dtype=torch.float64)
    return PotentialEnergy(model, [a.GetAtomicNum() for a in molecule.GetAtoms()]), f"molfree model {kind}"


# -- conformer sets -----------------------------------------------------------------------------------------------


def conformer_positions(molecule) -> np.ndarray:
    """All conformers' positions ``[C, N, 3]`` in nm."""
    return np.array([c.GetPositions() for c in molecule.GetConformers()]).reshape(
        -1, molecule.GetNumAtoms(), 3) * units.ANGSTROM_TO_NM


def with_conformers(molecule, positions: np.ndarray):
    """Copy of ``molecule`` whose conformers are ``positions [C, N, 3]`` (nm)."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    out = Chem.Mol(molecule)
    out.RemoveAllConformers()
    for x in positions * units.NM_TO_ANGSTROM:
        conformer = Chem.Conformer(out.GetNumAtoms())
        for i, p in enumerate(x):
            conformer.SetAtomPosition(i, Point3D(*map(float, p)))
        out.AddConformer(conformer, assignId=True)
    return out


def etkdg(molecule, n: int, seed: int):
    """Copy of ``molecule`` with ``n`` ETKDGv3 embeddings (fewer if some fail; ValueError if all fail)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    out = Chem.Mol(molecule)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    params.numThreads = 1
    if not list(AllChem.EmbedMultipleConfs(out, numConfs=n, params=params)):
        raise ValueError("RDKit ETKDG could not embed any conformer")
    return out


class _EnergyComputation:
    """``openmm.PythonForce`` computation: State → (energy kJ/mol, forces ``[N, 3]`` kJ/mol/nm) of an Energy."""

    def __init__(self, energy: Energy):
        self.energy = energy

    def __call__(self, state):
        from openmm import unit

        x = torch.as_tensor(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=torch.float64)
        e, f = self.energy.energy_and_forces(x[None])
        return float(e[0]), f[0].double().numpy()


def md_frames(molecule, energy: Energy, n_frames: int, seed: int, temperature: float = 1000.0,
              frame_interval_ps: float = 1.0, timestep_fs: float = 1.0, hydrogen_mass: float = 3.0,
              progress: bool = True):
    """Copy of ``molecule`` whose conformers are ``n_frames`` snapshots of Langevin MD on ``energy``.

    OpenMM's LangevinMiddleIntegrator (1/ps friction, ``timestep_fs``) at ``temperature`` (K) runs on
    ``energy`` through an ``openmm.PythonForce``, from the molecule's first conformer, with the masses of
    hydrogens on heavy atoms raised to ``hydrogen_mass`` (amu), taken from the heavy atom (the
    configurational distribution is unchanged; 3 amu leaves even a CH₄ carbon 4 amu); a frame every
    ``frame_interval_ps`` after one interval of equilibration.
    """
    import openmm
    from openmm import unit

    masses = [atom.GetMass() for atom in molecule.GetAtoms()]
    for atom in molecule.GetAtoms():
        neighbours = atom.GetNeighbors()
        if atom.GetAtomicNum() == 1 and len(neighbours) == 1 and neighbours[0].GetAtomicNum() > 1:
            masses[neighbours[0].GetIdx()] -= hydrogen_mass - masses[atom.GetIdx()]
            masses[atom.GetIdx()] = hydrogen_mass
    system = openmm.System()
    for mass in masses:
        system.addParticle(mass * unit.amu)
    system.addForce(openmm.PythonForce(_EnergyComputation(energy)))
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, 1 / unit.picosecond,
                                                 timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(conformer_positions(molecule)[0] * unit.nanometer)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, seed + 1)
    steps = max(1, round(frame_interval_ps * 1000 / timestep_fs))
    frames = []
    integrator.step(steps)
    for _ in tqdm(range(n_frames), desc=f"MD reference {temperature:g} K", unit="ps", disable=not progress):
        integrator.step(steps)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return with_conformers(molecule, np.asarray(frames))


def relax(molecule, method: str | None, energy: Energy, max_iterations: int = 2000, trust_nm: float = 0.02):
    """Relaxed copy of ``molecule``: ``None`` (unchanged), ``"mmff"`` (RDKit MMFF94) or ``"energy"`` (L-BFGS on ``energy``).

    ``"energy"`` runs L-BFGS-B in rounds of 50 iterations, each confined to a box of ± ``trust_nm`` (nm) per
    coordinate about the round's start (a trust region: no trial step lands far away, where e.g. an SCF may
    fail), until a round ends inside its box or ``max_iterations`` are used.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem
    from scipy.optimize import minimize

    if method is None:
        return Chem.Mol(molecule)
    if method == "mmff":
        check_elements(molecule, "mmff")
        out = Chem.Mol(molecule)
        AllChem.MMFFOptimizeMoleculeConfs(out, numThreads=1, maxIters=max_iterations, nonBondedThresh=1e4)
        return out
    if method != "energy":
        raise ValueError(f"relax must be None, 'mmff' or 'energy', got {method!r}")

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        e, f = energy.energy_and_forces(torch.tensor(flat.reshape(1, -1, 3)))
        return float(e[0]), -f[0].double().numpy().ravel()

    def minimise(x: np.ndarray) -> np.ndarray:
        for _ in range(max(1, max_iterations // 50)):
            bounds = list(zip(x - trust_nm, x + trust_nm))
            result = minimize(objective, x, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 50})
            if not np.isfinite(result.fun):
                break
            inside = np.all(np.abs(result.x - x) < trust_nm * (1 - 1e-6))
            x = result.x
            if inside and result.success:
                break
        return x

    relaxed = [minimise(x.ravel()) for x in conformer_positions(molecule)]
    return with_conformers(molecule, np.array(relaxed).reshape(-1, molecule.GetNumAtoms(), 3))


def energies_of(molecule, energy: Energy) -> np.ndarray:
    """Energies ``[C]`` (kJ/mol) of all conformers."""
    with torch.no_grad():
        return energy(torch.tensor(conformer_positions(molecule))).double().numpy()


@dataclass
class ConformerSet:
    """A processed conformer ensemble: the molecule holding the kept conformers, their energies (kJ/mol),
    how many were generated, how many failed the connectivity/stereo checks, energy evaluations and wall time."""

    molecule: object
    energies: np.ndarray
    n_generated: int
    n_invalid: int
    energy_evaluations: int
    wall_time_s: float


def finalise(molecule, reference_stereo: tuple, energy: Energy, relax_method: str | None, rmsd_threshold: float,
             energy_evaluations: int, start: float) -> ConformerSet:
    """Relax, drop conformers with changed bonds or stereo, deduplicate by heavy-atom RMSD (lowest energy first)."""
    from rdkit import Chem

    relaxed = relax(molecule, relax_method, energy)
    ids = [c.GetId() for c in relaxed.GetConformers()]
    valid = [i for i in ids if cm.connectivity_matches(relaxed, i) and cm.stereo_signature(relaxed, i) == reference_stereo]
    positions = conformer_positions(relaxed)[[ids.index(i) for i in valid]]
    kept_molecule = with_conformers(relaxed, positions)
    if not valid:
        return ConformerSet(kept_molecule, np.empty(0), len(ids), len(ids), energy_evaluations,
                            time.perf_counter() - start)
    e = energies_of(kept_molecule, energy)
    heavy, matches = cm.heavy_positions(kept_molecule)
    kept = cm.deduplicate(heavy, matches, rmsd_threshold, order=np.argsort(e, kind="stable"))
    out = with_conformers(Chem.Mol(kept_molecule), positions[kept])
    return ConformerSet(out, e[kept], len(ids), len(ids) - len(valid), energy_evaluations + len(valid),
                        time.perf_counter() - start)


@dataclass
class SamplerOptions:
    """Torsional adjoint sampler settings: temperature (K), training budget in energy evaluations,
    samples per iteration, regression steps per iteration, SDE steps, σ_max (rad), network width, and
    ``pool``: draw ``pool · n`` samples and keep a farthest-point subset of ``n`` (1: the plain samples)."""

    temperature: float = 1000.0
    max_energy_evaluations: int = 6000
    samples_per_iteration: int = 200
    train_steps_per_iteration: int = 40
    n_steps: int = 50
    sigma_max: float = math.pi
    hidden: int = 128
    pool: int = 16

    def config(self) -> AdjointConfig:
        return AdjointConfig(sigma_min=0.01, sigma_max=self.sigma_max, n_steps=self.n_steps,
                             samples_per_iteration=self.samples_per_iteration, buffer_size=20 * self.samples_per_iteration,
                             train_steps_per_iteration=self.train_steps_per_iteration, train_batch_size=256,
                             lr=1e-3, max_grad_norm=100.0, drift_length=0.5)


def ring_torsion_quads(molecule) -> np.ndarray:
    """Atom quadruples ``[R, 4]`` of the consecutive torsions around every non-aromatic ring (their signs
    and sizes are the ring's pucker); ``[0, 4]`` when there is no such ring."""
    quads = [(ring[i], ring[(i + 1) % len(ring)], ring[(i + 2) % len(ring)], ring[(i + 3) % len(ring)])
             for ring in molecule.GetRingInfo().AtomRings()
             if len(ring) >= 4 and not all(molecule.GetAtomWithIdx(a).GetIsAromatic() for a in ring)
             for i in range(len(ring))]
    return np.array(quads, dtype=np.int64).reshape(-1, 4)


def ring_pucker_seeds(molecule, energy: Energy, n_embeddings: int = 100, seed: int = 1, tolerance_deg: float = 30.0,
                      max_seeds: int = 8) -> tuple[np.ndarray, int]:
    """Seed geometries for the ring puckers that torsion moves cannot reach.

    Embeds ``n_embeddings`` ETKDG conformers (MMFF94-relaxed where MMFF has parameters, like the molecule's own
    seed) and keeps, lowest energy first, each one that differs from every pucker kept so far by more than
    ``tolerance_deg`` in at least one ring torsion, starting with the molecule's own seed. Returns positions ``[S, N, 3]`` (nm,
    the molecule's seed first, S ≤ ``max_seeds``) and the energy evaluations made; only the molecule's seed,
    at no evaluation, when it has no non-aromatic ring. (RDKit's ``randomSeed`` 0 gave a single pucker in 100
    embeddings of oseltamivir, seeds 1–3 a third to a half of the other one.)
    """
    from rdkit.Chem import AllChem

    own = conformer_positions(molecule)[:1]
    quads = torch.as_tensor(ring_torsion_quads(molecule))
    if not len(quads):
        return own, 0
    embedded = etkdg(molecule, n_embeddings, seed)
    if AllChem.MMFFHasAllMoleculeParams(embedded):
        AllChem.MMFFOptimizeMoleculeConfs(embedded, numThreads=1, maxIters=2000)
    energies = energies_of(embedded, energy)
    positions = np.concatenate([own, conformer_positions(embedded)])  # own seed at index 0, embedding i at i + 1
    puckers = dihedrals(torch.as_tensor(positions), quads)
    kept = [0]
    for i in np.argsort(energies, kind="stable") + 1:
        differs = wrap_angle(puckers[i] - puckers[kept]).abs().amax(1) > math.radians(tolerance_deg)
        if len(kept) < max_seeds and np.isfinite(energies[i - 1]) and bool(differs.all()):
            kept.append(int(i))
    return positions[kept], len(energies)


def rebuild_on_seeds(torsions: RotatableTorsions, theta: torch.Tensor, seeds: np.ndarray, energy: Energy,
                     temperature: float, generator: torch.Generator | None = None) -> tuple[np.ndarray, int]:
    """Rebuild sampled torsions ``theta [B, T]`` (rad, offsets about ``torsions.seed``) on each seed ``[S, N, 3]``
    (nm) with the same torsion values, and keep for each sample one seed drawn ∝ exp(−E/kT) of its rebuilt
    geometries: the ring pucker drawn from its conditional given the torsions (rigid-rotor model). Returns
    positions ``[B, N, 3]`` (nm) and the energy evaluations made (B·S; none for one seed)."""
    with torch.no_grad():
        rebuilt = []
        for s in seeds:
            other = torsions.with_seed(torch.as_tensor(s))
            rebuilt.append(other.positions(other.offsets_from(torsions, theta)))
        if len(seeds) == 1:
            return rebuilt[0].numpy(), 0
        stacked = torch.stack(rebuilt, 1)  # [B, S, N, 3]
        e = energy(stacked.flatten(0, 1)).double().reshape(stacked.shape[:2]) / units.kT(temperature)
        probs = torch.softmax(torch.nan_to_num(-e, nan=-math.inf), 1).nan_to_num(1.0 / len(seeds))
        which = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return stacked[torch.arange(len(which)), which].numpy(), stacked.shape[0] * stacked.shape[1]


def sample_conformers(molecule, energy: Energy, n: int, options: SamplerOptions, seed: int = 0,
                      progress: bool = True) -> tuple[object, int]:
    """Train the torsional adjoint sampler on ``energy`` about the molecule's seed conformer and draw ``n``
    conformers (a farthest-point subset of ``options.pool · n`` samples); returns the molecule holding them and
    the energy evaluations used (training, sampling, ring seeds).

    Torsions cannot change a ring's pucker: each conformer's torsions are rebuilt on the
    :func:`ring_pucker_seeds` and one pucker is drawn (:func:`rebuild_on_seeds`). With more than one pucker the
    conformers no longer follow the sampler's density exactly (they are relaxed and deduplicated afterwards).
    """
    if options.pool < 1:
        raise ValueError(f"pool must be >= 1, got {options.pool}")
    torch.manual_seed(seed)
    torsions = RotatableTorsions.from_molecule(molecule)
    target = TorsionalEnergy(energy, torsions)
    sampler = TorsionalAdjointSampler(target, TorusDrift(torsions.n_torsions, hidden=options.hidden),
                                      options.temperature, options.config(), seed=seed)
    sampler.train(max_energy_evaluations=options.max_energy_evaluations, progress=progress)
    result = sampler.sample(options.pool * n)
    theta = result.samples[farthest_point_subset(result.samples.flatten(1), result.reduced_energies, n)]
    seeds, seed_evaluations = ring_pucker_seeds(molecule, energy, seed=seed + 3)
    positions, rebuild_evaluations = rebuild_on_seeds(torsions, theta.double().reshape(n, -1), seeds, energy,
                                                      options.temperature, torch.Generator().manual_seed(seed))
    evaluations = sampler.energy_evaluations + seed_evaluations + rebuild_evaluations
    return with_conformers(molecule, positions), evaluations


def validate_request(n: int, rmsd_threshold: float, reference_embeddings: int, reference: str = "etkdg") -> None:
    """ValueErrors for impossible conformer counts, thresholds and unknown reference kinds."""
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {sorted(REFERENCES)}, got {reference!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_CONFORMERS:
        raise ValueError(f"-n must be an integer between 1 and {MAX_CONFORMERS}, got {n!r}")
    if not 0 <= rmsd_threshold < 10:
        raise ValueError(f"the RMSD threshold must be in [0, 10) Å, got {rmsd_threshold}")
    if not 1 <= reference_embeddings <= 20 * MAX_CONFORMERS:
        raise ValueError(f"reference structures must be between 1 and {20 * MAX_CONFORMERS}, "
                         f"got {reference_embeddings}")


# -- outputs ------------------------------------------------------------------------------------------------------


def write_sdf(path: str | Path, conformers: ConformerSet, name: str, energy_description: str) -> Path:
    """Write every conformer with its energy (SD properties ``energy_kj_mol``, ``energy_model``) atomically."""
    import io

    from rdkit import Chem

    buffer = io.StringIO()
    writer = Chem.SDWriter(buffer)
    molecule = Chem.Mol(conformers.molecule)
    molecule.SetProp("_Name", name)
    molecule.SetProp("energy_model", energy_description)
    for k, (conformer, e) in enumerate(zip(molecule.GetConformers(), conformers.energies)):
        molecule.SetProp("conformer_index", str(k))
        molecule.SetDoubleProp("energy_kj_mol", float(e))
        writer.write(molecule, confId=conformer.GetId())
    writer.close()
    return atomic_write_text(path, buffer.getvalue())


def openmm_positions(molecule, conf_id: int = -1, quantity: bool = True):
    """Conformer ``conf_id`` as OpenMM-ready positions ``[N, 3]`` in nm: an ``openmm.unit.Quantity`` or a NumPy array."""
    x = molecule.GetConformer(conf_id).GetPositions() * units.ANGSTROM_TO_NM
    if not quantity:
        return x
    from openmm import unit

    return unit.Quantity(x, unit.nanometer)


def to_ase_atoms(molecule, energies=None) -> list:
    """One ``ase.Atoms`` (Å) per conformer; ``atoms.info["energy_kj_mol"]`` holds ``energies[k]`` when given."""
    from ase import Atoms

    symbols = [a.GetSymbol() for a in molecule.GetAtoms()]
    frames = []
    for k, conformer in enumerate(molecule.GetConformers()):
        atoms = Atoms(symbols, positions=conformer.GetPositions())
        atoms.info["formal_charges"] = [a.GetFormalCharge() for a in molecule.GetAtoms()]
        if energies is not None:
            atoms.info["energy_kj_mol"] = float(energies[k])
        frames.append(atoms)
    return frames


def comparison_table(metrics: dict) -> str:
    """Side-by-side text table of molfree and ETKDG coverage, AMR, counts, evaluations and wall time."""
    rows = [("method", "molfree", "ETKDG")]
    m, b = metrics["molfree"], metrics["etkdg"]
    for d in ("0.5", "1", "1.5", "2"):
        rows.append((f"recall@{d} Å", f"{m['coverage']['recall'][d]:.2f}", f"{b['coverage']['recall'][d]:.2f}"))
    for d in ("0.5", "1", "1.5", "2"):
        rows.append((f"precision@{d} Å", f"{m['coverage']['precision'][d]:.2f}", f"{b['coverage']['precision'][d]:.2f}"))
    rows += [("AMR-recall (Å)", f"{m['coverage']['amr_recall']:.3f}", f"{b['coverage']['amr_recall']:.3f}"),
             ("AMR-precision (Å)", f"{m['coverage']['amr_precision']:.3f}", f"{b['coverage']['amr_precision']:.3f}"),
             ("conformers kept / made", f"{m['n_kept']} / {m['n_generated']}", f"{b['n_kept']} / {b['n_generated']}"),
             ("invalid (bonds/stereo)", str(m["n_invalid"]), str(b["n_invalid"])),
             ("lowest energy (kJ/mol)", f"{m['min_energy_kj_mol']:.1f}", f"{b['min_energy_kj_mol']:.1f}"),
             ("energy evaluations", str(m["energy_evaluations"]), str(b["energy_evaluations"])),
             ("wall time (s)", f"{m['wall_time_s']:.1f}", f"{b['wall_time_s']:.1f}")]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, width)) for r in rows)


# -- the workflow -------------------------------------------------------------------------------------------------


def _summary(conformers: ConformerSet, reference_heavy: np.ndarray, matches) -> dict:
    heavy, _ = cm.heavy_positions(conformers.molecule)
    cov = cm.coverage(heavy, reference_heavy, matches) if len(heavy) else None
    return {"coverage": cov, "n_generated": conformers.n_generated, "n_kept": len(conformers.energies),
            "n_invalid": conformers.n_invalid, "energy_evaluations": conformers.energy_evaluations,
            "wall_time_s": conformers.wall_time_s,
            "min_energy_kj_mol": float(conformers.energies.min()) if len(conformers.energies) else None}


def run_conformers(smiles: str, out: str | Path, energy: str = "mmff", n: int = 100, relax_method: str | None = None,
                   rmsd_threshold: float = 0.5, options: SamplerOptions | None = None, reference_embeddings: int = 500,
                   compare: bool = True, seed: int = 0, progress: bool = True, reference: str = "etkdg") -> dict:
    """Generate ``n`` conformers of ``smiles`` with the torsional adjoint sampler; write ``conformers.sdf`` and,
    with ``compare``, the ETKDG baseline/reference comparison (``metrics.json``, ``report.md``) into ``out``.

    ``reference``: ``"etkdg"`` relaxes ``reference_embeddings`` ETKDG embeddings, ``"md"`` as many frames of
    1000 K Langevin MD on the chosen energy, 1 ps apart (:func:`md_frames`); both with MMFF94 and deduplication.
    """
    validate_request(n, rmsd_threshold, reference_embeddings, reference)
    options = options or SamplerOptions()
    out = Path(out)
    molecule, fixes = prepare_molecule(smiles, seed)
    if relax_method == "mmff":
        check_elements(molecule, "mmff")
    cartesian, description = make_energy(energy, molecule)
    stereo = cm.stereo_signature(molecule, molecule.GetConformer().GetId())

    start = time.perf_counter()
    sampled, evaluations = sample_conformers(molecule, cartesian, n, options, seed, progress)
    generated = finalise(sampled, stereo, cartesian, relax_method, rmsd_threshold, evaluations, start)
    write_sdf(out / "conformers.sdf", generated, smiles, description)
    metrics = {"smiles": smiles, "energy": description, "n": n, "relax": relax_method,
               "rmsd_threshold_angstrom": rmsd_threshold, "stereo_fixes": fixes, "seed": seed,
               "n_torsions": RotatableTorsions.from_molecule(molecule).n_torsions,
               "sampler": {**vars(options), "config": vars(options.config())}}
    if compare:
        start = time.perf_counter()
        baseline = finalise(etkdg(molecule, n, seed + 1), stereo, cartesian, relax_method, rmsd_threshold, 0, start)
        start = time.perf_counter()
        structures = (etkdg(molecule, reference_embeddings, seed + 2) if reference == "etkdg" else
                      md_frames(molecule, cartesian, reference_embeddings, seed + 2, progress=progress))
        reference_set = finalise(structures, stereo, cartesian, "mmff", rmsd_threshold, 0, start)
        write_sdf(out / "etkdg.sdf", baseline, smiles, description)
        reference_heavy, matches = cm.heavy_positions(reference_set.molecule)
        metrics.update(reference={"kind": reference, "embeddings": reference_embeddings,
                                  "n_kept": len(reference_set.energies), "wall_time_s": reference_set.wall_time_s,
                                  "min_energy_kj_mol": float(reference_set.energies.min())
                                  if len(reference_set.energies)
                                  else None,
                                  "description": REFERENCES[reference]},
                       molfree=_summary(generated, reference_heavy, matches),
                       etkdg=_summary(baseline, reference_heavy, matches))
        if generated.energies.size and baseline.energies.size:
            table = comparison_table(metrics)
            print(table)
            atomic_write_text(out / "report.md", _report(metrics, table))
    else:
        metrics["molfree"] = {"n_generated": generated.n_generated, "n_kept": len(generated.energies),
                              "n_invalid": generated.n_invalid, "energy_evaluations": generated.energy_evaluations,
                              "wall_time_s": generated.wall_time_s}
    write_json(out / "metrics.json", metrics)
    print(f"[molfree conformers] {len(generated.energies)} conformers in {out / 'conformers.sdf'}")
    return metrics


def _report(metrics: dict, table: str) -> str:
    ref = metrics["reference"]
    fixes = "".join(f"\n- {f}" for f in metrics["stereo_fixes"])
    lowest = f", lowest energy {ref['min_energy_kj_mol']:.1f} kJ/mol" if ref["min_energy_kj_mol"] is not None else ""
    sources = "embeddings" if ref["kind"] == "etkdg" else "MD frames"
    bias = " It is built by ETKDG itself, so it favours the ETKDG baseline." if ref["kind"] == "etkdg" else ""
    return (f"# Conformers of `{metrics['smiles']}`\n\n"
            f"Energy: {metrics['energy']}; {metrics['n']} conformers requested; relaxation: {metrics['relax'] or 'none'}; "
            f"deduplication at {metrics['rmsd_threshold_angstrom']} Å heavy-atom RMSD; {metrics['n_torsions']} torsions "
            f"sampled at {metrics['sampler']['temperature']} K.{fixes}\n\n"
            f"Reference: {ref['description']}; {ref['embeddings']} {sources} → {ref['n_kept']} conformers{lowest}."
            f"{bias} The baseline gets the same number of embeddings, relaxation and deduplication as molfree."
            "\n\n```\n" + table + "\n```\n")
