"""``model.pt``: a plain dict ``{"format", "version", "config", "state_dict", "meta"}``.

Only tensors, numbers, strings, lists and dicts, so ``torch.load(path, weights_only=True)`` reads it: no code
is ever unpickled. ``save`` writes atomically (temp file in the same folder, then rename).
"""
from __future__ import annotations

from pathlib import Path

import torch

from snnkit.atomic import save_torch
from snnkit.graph.errors import first_line
from snnkit.models.build import build
from snnkit.models.spiking import SpikingModel

FORMAT = "snnkit.model"
VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and the problem."""


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def save(model: SpikingModel, path: "str | Path", meta: dict | None = None) -> None:
    """Write ``model`` (config + state dict + optional JSON-like ``meta``) to ``path`` atomically."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta or {},
    }
    save_torch(path, payload)


def read(path: "str | Path") -> dict:
    """The raw payload of a model file, validated (weights_only load)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    with open(path, "rb") as f:
        if f.read(8) == HDF5_MAGIC:
            raise ModelFileError(f"{path}: an HDF5 file (a NIR graph?), not an snnkit model file (.pt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        why = first_line(exc)
        if why.startswith("Weights only load failed"):
            why = "it pickles Python objects besides tensors, refused: loading them could run code"
        raise ModelFileError(f"{path}: not a readable snnkit model file ({why})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an snnkit model file (no '{FORMAT}' header)")
    if payload.get("version") != VERSION:
        raise ModelFileError(f"{path}: model file version {payload.get('version')} is not supported (expected {VERSION})")
    for key, kind in (("config", dict), ("state_dict", dict), ("meta", dict)):
        if key in payload and not isinstance(payload[key], kind):
            raise ModelFileError(f"{path}: its '{key}' is a {type(payload[key]).__name__}, not a {kind.__name__}")
    if not all(isinstance(v, torch.Tensor) for v in payload.get("state_dict", {}).values()):
        raise ModelFileError(f"{path}: its 'state_dict' holds values that are not tensors")
    return payload


def load(path: "str | Path", device: "str | torch.device" = "cpu") -> SpikingModel:
    """Rebuild the model stored in ``path``, in eval mode, on ``device``."""
    payload = read(path)
    try:
        model = build(payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as exc:
        raise ModelFileError(f"{path}: model does not match its config ({first_line(exc)})") from None
    return model.eval().to(device)
