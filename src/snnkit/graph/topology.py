"""Structure of a NIR graph: neighbours, order, flattening, and how snnkit executes it (torch-free).

- :func:`predecessors` / :func:`successors`: each node's sources / destinations, in edge order.
- :func:`topological_order`: a depth-first order from the graph's Input node; every node follows its sources,
  except along an edge that closes a cycle.
- :func:`flatten_graph`: nested subgraphs inlined; a node ``inner`` of subgraph ``outer`` becomes
  ``outer.inner``; an edge into (out of) the subgraph goes to its ``Input`` (from its ``Output``) node, and those
  inner Input/Output nodes are then contracted away.
- :func:`plan`: the execution plan of a flat graph. An edge whose destination does not come after its source
  in the topological order closes a cycle: it is a *recurrent* edge and, in the reference semantics
  (docs/semantics.md), reads its source's output of the previous step.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir

from snnkit.graph.errors import DeployError


def predecessors(graph: nir.NIRGraph) -> dict[str, list[str]]:
    """Node name -> the sources of its incoming edges, in edge order (every node has an entry)."""
    preds: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for src, dst in graph.edges:
        preds.setdefault(dst, []).append(src)
    return preds


def successors(graph: nir.NIRGraph) -> dict[str, list[str]]:
    """Node name -> the destinations of its outgoing edges, in edge order (every node has an entry)."""
    succ: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for src, dst in graph.edges:
        succ.setdefault(src, []).append(dst)
    return succ


def topological_order(graph: nir.NIRGraph) -> list[str]:
    """Node names in an order where every node follows its sources; edges closing a cycle are ignored."""
    succ = successors(graph)
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str) -> None:
        state[n] = 1
        for m in succ[n]:
            if state.get(m, 0) == 0:
                visit(m)
        state[n] = 2
        order.append(n)

    roots = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)] or list(graph.nodes)
    for r in roots + sorted(graph.nodes):
        if state.get(r, 0) == 0:
            visit(r)
    return order[::-1]


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
    from_input = reachable(graph, ins[0])
    if outs[0] not in from_input:
        raise DeployError(f"the Output node {outs[0]!r} is not reachable from the Input node {ins[0]!r}")
    order = [n for n in order if n in from_input]
    for n in order:
        if n != ins[0] and not any(not rec for _, rec in inputs[n]):
            raise DeployError(f"node {n!r} has only recurrent inputs; it needs a feed-forward source")
    return GraphPlan(order, {n: inputs[n] for n in order}, ins[0], outs[0], recurrent)


def reachable(graph: nir.NIRGraph, start: str) -> set[str]:
    """The nodes reachable from ``start`` (itself included)."""
    succ = successors(graph)
    seen, stack = {start}, [start]
    while stack:
        for m in succ[stack.pop()]:
            if m not in seen:
                seen.add(m)
                stack.append(m)
    return seen
