"""``model.pt``: a plain dict ``{"format", "version", "config", "state_dict", "meta"}``.

Only tensors, numbers, strings, lists and dicts, so ``torch.load(path, weights_only=True)`` reads it: no code
is ever unpickled. ``save`` writes atomically (temp file in the same folder, then rename).
"""
from __future__ import annotations

from pathlib import Path

import torch

from snnkit.atomic import atomic_write
from snnkit.models.build import build
from snnkit.models.spiking import SpikingModel

FORMAT = "snnkit.model"
VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and the problem."""


def save(model: SpikingModel, path: "str | Path", meta: dict | None = None) -> None:
    """Write ``model`` (config + state dict + optional JSON-like ``meta``) to ``path`` atomically."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta or {},
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read(path: "str | Path") -> dict:
    """The raw payload of a model file, validated (weights_only load)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: not a readable snnkit model file ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an snnkit model file (no '{FORMAT}' header)")
    if payload.get("version") != VERSION:
        raise ModelFileError(f"{path}: model file version {payload.get('version')} is not supported (expected {VERSION})")
    return payload


def load(path: "str | Path", device: "str | torch.device" = "cpu") -> SpikingModel:
    """Rebuild the model stored in ``path``, in eval mode, on ``device``."""
    payload = read(path)
    try:
        model = build(payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: model does not match its config ({str(exc).splitlines()[0]})") from None
    return model.eval().to(device)
