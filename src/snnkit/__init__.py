"""snnkit: robust spiking neural networks, from training to neuromorphic targets.

Importing the package is cheap and does not import torch, so that the Lava worker (Python 3.10, no torch)
can use the torch-free parts of it (``snnkit.deploy.loihi``). ``snnkit.load`` imports torch when called.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load", "__version__"]


def __getattr__(name: str):
    if name == "load":
        from snnkit.models.io import load

        return load
    raise AttributeError(f"module 'snnkit' has no attribute {name!r}")
