"""What NIR leaves open, decided once for every target, and the checks every target applies to a graph.

NIR's nodes are continuous-time equations; a file carries neither the step length, nor the reset mode, nor a
convention for IF (which has no time constant). Libraries fill the gaps differently (docs/interop.md, measured):

| question | snnkit's reading (docs/semantics.md) | override |
|---|---|---|
| step length ``dt`` | ``metadata["dt"]``, else :data:`~snnkit.graph.io.DEFAULT_DT` (said in a note) | ``dt`` (``--dt``) |
| reset mode | ``metadata["reset"]`` (snnkit's graphs), else reset to ``v_reset`` ("zero") | ``reset`` (``--reset``) |
| IF | ``v += r I`` per step ("per-step": snnkit, Norse, snnTorch); a graph whose every IF has ``r = 1/dt`` is read as NIR's ODE ``dv/dt = r I``, ``v += dt r I`` ("ode": SpikingJelly 2.0), said in a note | ``if_convention`` (``--if-convention``) |

:func:`resolve` applies these once and returns a graph every target reads the same way (IF gains in per-step
form, ``dt`` and the reset modes in its metadata) with the notes to show the user; :func:`validate` refuses, in
one line and for every target alike, what no target can run: non-finite parameters, decays outside [0, 1].
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import nir
import numpy as np

from snnkit.graph.errors import DeployError
from snnkit.graph.io import DEFAULT_DT, graph_dt, graph_metadata
from snnkit.graph.kinds import SPIKING
from snnkit.graph.shapes import declared_shape, infer_shapes, input_name

RESETS = ("zero", "subtract")
IF_CONVENTIONS = ("auto", "per-step", "ode")


@dataclass
class Resolved:
    """A graph with the open questions answered: ``graph`` (same node names and edges), ``dt`` (s), ``resets``
    (spiking node -> mode), ``if_convention`` (the one applied) and ``notes`` (one line per choice a user may
    want to override)."""

    graph: nir.NIRGraph
    dt: float
    resets: dict[str, str]
    if_convention: str
    notes: list[str]


def decay(name: str, what: str, dt: float, tau) -> np.ndarray:
    """``1 - dt/tau`` in float64; DeployError when it leaves [0, 1] (dt larger than tau, or tau <= 0)."""
    tau = np.asarray(tau, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = 1.0 - dt / tau
    if np.any(~np.isfinite(d)) or np.any(d < 0) or np.any(d > 1):
        raise DeployError(f"node {name!r}: {what} = 1 - dt/tau is outside [0, 1] for dt = {dt:g} s and "
                          f"tau in [{tau.min():g}, {tau.max():g}] s; pass the graph's dt (--dt)")
    return d


def validate(graph: nir.NIRGraph, dt: float, *, top: bool = True) -> None:
    """Refuse in one line what no target can run: edges to nodes that do not exist, non-finite or empty
    parameters, time constants that give a decay outside [0, 1] at step ``dt``, and nodes that do not fit the
    shape they receive."""
    for edge in graph.edges:
        for end in edge:  # a subgraph's port is "subgraph.node"
            if end not in graph.nodes and str(end).split(".", 1)[0] not in graph.nodes:
                raise DeployError(f"edge {edge[0]!r} -> {edge[1]!r}: the graph has no node {end!r}")
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            validate(node, dt, top=False)
            continue
        if not isinstance(node, nir.NIRNode):
            raise DeployError(f"node {name!r} holds no NIR node ({type(node).__name__}): the exporter wrote nothing "
                              "for it")
        for f in dataclasses.fields(node):
            v = getattr(node, f.name)
            if not (isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.number)):
                continue
            if not np.all(np.isfinite(v)):
                raise DeployError(f"node {name!r} ({type(node).__name__}): its {f.name} holds NaN or infinite values")
            if v.size == 0 and f.name not in ("input_type", "output_type"):
                raise DeployError(f"node {name!r} ({type(node).__name__}): its {f.name} is empty (shape "
                                  f"{list(v.shape)})")
        if isinstance(node, (nir.LIF, nir.LI)):
            decay(name, "beta", dt, node.tau)
        elif isinstance(node, (nir.CubaLIF, nir.CubaLI)):
            decay(name, "alpha", dt, node.tau_syn)
            decay(name, "beta", dt, node.tau_mem)
    if top and _shaped(graph):
        infer_shapes(graph)  # raises where a node does not fit what it receives


def _shaped(graph: nir.NIRGraph) -> bool:
    """Whether shapes can be followed through ``graph``: one level, and an Input that declares its shape."""
    if any(isinstance(n, nir.NIRGraph) for n in graph.nodes.values()):
        return False
    try:
        node = graph.nodes[input_name(graph)]
    except DeployError:
        return False
    return (declared_shape(node, "output") or declared_shape(node, "input")) is not None


def _wrote_it(meta: dict) -> bool:
    return "snnkit_version" in meta


def node_resets(graph: nir.NIRGraph, reset: str | None = None) -> dict[str, str]:
    """Reset mode per spiking node: ``reset`` for all, else the metadata's, else "zero"."""
    if reset is not None and reset not in RESETS:
        raise DeployError(f"unknown reset mode {reset!r} ({', '.join(RESETS)})")
    meta = graph_metadata(graph).get("reset", {})
    meta = meta if isinstance(meta, dict) else {}
    out = {}
    for name, node in graph.nodes.items():
        if isinstance(node, SPIKING):
            mode = reset or meta.get(name, "zero")
            if mode not in RESETS:
                raise DeployError(f"node {name!r}: unknown reset mode {mode!r} ({', '.join(RESETS)})")
            out[name] = mode
    return out


