"""Ready-made molecular and toy systems: ``load(name, **options) -> System``.

Every :class:`System` carries an OpenMM Topology and System, positions (nm), box (nm),
temperature (K), a ``description`` that states its setup, and an :class:`molfree.Energy`.
Force-field systems use :class:`~molfree.energies.openmm_energy.OpenMMEnergy`; the
sampling benchmarks lj13, lj55 and dw4 use their analytic energies, and their OpenMM
Systems are independent implementations of the same functions.

Reduced-unit systems (LJ, DW-4) take lengths in nm and ε = 1 kJ/mol numerically, masses
of 1 Da (so the reduced time unit is 1 ps) and show as argon in topologies and ASE.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Callable

import numpy as np

from . import units
from .energy import Energy


@dataclass
class System:
    """A simulation-ready system.

    Attributes:
        name: registry name.
        topology: ``openmm.app.Topology``.
        system: ``openmm.System``.
        positions: ``[N, 3]`` starting positions, nm (planar systems have z = 0).
        box: ``[3, 3]`` periodic box vectors (rows), nm, or None.
        temperature: K.
        description: force field, solvent, constraints, cutoffs and units, in words.
        energy: the system's :class:`molfree.Energy`.
    """

    name: str
    topology: object
    system: object
    positions: np.ndarray
    box: np.ndarray | None
    temperature: float
    description: str
    energy: Energy

    @property
    def n_atoms(self) -> int:
        """Number of particles N."""
        return self.positions.shape[0]

    def masses(self) -> np.ndarray:
        """Particle masses ``[N]`` in dalton."""
        from openmm import unit

        return np.array([self.system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(self.n_atoms)])

    def to_ase(self):
        """``ase.Atoms`` in Å with masses, cell and pbc; particles without element are ``X``."""
        import ase

        symbols = [a.element.symbol if a.element is not None else "X" for a in self.topology.atoms()]
        periodic = self.box is not None
        return ase.Atoms(symbols, positions=self.positions * units.NM_TO_ANGSTROM, masses=self.masses(),
                         cell=self.box * units.NM_TO_ANGSTROM if periodic else None, pbc=periodic)

    def to_mdtraj(self):
        """One-frame ``mdtraj.Trajectory`` (nm) with unit cell if periodic."""
        import mdtraj

        traj = mdtraj.Trajectory(self.positions[None], mdtraj.Topology.from_openmm(self.topology))
        if self.box is not None:
            traj.unitcell_vectors = self.box[None]
        return traj


_BUILDERS: dict[str, Callable[..., System]] = {}


def _register(name: str, builder: Callable[..., System] | None = None):
    if builder is not None:
        _BUILDERS[name] = builder
        return builder
    return functools.partial(_register, name)


def names() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(_BUILDERS)


def load(name: str, **options) -> System:
    """Build the system ``name``; ``options`` are the keyword arguments of its builder.

    Builders (options with defaults): :func:`alanine_dipeptide_vacuum`, :func:`alanine_dipeptide_implicit`,
    :func:`water_box`, :func:`methane_in_water`, :func:`nacl_rocksalt`, :func:`lj_fluid`, :func:`lj_fcc`,
    :func:`dw4`; lj13 and lj55 take none.

    Raises ``ValueError`` for an unknown name.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown system {name!r}; known systems: {', '.join(names())}")
    return _BUILDERS[name](**options)


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _forcefield(*files: str):
    """``openmm.app.ForceField`` from OpenMM's files and molfree's data files (by bare file name)."""
    from openmm import app

    with resources.as_file(resources.files("molfree.data")) as data:
        return app.ForceField(*(str(data / f) if (data / f).is_file() else f for f in files))


def _box_of(topology) -> np.ndarray | None:
    from openmm import unit

    vectors = topology.getPeriodicBoxVectors()
    return None if vectors is None else np.array(vectors.value_in_unit(unit.nanometer))


