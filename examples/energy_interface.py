"""The one interface: evaluate OpenMM, GFN2-xTB (ASE) and analytic energies the same way.

    python examples/energy_interface.py
"""
import torch
from tblite.ase import TBLite

from molfree import ASEEnergy, LennardJonesClusterEnergy, systems, units
from molfree.neighbors import lennard_jones, neighbor_list

# An OpenMM System as a batched, differentiable Energy (nm in, kJ/mol out).
ala = systems.load("alanine-dipeptide-vacuum")
x = torch.tensor(ala.positions).expand(4, -1, -1) + 0.002 * torch.randn(4, ala.n_atoms, 3, dtype=torch.float64)
energies, forces = ala.energy.energy_and_forces(x)
print(f"amber14 energies (kJ/mol): {energies.numpy().round(2)}; max |F| = {forces.abs().max():.0f} kJ/mol/nm")

# The same molecule through an ASE calculator (GFN2-xTB via tblite); units converted at the boundary.
xtb = ASEEnergy(TBLite(method="GFN2-xTB", verbosity=0), ala.to_ase())
e_xtb = xtb(x[0])
print(f"GFN2-xTB energy: {float(e_xtb):.1f} kJ/mol = {float(e_xtb) * units.KJ_PER_MOL_TO_EV:.3f} eV")

# A periodic LJ fluid: neighbor list + pairwise kernel, checked against the System's OpenMM energy.
fluid = systems.load("lj-fluid")
pos, box = torch.tensor(fluid.positions), torch.tensor(fluid.box)
pairs = neighbor_list(pos, 2.5, box)
sigma, epsilon = torch.ones(fluid.n_atoms, dtype=torch.float64), torch.ones(fluid.n_atoms, dtype=torch.float64)
e_kernel = lennard_jones(pos, pairs, sigma, epsilon, 2.5, box)
print(f"LJ fluid: {len(pairs.i)} pairs, kernel {float(e_kernel):.4f} vs OpenMM {float(fluid.energy(pos, box)):.4f} kJ/mol")

# An analytic target of the sampling literature.
print(f"LJ-13 (sampling-paper convention) at a random cluster: {float(LennardJonesClusterEnergy.lj13()(torch.randn(13, 3))):.2f}")
