"""molfree.ase: ASE calculators backed by molfree (filled by later issues)."""