def _check_cutoff(cutoff: float, box: np.ndarray) -> None:
    half = 0.5 * float(np.min(np.diag(box)))
    if not 0 < cutoff < half:
        raise ValueError(f"cutoff {cutoff} nm must be positive and below half the box width ({half:.4g} nm)")


def _system(name, topology, system, positions, temperature, description, platform) -> System:
    """A :class:`System` whose energy is ``OpenMMEnergy(system)``; box from the topology."""
    from .energies.openmm_energy import OpenMMEnergy

    return System(name=name, topology=topology, system=system, positions=np.asarray(positions, dtype=np.float64),
                  box=_box_of(topology), temperature=float(temperature), description=description,
                  energy=OpenMMEnergy(system, platform=platform))


def _particles(n: int, box: np.ndarray | None = None):
    """Topology of ``n`` single-particle residues (argon element) and an OpenMM System with 1 Da masses."""
    import openmm
    from openmm import app

    topology = app.Topology()
    chain = topology.addChain()
    system = openmm.System()
    for _ in range(n):
        topology.addAtom("X", app.element.argon, topology.addResidue("LJ", chain))
        system.addParticle(1.0)
    if box is not None:
        topology.setPeriodicBoxVectors(box)
        system.setDefaultPeriodicBoxVectors(*box)
    return topology, system


def _fcc(cells: int, a: float) -> np.ndarray:
    """Sites ``[4 cells³, 3]`` of an fcc lattice with conventional cell edge ``a`` (nm)."""
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    return ((grid + basis).reshape(-1, 3)) * a


def _mackay(shells: int, spacing: float) -> np.ndarray:
    """Mackay icosahedron ``[1 + Σ_k (10k² + 2), 3]``; vertices of shell k at radius ``k · spacing`` (nm)."""
    phi = (1 + 5**0.5) / 2
    vertices = np.array([p for s1 in (-1, 1) for s2 in (-1, 1)
                         for p in ((0, s1, s2 * phi), (s1, s2 * phi, 0), (s2 * phi, 0, s1))], dtype=float)
    vertices /= np.linalg.norm(vertices[0])
    edge = np.linalg.norm(vertices[:, None] - vertices[None], axis=-1)
    nearest = np.isclose(edge, edge[edge > 0].min())
    faces = [(i, j, k) for i in range(12) for j in range(i + 1, 12) for k in range(j + 1, 12)
             if nearest[i, j] and nearest[j, k] and nearest[i, k]]
    points = [np.zeros(3)]
    for k in range(1, shells + 1):
        for i, j, m in faces:
            points += [(p * vertices[i] + q * vertices[j] + (k - p - q) * vertices[m]) * spacing
                       for p in range(k + 1) for q in range(k + 1 - p)]
    return np.unique(np.round(np.array(points), 10), axis=0)


# ---------------------------------------------------------------------------------------------------------------
# force-field systems


def _alanine_dipeptide():
    from openmm import app, unit

    with resources.as_file(resources.files("molfree.data") / "alanine-dipeptide.pdb") as path:
        pdb = app.PDBFile(str(path))
    return pdb.topology, np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))


@_register("alanine-dipeptide-vacuum")
def alanine_dipeptide_vacuum(temperature: float = 300.0, platform: str = "Reference") -> System:
    """ACE-ALA-NME in vacuum, Amber14 (ff14SB), no cutoff, no constraints."""
    from openmm import app

    topology, positions = _alanine_dipeptide()
    system = _forcefield("amber14-all.xml").createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
    description = ("Alanine dipeptide (ACE-ALA-NME, 22 atoms) in vacuum; Amber14 ff14SB (amber14-all.xml); "
                   "NoCutoff; no constraints (all bonds flexible, the ML-sampling convention); "
                   f"{temperature} K; nm, kJ/mol.")
    return _system("alanine-dipeptide-vacuum", topology, system, positions, temperature, description,
                   platform=platform)


