"""Shapes of a NIR graph's nodes, without a batch or time axis (torch-free; the one shape rule).

NIR's own type inference leaves some nodes untyped (pooling, for one), so shapes are propagated here from the
Input node: a connection node's output shape is that of the node applied to zeros (:mod:`snnkit.graph.ops`);
a neuron's is its per-neuron parameters' shape, or its input's when those are scalars. Edges that close a cycle
are not needed.
"""
from __future__ import annotations

import nir
import numpy as np

from snnkit.graph.errors import DeployError, first_line
from snnkit.graph.kinds import CONNECTIONS, NEURONS, PORTS, WEIGHTED
from snnkit.graph.ops import apply_node
from snnkit.graph.topology import predecessors, successors

Shape = tuple[int, ...]
_NEURON_PARAMS = ("v_threshold", "tau", "tau_mem", "r")


def declared_shape(node: nir.NIRNode, key: str) -> Shape | None:
    """The shape NIR declares for a node's ``"input"``/``"output"`` port (None when absent or partial)."""
    types = getattr(node, key + "_type", None) or {}
    v = types.get(key)
    if v is None:
        return None
    a = np.atleast_1d(np.asarray(v, dtype=object))
    if a.size == 0 or any(i is None for i in a.ravel()):
        return None
    return tuple(int(i) for i in a)


def neuron_shape(node: nir.NIRNode, input_shape: Shape | None = None) -> Shape:
    """A neuron node's shape: its first non-scalar per-neuron parameter's, else ``input_shape`` (else ``()``)."""
    for attr in _NEURON_PARAMS:
        p = getattr(node, attr, None)
        if p is not None and np.ndim(p) > 0 and np.size(p) > 1:
            return tuple(np.shape(p))
    return tuple(input_shape) if input_shape is not None else ()


def neuron_count(node: nir.NIRNode, input_shape: Shape | None = None) -> int:
    """Number of neurons in a neuron node."""
    if not isinstance(node, NEURONS):
        raise ValueError(f"not a neuron node: {type(node).__name__}")
    return int(np.prod(neuron_shape(node, input_shape)))


def input_name(graph: nir.NIRGraph) -> str:
    """The graph's single Input node (DeployError otherwise)."""
    names = [n for n, v in graph.nodes.items() if isinstance(v, nir.Input)]
    if len(names) != 1:
        raise DeployError(f"the graph must have exactly one Input node, it has {len(names)}")
    return names[0]


def input_shape(graph: nir.NIRGraph) -> Shape:
    """The shape of one step of the graph's input."""
    node = graph.nodes[input_name(graph)]
    shape = declared_shape(node, "input") or declared_shape(node, "output")
    if shape is None:
        raise DeployError("the graph's Input node has no shape")
    return shape


def output_size(graph: nir.NIRGraph) -> int:
    """Values per step at the graph's single Output node (a classifier's number of classes)."""
    names = [n for n, v in graph.nodes.items() if isinstance(v, nir.Output)]
    if len(names) != 1:
        raise DeployError(f"the graph must have exactly one Output node, it has {len(names)}")
    return int(np.prod(infer_shapes(graph)[names[0]][1]))


def infer_shapes(graph: nir.NIRGraph, start: str | None = None) -> dict[str, tuple[Shape, Shape]]:
    """``name -> (input shape, output shape)`` for every node reachable from ``start`` (default: the Input)."""
    start = input_name(graph) if start is None else start
    nodes = graph.nodes
    succ, preds = successors(graph), predecessors(graph)
    first = declared_shape(nodes[start], "output") or declared_shape(nodes[start], "input")
    if first is None:
        raise DeployError(f"input node {start!r} has no shape")
    shapes: dict[str, tuple[Shape, Shape]] = {start: (first, first)}
    frontier = [start]
    while frontier:
        nxt = []
        for n in frontier:
            for d in succ[n]:
                if d in shapes:
                    continue
                known = [shapes[p][1] for p in preds[d] if p in shapes]
                if len(known) < len([p for p in preds[d] if _needed_first(p, d, shapes, preds)]):
                    continue
                shp_in = known[0]
                node = nodes[d]
                if isinstance(node, CONNECTIONS):
                    try:
                        shp_out = tuple(apply_node(node, np.zeros((1, *shp_in))).shape[1:])
                    except (ValueError, IndexError, TypeError, RuntimeError) as exc:
                        raise DeployError(f"node {d!r} ({type(node).__name__}) does not fit its input of shape "
                                          f"{list(shp_in)} ({first_line(exc)})") from None
                elif isinstance(node, PORTS):
                    shp_out = shp_in
                else:
                    shp_out = neuron_shape(node, shp_in)
                    if not _fits(shp_out, shp_in):
                        raise DeployError(f"node {d!r} ({type(node).__name__}) has parameters of shape "
                                          f"{list(shp_out)} but receives an input of shape {list(shp_in)}")
                shapes[d] = (tuple(shp_in), tuple(shp_out))
                nxt.append(d)
        frontier = nxt
    return shapes


def _fits(neurons: Shape, received: Shape) -> bool:
    """Whether a neuron node of per-neuron shape ``neurons`` can take an input of shape ``received``: as many
    values, or shapes that broadcast to the input's."""
    if int(np.prod(neurons)) == int(np.prod(received)):
        return True
    try:
        return np.broadcast_shapes(neurons, received) == tuple(received)
    except ValueError:
        return False


def _needed_first(p: str, d: str, shapes: dict, preds: dict[str, list[str]]) -> bool:
    """Whether predecessor ``p`` of ``d`` must be shaped first (False for an edge that closes a cycle)."""
    if p in shapes:
        return True
    seen, stack = set(), [p]
    while stack:  # p is on a cycle through d when d reaches it backwards
        q = stack.pop()
        if q == d:
            return False
        if q in seen:
            continue
        seen.add(q)
        stack.extend(preds[q])
    return True


def weighted_input_shapes(graph: nir.NIRGraph) -> dict[str, Shape]:
    """The input shape of every weighted node reachable from the Input (what its fan-out is counted over)."""
    shapes = infer_shapes(graph)
    return {n: shapes[n][0] for n, node in graph.nodes.items() if isinstance(node, WEIGHTED) and n in shapes}
