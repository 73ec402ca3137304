"""Reading and writing ``.nir`` files, and the snnkit metadata they carry (torch-free).

``read_nir`` turns every way a file can be unusable into one :class:`~snnkit.graph.DeployError` line that
names the file; ``write_nir`` writes atomically with ``nir.write``. ``graph_metadata`` returns the graph
metadata as plain Python values (HDF5 hands back numpy scalars and bytes).
"""
from __future__ import annotations

import io
from pathlib import Path

import nir
import numpy as np

from snnkit.atomic import write_bytes
from snnkit.graph.errors import DeployError, first_line

DEFAULT_DT = 1e-4
"""Step length (s) for graphs whose metadata has no ``dt`` (third-party files; docs/semantics.md)."""


def read_nir(path: "str | Path") -> nir.NIRGraph:
    """Read a NIR graph. Files that fail NIR's type check only (e.g. Rockpool's exports with a mis-declared
    output shape) are read again without it; anything else unreadable raises DeployError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"{path}: no such NIR file")
    problem = None
    try:
        graph = nir.read(path)
    except Exception as exc:  # nir and h5py raise many types
        problem = first_line(exc)
        try:
            graph = nir.read(path, type_check=False)
        except Exception:
            raise DeployError(f"{path}: not a readable NIR graph ({problem})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise DeployError(f"{path}: holds a single {type(graph).__name__} node, not a NIR graph")
    graph.metadata = dict(graph.metadata or {})
    if problem is not None:
        graph.metadata["_type_check_failed"] = problem
    return graph


def write_nir(graph: nir.NIRGraph, path: "str | Path") -> Path:
    """Write ``graph`` to ``path`` with ``nir.write`` (temp file + rename); returns the path."""
    path = Path(path)
    clean = nir.NIRGraph(nodes=graph.nodes, edges=graph.edges,
                         metadata={k: v for k, v in (graph.metadata or {}).items() if not k.startswith("_")},
                         type_check=False)
    buf = io.BytesIO()  # serialised in memory: h5py writing straight to a full disk can crash the process
    nir.write(buf, clean)
    write_bytes(path, buf.getvalue())
    return path


def plain(value):
    """numpy scalars/arrays and bytes from HDF5 -> Python numbers, lists and strings (recursively)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf8")
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()] if value.ndim else plain(value.item())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def graph_metadata(graph: nir.NIRGraph) -> dict:
    """The graph's metadata as plain Python values (empty for third-party files)."""
    return plain(dict(graph.metadata or {}))


def graph_dt(graph: nir.NIRGraph, dt: float | None = None) -> float:
    """The step length in seconds: ``dt`` if given, else the metadata's, else :data:`DEFAULT_DT`."""
    if dt is None:
        dt = graph_metadata(graph).get("dt", DEFAULT_DT)
    dt = float(dt)
    if not np.isfinite(dt) or dt <= 0:
        raise DeployError(f"dt must be a positive number of seconds, not {dt}")
    return dt