@_register("alanine-dipeptide-implicit")
def alanine_dipeptide_implicit(temperature: float = 300.0, platform: str = "Reference") -> System:
    """ACE-ALA-NME, Amber96 with OBC1 generalised Born (Boltzmann-generator setup), no constraints."""
    from openmm import app

    topology, positions = _alanine_dipeptide()
    system = _forcefield("amber96.xml", "implicit/obc1.xml").createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=None)
    description = ("Alanine dipeptide (ACE-ALA-NME, 22 atoms) in implicit solvent; Amber96 (amber96.xml) with "
                   "OBC1 generalised Born (implicit/obc1.xml: CustomGBForce, OBC I alpha=0.8 beta=0 "
                   "gamma=2.909125, mbondi2 radii, ACE surface term, solute/solvent dielectric 1/78.5); "
                   "NoCutoff; no constraints; the setup of openmmtools' AlanineDipeptideImplicit "
                   f"(amber96 + OBC1) used by the Boltzmann-generator literature; {temperature} K; nm, kJ/mol. "
                   "Not amber96_obc.xml, whose GBSAOBCForce is OBC II.")
    return _system("alanine-dipeptide-implicit", topology, system, positions, temperature, description,
                   platform=platform)


def _relax(forcefield, topology, system, positions, cutoff: float, iterations: int) -> np.ndarray:
    """Remove the clashes Modeller.addSolvent leaves at the box seams; positions in and out in nm.

    L-BFGS (``iterations``) on a flexible-water copy with a reaction-field cutoff on the CPU
    platform (the constrained PME minimisation is ~50x slower), then the water geometry is
    restored with ``Context.applyConstraints`` on the real, rigid-water ``system``.
    """
    import openmm
    from openmm import app, unit

    cpu = openmm.Platform.getPlatformByName("CPU")
    flexible = forcefield.createSystem(topology, nonbondedMethod=app.CutoffPeriodic,
                                       nonbondedCutoff=cutoff * unit.nanometer, rigidWater=False, constraints=None)
    context = openmm.Context(flexible, openmm.VerletIntegrator(0.001), cpu)
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, iterations)
    relaxed = context.getState(getPositions=True).getPositions(asNumpy=True)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), cpu)
    context.setPositions(relaxed)
    context.applyConstraints(1e-6)
    return context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def _solvated(name: str, topology, positions, size: float, cutoff: float, temperature: float, platform: str,
              relax_iterations: int, forcefield_files: tuple[str, ...], solute: str) -> System:
    """Solvate in a cubic TIP3P box of edge ``size`` nm (Modeller.addSolvent), PME, rigid water, relaxed."""
    import openmm
    from openmm import app, unit

    _check_cutoff(cutoff, np.eye(3) * size)
    forcefield = _forcefield(*forcefield_files)
    modeller = app.Modeller(topology, positions * unit.nanometer)
    modeller.addSolvent(forcefield, model="tip3p", boxSize=openmm.Vec3(size, size, size) * unit.nanometer)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME,
                                     nonbondedCutoff=cutoff * unit.nanometer, constraints=None, rigidWater=True)
    positions = modeller.getPositions().value_in_unit(unit.nanometer)
    if relax_iterations:
        positions = _relax(forcefield, modeller.topology, system, positions, cutoff, relax_iterations)
    n_water = sum(r.name == "HOH" for r in modeller.topology.residues())
    description = (f"{solute}{n_water} TIP3P waters (Amber14 tip3p.xml) in a {size} nm cubic box built by "
                   f"Modeller.addSolvent and relaxed by {relax_iterations} L-BFGS iterations (flexible-water "
                   "reaction-field copy, then constraints re-applied); PME (error tolerance 5e-4), cutoff "
                   f"{cutoff} nm, long-range dispersion correction on; rigid water (SETTLE constraints, used by "
                   f"integrators; energies are evaluated as given); {temperature} K; nm, kJ/mol.")
    return _system(name, modeller.topology, system, positions, temperature, description, platform=platform)


