"""Structure of a NIR graph as snnkit executes it: flattening, inputs/outputs, order and recurrent edges.

Everything here is pure NIR/numpy (no torch), so targets outside the torch world can use it too.

- Nested subgraphs are flattened: a node ``inner`` of subgraph ``outer`` becomes ``outer.inner``; an edge into
  (out of) the subgraph goes to its ``Input`` (from its ``Output``) node, and those inner Input/Output nodes are
  then contracted away.
- Node order is ``snnkit.deploy.base.topological_order`` (a depth-first order from the graph's Input node).
  An edge whose destination does not come after its source in that order closes a cycle: it is a *recurrent*
  edge and, in the reference semantics (docs/semantics.md), reads its source's output of the previous step.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir

from snnkit.deploy.base import DeployError, topological_order


def flatten_graph(graph: nir.NIRGraph) -> nir.NIRGraph:
    """A graph without nested subgraphs (dotted names); returns ``graph`` itself when it has none."""
    if not any(isinstance(n, nir.NIRGraph) for n in graph.nodes.values()):
        return graph
    nodes, edges = _flat_parts(graph, prefix="")
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(graph.metadata or {}), type_check=False)


def _flat_parts(graph: nir.NIRGraph, prefix: str):
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    entry: dict[str, str] = {}  # subgraph name -> its (flattened) Input node
    exit_: dict[str, str] = {}  # subgraph name -> its (flattened) Output node
    for name, node in graph.nodes.items():
        full = prefix + name
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges = _flat_parts(node, full + ".")
            ins = [n for n, v in node.nodes.items() if isinstance(v, nir.Input)]
            outs = [n for n, v in node.nodes.items() if isinstance(v, nir.Output)]
            if len(ins) != 1 or len(outs) != 1:
                raise DeployError(f"subgraph {full!r} must have exactly one Input and one Output node "
                                  f"(has {len(ins)} and {len(outs)})")
            entry[name], exit_[name] = f"{full}.{ins[0]}", f"{full}.{outs[0]}"
            nodes.update(sub_nodes)
            edges.extend(sub_edges)
        else:
            nodes[full] = node
    for src, dst in graph.edges:
        s = exit_.get(src, prefix + src)
        d = entry.get(dst, prefix + dst)
        edges.append((s, d))
    # Contract the Input/Output nodes of the inlined subgraphs (this level's own are contracted by its parent).
    for n in sorted(set(entry.values()) | set(exit_.values())):
        ins = [s for s, d in edges if d == n]
        outs = [d for s, d in edges if s == n]
        edges = [(s, d) for s, d in edges if n not in (s, d)] + [(s, d) for s in ins for d in outs]
        nodes.pop(n)
    return nodes, edges


@dataclass(frozen=True)
class GraphPlan:
    """How to execute a flat graph.

    order: node names, every node after its (non-recurrent) sources.
    inputs: node name -> list of ``(source, recurrent)`` in edge order.
    input_name / output_name: the graph's single Input and Output node.
    recurrent: the edges that close a cycle.
    """

    order: list[str]
    inputs: dict[str, list[tuple[str, bool]]]
    input_name: str
    output_name: str
    recurrent: frozenset[tuple[str, str]]

    @property
    def has_cycles(self) -> bool:
        return bool(self.recurrent)


def plan(graph: nir.NIRGraph) -> GraphPlan:
    """The execution plan of a flat graph (see :func:`flatten_graph`); DeployError if it cannot run."""
    ins = [n for n, v in graph.nodes.items() if isinstance(v, nir.Input)]
    outs = [n for n, v in graph.nodes.items() if isinstance(v, nir.Output)]
    if len(ins) != 1:
        raise DeployError(f"the graph must have exactly one Input node, it has {len(ins)}")
    if len(outs) != 1:
        raise DeployError(f"the graph must have exactly one Output node, it has {len(outs)}")
    for src, dst in graph.edges:
        for end in (src, dst):
            if end not in graph.nodes:
                raise DeployError(f"edge ({src!r}, {dst!r}) names a node {end!r} that is not in the graph")
    order = topological_order(graph)
    pos = {n: i for i, n in enumerate(order)}
    recurrent = frozenset((s, d) for s, d in graph.edges if pos[d] <= pos[s])
    inputs: dict[str, list[tuple[str, bool]]] = {n: [] for n in order}
    for s, d in graph.edges:
        inputs[d].append((s, (s, d) in recurrent))
    reachable = _reachable(graph, ins[0])
    if outs[0] not in reachable:
        raise DeployError(f"the Output node {outs[0]!r} is not reachable from the Input node {ins[0]!r}")
    order = [n for n in order if n in reachable]
    for n in order:
        if n != ins[0] and not any(not rec for _, rec in inputs[n]):
            raise DeployError(f"node {n!r} has only recurrent inputs; it needs a feed-forward source")
    return GraphPlan(order, {n: inputs[n] for n in order}, ins[0], outs[0], recurrent)


def _reachable(graph: nir.NIRGraph, start: str) -> set[str]:
    succ: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for s, d in graph.edges:
        succ[s].append(d)
    seen, stack = {start}, [start]
    while stack:
        for m in succ[stack.pop()]:
            if m not in seen:
                seen.add(m)
                stack.append(m)
    return seen


def input_shape(graph: nir.NIRGraph) -> tuple[int, ...]:
    """The shape of one step of the graph's input (no batch or time axis)."""
    node = graph.nodes[plan(graph).input_name]
    shape = node.input_type.get("input")
    if shape is None:
        raise DeployError("the graph's Input node has no shape")
    return tuple(int(s) for s in shape)
