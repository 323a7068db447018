"""Physical constants and unit conversions: the only place they live.

Internal units are OpenMM's: nm, ps, kJ/mol, K, elementary charge, dalton.
Conversions happen at the boundaries only: ASE (eV, Å) and xTB (Hartree, Bohr).
Multiply a value in the unit on the left of a name to get the unit on the right,
e.g. ``x_angstrom = x_nm * NM_TO_ANGSTROM``.
"""
from __future__ import annotations

import math

# CODATA 2018 exact / recommended values.
AVOGADRO = 6.02214076e23  # 1/mol
BOLTZMANN_J_PER_K = 1.380649e-23  # J/K
ELEMENTARY_CHARGE_C = 1.602176634e-19  # C
BOHR_ANGSTROM = 0.529177210903  # Å per Bohr
VACUUM_PERMITTIVITY = 8.8541878128e-12  # F/m
HARTREE_EV = 27.211386245988  # eV per Hartree

#: Molar gas constant k_B * N_A in kJ/(mol K).
MOLAR_GAS_CONSTANT = BOLTZMANN_J_PER_K * AVOGADRO / 1000.0

#: Coulomb prefactor N_A e^2 / (4 pi eps0) in kJ nm / (mol e^2), as OpenMM (>= 8.2) uses it.
ONE_4PI_EPS0 = AVOGADRO * ELEMENTARY_CHARGE_C**2 / (4 * math.pi * VACUUM_PERMITTIVITY) * 1e9 / 1000.0

NM_TO_ANGSTROM = 10.0
ANGSTROM_TO_NM = 0.1
EV_TO_KJ_PER_MOL = ELEMENTARY_CHARGE_C * AVOGADRO / 1000.0  # 96.485332...
KJ_PER_MOL_TO_EV = 1.0 / EV_TO_KJ_PER_MOL
KCAL_TO_KJ = 4.184
EV_TO_MEV = 1000.0
KJ_TO_KCAL = 1.0 / KCAL_TO_KJ
HARTREE_TO_KJ_PER_MOL = HARTREE_EV * EV_TO_KJ_PER_MOL
BOHR_TO_NM = BOHR_ANGSTROM * ANGSTROM_TO_NM
NM_TO_BOHR = 1.0 / BOHR_TO_NM
#: Force conversion: eV/Å -> kJ/(mol nm).
EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM = EV_TO_KJ_PER_MOL * NM_TO_ANGSTROM
KJ_PER_MOL_NM_TO_EV_PER_ANGSTROM = 1.0 / EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM
#: Force conversion: Hartree/Bohr -> kJ/(mol nm).
HARTREE_PER_BOHR_TO_KJ_PER_MOL_NM = HARTREE_TO_KJ_PER_MOL / BOHR_TO_NM
#: Stress conversion: kJ/(mol nm^3) -> eV/Å^3.
KJ_PER_MOL_NM3_TO_EV_PER_ANGSTROM3 = KJ_PER_MOL_TO_EV / NM_TO_ANGSTROM**3


def kT(temperature: float) -> float:
    """Thermal energy k_B T in kJ/mol for a temperature in K."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive (K), got {temperature!r}")
    return MOLAR_GAS_CONSTANT * temperature


def beta(temperature: float) -> float:
    """Inverse thermal energy 1/(k_B T) in mol/kJ for a temperature in K."""
    return 1.0 / kT(temperature)


#: Temperature (K) at which kT = 1 kJ/mol: used by reduced-unit systems (ε = 1 kJ/mol).
REDUCED_TEMPERATURE = 1.0 / MOLAR_GAS_CONSTANT
