"""molfree.crystals: crystal structure search and relaxation at the ASE boundary (eV, Å).

Random structure search (pyxtal), ASE relaxations with cell filters, spglib symmetry,
pymatgen matching, CDVAE-style metrics and a flow-matching generator, CrystalFlow (``generative``,
torch; structure prediction and free generation). Heavy dependencies (pyxtal, pymatgen, spglib,
smact, chgnet) are the ``crystals`` extra and load on first use.
"""
from .calculators import NAMES, make_calculator
from .generative import CrystalFlow
from .relax import Relaxed, deduplicate, rank, relax, space_group
from .search import SearchResult, random_candidate, random_search, relax_starts
from .structures import parse_composition, to_atoms, to_structure, valid

__all__ = ["NAMES", "CrystalFlow", "Relaxed", "SearchResult", "deduplicate", "make_calculator", "parse_composition",
           "random_candidate", "random_search", "rank", "relax", "relax_starts", "space_group", "to_atoms",
           "to_structure", "valid"]
