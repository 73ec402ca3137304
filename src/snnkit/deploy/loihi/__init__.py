"""Loihi 2 fixed point: quantisation of NIR graphs and the quantised graph format (torch-free).

Importing this package never imports torch: the Lava worker (Python 3.10, no torch) uses it. The torch
emulator lives in :mod:`snnkit.deploy.loihi.emulator`.

- :func:`quantize` (float ``nir.NIRGraph`` -> :class:`LoihiGraph`), ``LoihiGraph.save(dir)`` /
  ``LoihiGraph.load(dir)`` (integers + ``export_report.json``)
- :func:`write_netx` (lava-dl netx HDF5, where the graph fits that format), :func:`netx_fit`;
  :mod:`~snnkit.deploy.loihi.netx_read` reads such a file back into what lava-dl's netx runs, and
  :mod:`~snnkit.deploy.loihi.netx_check` verifies it (lava-dl on Lava vs the emulator) and measures its cost
"""
from __future__ import annotations

from snnkit.deploy.loihi.graph import InputSpec, LoihiGraph, NeuronLayer, Projection
from snnkit.deploy.loihi.quantize import QuantizeError, quantize

__all__ = ["InputSpec", "LoihiGraph", "NeuronLayer", "Projection", "QuantizeError", "quantize", "write_netx",
           "netx_fit"]


def __getattr__(name: str):
    if name in ("write_netx", "netx_fit"):
        from snnkit.deploy.loihi import netx

        return getattr(netx, name)
    raise AttributeError(f"module 'snnkit.deploy.loihi' has no attribute {name!r}")