def infer_if_convention(graph: nir.NIRGraph, dt: float, requested: str = "auto") -> tuple[str, list[str]]:
    """The IF convention to apply (``per-step`` or ``ode``) and a note when it was inferred from the graph."""
    if requested not in IF_CONVENTIONS:
        raise DeployError(f"unknown IF convention {requested!r} ({', '.join(IF_CONVENTIONS)})")
    ifs = {n: np.asarray(v.r, dtype=np.float64) for n, v in graph.nodes.items() if isinstance(v, nir.IF)}
    if requested != "auto" or not ifs or _wrote_it(graph_metadata(graph)):
        return ("per-step" if requested == "auto" else requested), []
    ode = [n for n, r in ifs.items() if dt != 1.0 and np.allclose(r * dt, 1.0, rtol=1e-6, atol=0)]
    if ode and len(ode) == len(ifs):
        return "ode", [f"IF nodes {', '.join(ifs)} have r = 1/dt (dt = {dt:g} s): read as NIR's ODE, v += dt r I per "
                       "step (SpikingJelly's convention); --if-convention per-step reads r as a per-step gain"]
    if ode:
        return "per-step", [f"IF nodes {', '.join(ode)} have r = 1/dt (dt = {dt:g} s) but other IF nodes do not: all "
                            "read per-step, v += r I; --if-convention ode reads every IF as NIR's ODE"]
    return "per-step", []


def resolve(graph: nir.NIRGraph, *, dt: float | None = None, reset: str | None = None,
            if_convention: str = "auto") -> Resolved:
    """Answer the open questions for ``graph`` (flat) and validate it (see the module docstring)."""
    meta = graph_metadata(graph)
    step = graph_dt(graph, dt)
    notes = []
    if dt is None and "dt" not in meta:
        notes.append(f"the graph has no dt: {DEFAULT_DT:g} s assumed (--dt sets it)")
    validate(graph, step)
    resets = node_resets(graph, reset)
    convention, more = infer_if_convention(graph, step, if_convention)
    notes += more
    nodes = dict(graph.nodes)
    if convention == "ode":
        for name, node in graph.nodes.items():
            if isinstance(node, nir.IF):
                nodes[name] = nir.IF(r=np.asarray(node.r, dtype=np.float64) * step, v_threshold=node.v_threshold,
                                     v_reset=node.v_reset)
    metadata = {**dict(graph.metadata or {}), "dt": step, "reset": resets}
    resolved = nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=metadata, type_check=False)
    return Resolved(resolved, step, resets, convention, notes)
