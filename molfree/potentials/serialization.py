"""Model files: one file, ``torch.load(weights_only=True)``-loadable, with a JSON header.

Layout: ``{"format": "molfree-potential", "version": 1, "header": <JSON str>, "state_dict": {...}}``.
The header holds the architecture, elements, cutoff, units, training provenance (dataset hash,
metrics). Loading never executes code from the file.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch

from ..io import atomic_write_bytes

FORMAT = "molfree-potential"
#: 2: dimensionless radial basis, body-order products and per-layer readouts (version-1 files are not loadable).
VERSION = 2
UNITS = {"length": "nm", "energy": "kJ/mol", "forces": "kJ/mol/nm"}


def save(model, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``model`` (an :class:`EquivariantPotential`) and ``metadata`` (JSON-serialisable) to ``path`` atomically."""
    header = {"architecture": "EquivariantPotential", "config": model.config, "units": UNITS,
              "periodic_data": model.periodic_data, "metadata": metadata or model.metadata}
    payload = {"format": FORMAT, "version": VERSION, "header": json.dumps(header),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a model file (see :func:`load`)."""
    return json.loads(_read_payload(path)["header"])


def load(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """Load an :class:`EquivariantPotential` from a model file written by :func:`save`."""
    from .model import EquivariantPotential

    payload = _read_payload(path)
    header = json.loads(payload["header"])
    if header.get("architecture") != "EquivariantPotential":
        raise ValueError(f"{path}: unknown architecture {header.get('architecture')!r}")
    model = EquivariantPotential(**header["config"]).to(dtype=dtype)
    model.load_state_dict(payload["state_dict"])
    model.periodic_data = header.get("periodic_data")
    model.metadata = header.get("metadata") or {}
    return model.to(device=device).eval()


def _read_payload(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, unsupported globals
        raise ValueError(f"{path} is not a molfree model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a molfree model file (no '{FORMAT}' format tag)")
    if payload.get("version") != VERSION:
        raise ValueError(f"{path}: model file version {payload.get('version')} is not supported (expected {VERSION})")
    return payload