@_register("water-box")
def water_box(size: float = 2.5, cutoff: float = 0.9, temperature: float = 300.0, platform: str = "Reference",
              relax_iterations: int = 50) -> System:
    """Cubic TIP3P water box of edge ``size`` nm with PME."""
    from openmm import app

    return _solvated("water-box", app.Topology(), np.zeros((0, 3)), size, cutoff, temperature, platform,
                     relax_iterations, ("amber14/tip3p.xml",), "")


@_register("methane-in-water")
def methane_in_water(size: float = 2.5, cutoff: float = 0.9, temperature: float = 300.0,
                     platform: str = "Reference", relax_iterations: int = 50) -> System:
    """One GAFF methane (``systems/methane.xml``) in a cubic TIP3P box with PME."""
    from openmm import app

    topology = app.Topology()
    residue = topology.addResidue("CH4", topology.addChain())
    carbon = topology.addAtom("C", app.element.carbon, residue)
    directions = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3.0)
    for i in range(4):
        topology.addBond(carbon, topology.addAtom(f"H{i + 1}", app.element.hydrogen, residue))
    positions = np.vstack([np.zeros(3), 0.1092 * directions]) + 0.5 * size
    return _solvated("methane-in-water", topology, positions, size, cutoff, temperature, platform,
                     relax_iterations, ("amber14/tip3p.xml", "methane.xml"),
                     "One methane (GAFF c3/hc LJ, bonds and angles; charges C -0.1088 e, H +0.0272 e; "
                     "molfree's methane.xml) in ")


@_register("nacl-rocksalt")
def nacl_rocksalt(cells: int = 3, lattice_constant: float = 0.564, cutoff: float = 0.8,
                  temperature: float = 300.0, platform: str = "Reference") -> System:
    """Rock-salt NaCl crystal, ``cells³`` conventional cells (8 ions each), Joung-Cheatham ions, PME."""
    from openmm import app, unit

    box = np.eye(3) * cells * lattice_constant
    _check_cutoff(cutoff, box)
    sodium = _fcc(cells, lattice_constant)
    chloride = sodium + np.array([0.5 * lattice_constant, 0.0, 0.0])
    topology = app.Topology()
    chain = topology.addChain()
    for residue_name, element, sites in (("NA", app.element.sodium, sodium), ("CL", app.element.chlorine, chloride)):
        for _ in sites:
            topology.addAtom(residue_name, element, topology.addResidue(residue_name, chain))
    topology.setPeriodicBoxVectors(box)
    system = _forcefield("amber14/tip3p.xml").createSystem(topology, nonbondedMethod=app.PME,
                                                           nonbondedCutoff=cutoff * unit.nanometer)
    description = (f"Rock-salt NaCl, {cells}x{cells}x{cells} conventional cells ({8 * cells**3} ions), "
                   f"a = {lattice_constant} nm; Joung-Cheatham (TIP3P-compatible) ion LJ from Amber14 "
                   "tip3p.xml with charges +-1 e, Lorentz-Berthelot mixing; PME (error tolerance 5e-4), "
                   f"cutoff {cutoff} nm, dispersion correction on; {temperature} K; nm, kJ/mol.")
    return _system("nacl-rocksalt", topology, system, np.vstack([sodium, chloride]), temperature, description,
                   platform=platform)


# ---------------------------------------------------------------------------------------------------------------
# reduced-unit Lennard-Jones and double-well systems


