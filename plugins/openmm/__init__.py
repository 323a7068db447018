"""molfree.openmm: OpenMM forces and moves backed by molfree (filled by later issues)."""
