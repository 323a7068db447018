"""Data files of molfree's systems (installed as ``molfree.data``); loaded by :mod:`molfree.systems`."""