def _lj_periodic(name: str, positions: np.ndarray, box: np.ndarray, cutoff: float, reduced_temperature: float,
                 dispersion_correction: bool, platform: str, what: str) -> System:
    """Periodic LJ system, σ = 1 nm, ε = 1 kJ/mol, truncated (not shifted) at ``cutoff``."""
    import openmm

    _check_cutoff(cutoff, box)
    topology, system = _particles(len(positions), box)
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(cutoff)
    force.setUseDispersionCorrection(dispersion_correction)
    for _ in range(len(positions)):
        force.addParticle(0.0, 1.0, 1.0)
    system.addForce(force)
    temperature = reduced_temperature * units.REDUCED_TEMPERATURE
    description = (f"{what}; {len(positions)} particles, 4ε[(σ/r)^12 - (σ/r)^6] with σ = 1 nm, ε = 1 kJ/mol, "
                   f"mass 1 Da (reduced time 1 ps), truncated (not shifted) at {cutoff} σ, long-range "
                   f"dispersion correction {'on' if dispersion_correction else 'off'}; cubic box "
                   f"{box[0, 0]:.6g} σ; T* = {reduced_temperature} ({temperature:.6g} K); "
                   "OpenMM NonbondedForce CutoffPeriodic with zero charges.")
    return _system(name, topology, system, positions, temperature, description, platform=platform)


