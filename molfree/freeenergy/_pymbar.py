"""Deferred, quiet import of pymbar (it prints an installation banner when JAX is absent)."""
from __future__ import annotations

import contextlib
import io
import logging


def pymbar():
    """The ``pymbar`` module, imported without its JAX banner on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        logging.getLogger("pymbar").setLevel(logging.ERROR)
        import pymbar as module
        import pymbar.timeseries  # noqa: F401
        import pymbar.other_estimators  # noqa: F401
    return module
