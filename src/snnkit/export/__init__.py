"""Export and import: snnkit models <-> NIR graphs, and the non-spiking ONNX twin.

- :func:`to_nir` (a model -> ``nir.NIRGraph``) with an :class:`ExportReport` of what was lossy;
- :func:`from_nir` (a graph or ``.nir`` file -> :class:`NIRNetwork`, the torch reference executor);
- :func:`read_nir` / :func:`write_nir` (files, one-line errors);
- :func:`export_onnx` (the ANN twin of a model, where one is defined);
- :mod:`snnkit.export.rewrite` (graph-to-graph rewrites for third-party importers).

Importing this package does not import torch; the functions do.
"""
from __future__ import annotations

from snnkit.graph import DEFAULT_DT, graph_metadata, read_nir, write_nir
from snnkit.export.report import ExportReport

__all__ = ["DEFAULT_DT", "ExportReport", "NIRNetwork", "export_onnx", "from_nir", "graph_metadata", "read_nir",
           "to_nir", "write_nir"]

_LAZY = {
    "to_nir": "snnkit.export.exporter",
    "from_nir": "snnkit.export.executor",
    "NIRNetwork": "snnkit.export.executor",
    "export_onnx": "snnkit.export.onnx_twin",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'snnkit.export' has no attribute {name!r}")