@_register("lj-fluid")
def lj_fluid(n_particles: int = 256, density: float = 0.8, reduced_temperature: float = 1.5, cutoff: float = 2.5,
             dispersion_correction: bool = False, platform: str = "Reference") -> System:
    """Lennard-Jones fluid at reduced density ρ* and temperature T*, started on a simple cubic lattice."""
    if n_particles < 2 or density <= 0:
        raise ValueError("need n_particles >= 2 and a positive density")
    length = (n_particles / density) ** (1 / 3)
    per_side = int(np.ceil(n_particles ** (1 / 3) - 1e-9))
    grid = np.stack(np.meshgrid(*[np.arange(per_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = (grid[:n_particles] + 0.5) * (length / per_side)
    return _lj_periodic("lj-fluid", positions, np.eye(3) * length, cutoff, reduced_temperature,
                        dispersion_correction, platform,
                        f"Lennard-Jones fluid at ρ* = {density}, started on a simple cubic lattice")


@_register("lj-fcc")
def lj_fcc(cells: int = 4, cutoff: float = 2.5, reduced_temperature: float = 0.5,
           dispersion_correction: bool = False, platform: str = "Reference") -> System:
    """Perfect fcc Lennard-Jones crystal of ``cells³`` conventional cells, nearest neighbours at 2^(1/6) σ.

    Longer cutoffs need more cells (cutoff < half the box edge).
    """
    a = 2 ** (1 / 6) * np.sqrt(2.0)
    return _lj_periodic("lj-fcc", _fcc(cells, a), np.eye(3) * cells * a, cutoff, reduced_temperature,
                        dispersion_correction, platform,
                        f"fcc Lennard-Jones crystal, {cells}x{cells}x{cells} conventional cells, a = {a:.6g} σ")


def _lj_cluster(n_particles: int) -> System:
    """LJ-13 / LJ-55 in the diffusion-sampler convention (see ``LennardJonesClusterEnergy.lj13``).

    The OpenMM System evaluates the same function independently: a CustomNonbondedForce for
    the pairs, and Σᵢ‖xᵢ − x̄‖² = Σᵢ‖xᵢ‖² − N‖x̄‖² from a CustomExternalForce and a
    CustomCentroidBondForce with unit weights. Starts from a Mackay icosahedron.
    """
    import openmm

    from .energies.analytic import LennardJonesClusterEnergy

    shells = {13: 1, 55: 2}[n_particles]
    energy = getattr(LennardJonesClusterEnergy, f"lj{n_particles}")()
    topology, system = _particles(n_particles)
    pairs = openmm.CustomNonbondedForce("pair_factor*epsilon*((rm/r)^12 - 2*(rm/r)^6)")
    for key, value in (("pair_factor", energy.pair_factor), ("epsilon", energy.epsilon), ("rm", energy.rm)):
        pairs.addGlobalParameter(key, value)
    pairs.setNonbondedMethod(openmm.CustomNonbondedForce.NoCutoff)
    external = openmm.CustomExternalForce("0.5*k_osc*(x^2 + y^2 + z^2)")
    external.addGlobalParameter("k_osc", energy.oscillator_scale)
    centroid = openmm.CustomCentroidBondForce(1, "-0.5*k_osc*n*(x1^2 + y1^2 + z1^2)")
    centroid.addGlobalParameter("k_osc", energy.oscillator_scale)
    centroid.addGlobalParameter("n", n_particles)
    centroid.addGroup(list(range(n_particles)), [1.0] * n_particles)
    centroid.addBond([0], [])
    for i in range(n_particles):
        pairs.addParticle([])
        external.addParticle(i, [])
    for force in (pairs, external, centroid):
        system.addForce(force)
    description = (f"LJ-{n_particles} cluster in the diffusion-sampler convention (DEM/iDEM/Adjoint Sampling): "
                   f"{energy.pair_factor:g} x Σ_(i<j) ε[(rm/r)^12 - 2(rm/r)^6] (= sum over ordered pairs) "
                   f"+ {energy.oscillator_scale:g} x ½ Σ_i |x_i - mean(x)|^2, ε = {energy.epsilon:g} kJ/mol, "
                   f"rm = {energy.rm:g} nm, no cutoff, mass 1 Da; T* = 1 (kT = 1 kJ/mol); energy is the analytic "
                   "LennardJonesClusterEnergy, the OpenMM System an independent implementation of it.")
    return System(name=f"lj{n_particles}", topology=topology, system=system, positions=_mackay(shells, energy.rm),
                  box=None, temperature=units.REDUCED_TEMPERATURE, description=description, energy=energy)


_register("lj13", functools.partial(_lj_cluster, 13))
_register("lj55", functools.partial(_lj_cluster, 55))


@_register("dw4")
def dw4() -> System:
    """DW-4: four particles in 2D with the pairwise double well of Köhler et al. (2020).

    ``energy`` is the analytic ``DoubleWellEnergy.dw4()`` (dim 2: positions ``[B, 4, 2]``);
    ``positions`` are ``[4, 3]`` with z = 0 for the topology, OpenMM and ASE, whose System
    (a CustomBondForce over the 6 pairs) models the plane z = 0.
    """
    import openmm

    from .energies.analytic import DoubleWellEnergy

    energy = DoubleWellEnergy.dw4()
    topology, system = _particles(4)
    force = openmm.CustomBondForce("a*s + b*s^2 + c*s^4; s = r - d0")
    for key in ("a", "b", "c", "d0"):
        force.addGlobalParameter(key, getattr(energy, key))
    for i in range(4):
        for j in range(i + 1, 4):
            force.addBond(i, j, [])
    system.addForce(force)
    half = 0.5 * energy.d0
    positions = np.array([[-half, -half, 0.0], [half, -half, 0.0], [half, half, 0.0], [-half, half, 0.0]])
    description = ("DW-4 (Köhler et al. 2020): 4 particles in 2D, E = Σ_(i<j) a s + b s^2 + c s^4 with "
                   f"s = d_ij - d0, a = {energy.a:g}, b = {energy.b:g}, c = {energy.c:g}, d0 = {energy.d0:g} "
                   "(nm, kJ/mol, τ = 1 at T* = 1, kT = 1 kJ/mol), mass 1 Da. energy is the analytic "
                   "DoubleWellEnergy (dim 2, positions [B, 4, 2]); positions, topology, OpenMM System and "
                   "to_ase() use [4, 3] with z = 0 (the OpenMM System is an independent implementation).")
    return System(name="dw4", topology=topology, system=system, positions=positions, box=None,
                  temperature=units.REDUCED_TEMPERATURE, description=description, energy=energy)
