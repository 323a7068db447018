"""Implementations of :class:`molfree.Energy`: analytic targets and bridges to OpenMM and ASE."""
